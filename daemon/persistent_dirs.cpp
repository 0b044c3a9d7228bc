#include "daemon/persistent_dirs.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "shm/posix_error.hpp"

namespace shmstream::daemon {

namespace {

constexpr const char* kListFile = "directories";

std::string hex_encode(const std::string& text) {
  std::string out;
  for (unsigned char c : text) out += fmt::format("{:02x}", c);
  return out;
}

bool hex_decode(const std::string& hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    char* end = nullptr;
    std::string byte = hex.substr(i, 2);
    long value = std::strtol(byte.c_str(), &end, 16);
    if (end != byte.c_str() + 2 || value == 0) return false;  // no NUL inside a path
    out->push_back(static_cast<char>(value));
  }
  return true;
}

}  // namespace

std::string canonical_own_directory(const std::string& path) {
  if (path.empty()) return path;
  std::error_code ec;
  auto absolute = std::filesystem::absolute(path, ec).lexically_normal();
  std::string out = std::filesystem::weakly_canonical(absolute, ec).string();
  if (ec) out = absolute.string();
  if (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

PersistentDirectories::PersistentDirectories(const std::string& own)
    : own_(canonical_own_directory(own)) {}

Result<kj::AutoCloseFd> open_directory_no_follow(const std::string& path, bool create) {
  if (path.empty() || path[0] != '/') {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("directory \"{}\": not an absolute path", path));
  }
  kj::AutoCloseFd at(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (at.get() < 0) return from_errno(errno, "opening /");
  std::string walked;
  std::stringstream parts(path);
  std::string part;
  std::vector<std::string> components;
  while (std::getline(parts, part, '/')) {
    if (part.empty()) continue;
    if (part == "." || part == "..") {
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("directory {}: a \"{}\" component", path, part));
    }
    components.push_back(part);
  }
  for (size_t i = 0; i < components.size(); ++i) {
    const std::string& name = components[i];
    walked += "/" + name;
    const bool last = i + 1 == components.size();
    const int flags = (last ? O_RDONLY : O_PATH) | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
    int fd = openat(at.get(), name.c_str(), flags);
    if (fd < 0 && errno == ENOENT && create) {
      if (mkdirat(at.get(), name.c_str(), 0700) != 0 && errno != EEXIST) {
        return from_errno(errno, fmt::format("creating directory {}", walked));
      }
      fd = openat(at.get(), name.c_str(), flags);
    }
    if (fd < 0) {
      int err = errno;
      if (err == ELOOP || err == ENOTDIR) {
        return Status(ErrorCode::kPermissionDenied,
                      fmt::format("directory {}: {} is a symlink or not a directory (refused, "
                                  "never followed)",
                                  path, walked));
      }
      return from_errno(err, fmt::format("directory {}", walked));
    }
    at = kj::AutoCloseFd(fd);
  }
  if (components.empty()) {
    at = kj::AutoCloseFd(::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (at.get() < 0) return from_errno(errno, "opening /");
  }
  return kj::mv(at);
}

std::vector<PersistentDirectories::Record> PersistentDirectories::recorded() const {
  std::vector<Record> out;
  if (!own_fd_) return out;
  int fd = openat(own_fd_->get(), kListFile, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return out;
  FILE* list = fdopen(fd, "r");
  if (list == nullptr) {
    close(fd);
    return out;
  }
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    spdlog::warn("{}/{}: not a regular file of this daemon's user: ignored", own_, kListFile);
    std::fclose(list);
    return out;
  }
  char line[8192];
  int number = 0;
  while (std::fgets(line, sizeof(line), list) != nullptr) {
    ++number;
    std::istringstream fields(line);
    std::string tag;
    std::string hex;
    unsigned long long dev = 0;
    unsigned long long ino = 0;
    unsigned long uid = 0;
    Record entry;
    if (!(fields >> tag >> dev >> ino >> uid >> hex) || tag != "dir" ||
        !hex_decode(hex, &entry.path)) {
      // Also a line of the older format (a bare path): its directory was never identified, so
      // it is not trusted; its streams are adopted again once a client names it anew.
      spdlog::warn("{}/{} line {}: not a directory record: ignored", own_, kListFile, number);
      continue;
    }
    entry.dev = static_cast<dev_t>(dev);
    entry.ino = static_cast<ino_t>(ino);
    entry.uid = static_cast<uid_t>(uid);
    out.push_back(std::move(entry));
  }
  std::fclose(list);
  return out;
}

Status PersistentDirectories::record(const Record& entry) {
  if (auto own = open_own(); !own.ok()) return own.status();
  for (const auto& known : recorded()) {
    if (known.dev == entry.dev && known.ino == entry.ino && known.uid == entry.uid &&
        known.path == entry.path) {
      return Status();
    }
  }
  std::string shown = own_ + "/" + kListFile;
  kj::AutoCloseFd fd(openat(own_fd_->get(), kListFile,
                            O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                            0600));
  if (fd.get() < 0) return from_errno(errno, "recording " + entry.path + " in " + shown);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    return Status(ErrorCode::kPermissionDenied,
                  shown + ": not a regular file of this daemon's user");
  }
  std::string line =
      fmt::format("dir {} {} {} {}\n", static_cast<unsigned long long>(entry.dev),
                  static_cast<unsigned long long>(entry.ino), entry.uid, hex_encode(entry.path));
  if (write(fd.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size()) ||
      fsync(fd.get()) != 0) {
    return from_errno(errno, "recording " + entry.path + " in " + shown);
  }
  return Status();
}

PersistentDirectories::Opened PersistentDirectories::share(std::string path, kj::AutoCloseFd fd,
                                                           dev_t dev, ino_t ino) {
  std::erase_if(open_, [](const auto& entry) { return entry.second.expired(); });
  if (auto it = open_.find({dev, ino}); it != open_.end()) {
    return Opened{std::move(path), it->second.lock()};
  }
  auto shared = std::make_shared<kj::AutoCloseFd>(kj::mv(fd));
  open_[{dev, ino}] = shared;
  return Opened{std::move(path), shared};
}

Result<PersistentDirectories::Opened> PersistentDirectories::open_own() {
  if (own_.empty()) {
    return Status(ErrorCode::kInvalidArgument,
                  "this daemon has no persistent directory (shmstreamd --persist-dir)");
  }
  if (own_fd_) return Opened{own_, own_fd_};
  // The daemon's configured directory: made if missing, then opened without following links.
  auto fd = open_directory_no_follow(own_, /*create=*/true);
  if (!fd.ok()) return fd.status();
  struct stat st {};
  if (fstat(fd->get(), &st) != 0) return from_errno(errno, "directory " + own_);
  if (st.st_uid != geteuid()) {
    return Status(ErrorCode::kPermissionDenied,
                  fmt::format("persistent directory {}: owned by uid {}, not this daemon's "
                              "user (uid {})",
                              own_, st.st_uid, geteuid()));
  }
  Opened opened = share(own_, kj::mv(fd).value(), st.st_dev, st.st_ino);
  own_fd_ = opened.fd;
  return opened;
}

Result<PersistentDirectories::Opened> PersistentDirectories::open_named(const std::string& path,
                                                                        uid_t uid, bool must_own) {
  if (path.empty() || path[0] != '/') {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("directory \"{}\": not an absolute path", path));
  }
  // Resolved once, here: the canonical path is what is walked (and recorded) from now on.
  char resolved[PATH_MAX];
  if (realpath(path.c_str(), resolved) == nullptr) {
    return from_errno(errno, fmt::format("directory {}", path));
  }
  std::string canonical = resolved;
  auto fd = open_directory_no_follow(canonical);
  if (!fd.ok()) {
    return fd.status().with_context(
        fmt::format("directory {} (it changed while being opened?)", path));
  }
  struct stat st {};
  if (fstat(fd->get(), &st) != 0) return from_errno(errno, "directory " + canonical);
  // Checked on the descriptor that the daemon will create files through: no swap can change
  // which directory this is.
  if (must_own && st.st_uid != uid) {
    return Status(ErrorCode::kPermissionDenied,
                  fmt::format("directory {} is not owned by uid {}", path, uid));
  }
  if (canonical == own_) return open_own();
  Opened opened = share(canonical, kj::mv(fd).value(), st.st_dev, st.st_ino);
  if (Status s = record(Record{st.st_dev, st.st_ino, st.st_uid, canonical}); !s.ok()) return s;
  return opened;
}

std::vector<PersistentDirectories::Opened> PersistentDirectories::to_adopt() {
  std::vector<Opened> out;
  if (own_.empty()) return out;
  struct stat st {};
  if (::lstat(own_.c_str(), &st) != 0) return out;  // created when first needed
  auto own = open_own();
  if (!own.ok()) {
    spdlog::warn("persistent directory {}: {}", own_, own.status().message());
    return out;
  }
  out.push_back(*own);
  struct stat own_st {};
  fstat(own_fd_->get(), &own_st);
  std::vector<std::pair<dev_t, ino_t>> seen{{own_st.st_dev, own_st.st_ino}};
  for (const Record& entry : recorded()) {
    auto fd = open_directory_no_follow(entry.path);
    if (!fd.ok()) {
      spdlog::warn("recorded directory {}: {}: its streams are not adopted", entry.path,
                   fd.status().message());
      continue;
    }
    struct stat now {};
    if (fstat(fd->get(), &now) != 0 || now.st_dev != entry.dev || now.st_ino != entry.ino ||
        now.st_uid != entry.uid) {
      spdlog::warn(
          "recorded directory {}: not the directory recorded (device {}, inode {}, "
          "owner {}; now {}, {}, {}): its streams are not adopted",
          entry.path, static_cast<unsigned long long>(entry.dev),
          static_cast<unsigned long long>(entry.ino), entry.uid,
          static_cast<unsigned long long>(now.st_dev), static_cast<unsigned long long>(now.st_ino),
          now.st_uid);
      continue;
    }
    if (std::find(seen.begin(), seen.end(), std::make_pair(now.st_dev, now.st_ino)) != seen.end()) {
      continue;  // another record (or the daemon's own) names the same directory
    }
    seen.emplace_back(now.st_dev, now.st_ino);
    out.push_back(share(entry.path, kj::mv(fd).value(), now.st_dev, now.st_ino));
  }
  return out;
}

}  // namespace shmstream::daemon
