#include "shmstream/leftovers.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <kj/io.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>

#include "shm/layout.hpp"
#include "shm/naming.hpp"
#include "shm/posix_error.hpp"

namespace shmstream {

namespace {

// A daemon locks a new segment before it writes the header; a file without a whole header
// younger than this is one being made, not a leftover.
constexpr std::chrono::seconds kBeingMade{60};

bool is_hex(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

// "shmstream.<16 hex>.<16 hex>": the length of the segment name `file` starts with, else 0.
size_t segment_name_length(const std::string& file) {
  constexpr std::string_view kPrefix = "shmstream.";
  constexpr size_t kLength = kPrefix.size() + 16 + 1 + 16;
  if (file.size() < kLength || file.compare(0, kPrefix.size(), kPrefix) != 0) return 0;
  std::string_view instance(file.data() + kPrefix.size(), 16);
  std::string_view id(file.data() + kPrefix.size() + 17, 16);
  if (!is_hex(instance) || file[kPrefix.size() + 16] != '.' || !is_hex(id)) return 0;
  if (file.size() > kLength && file[kLength] != '.') return 0;
  return kLength;
}

uint64_t allocated(int dir_fd, const std::string& file) {
  struct stat st {};
  if (fstatat(dir_fd, file.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// Printable: a name from a file is hostile input, and goes to a terminal.
std::string printable(const char* text, size_t max) {
  std::string out;
  for (size_t i = 0; i < max && text[i] != '\0'; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    out +=
        c >= 0x20 && c != 0x7f ? std::string(1, static_cast<char>(c)) : fmt::format("\\x{:02x}", c);
  }
  return out;
}

// Fills in what a segment file is: kind, reason, stream, daemon. `fd` is open and locked
// exclusive by us (no daemon holds it).
bool describe_segment(int fd, const struct stat& st, Leftover& out) {
  alignas(shm::SegmentHeader) std::byte raw[sizeof(shm::SegmentHeader)];
  ssize_t got = pread(fd, raw, sizeof(raw), 0);
  const auto& h = *reinterpret_cast<const shm::SegmentHeader*>(raw);
  if (got != static_cast<ssize_t>(sizeof(raw)) || h.magic != shm::kMagic) {
    auto age = std::chrono::seconds(std::time(nullptr) - st.st_mtime);
    if (age < kBeingMade) return false;  // a daemon is making it: its lock comes next
    out.reason = "no whole segment header";
    return true;
  }
  if (h.layout_version != shm::kLayoutVersion) {
    out.kind = Leftover::Kind::kOlderLayout;
    out.reason = fmt::format(
        "layout version {}: made by another shmstreamd version, which takes no lock (it "
        "may still serve it)",
        h.layout_version);
    return true;
  }
  out.stream = printable(h.name, std::min<size_t>(h.name_length, shm::kMaxNameLength));
  out.daemon_socket = printable(h.daemon_socket, sizeof(h.daemon_socket));
  out.reason = out.daemon_socket.empty()
                   ? "no live daemon holds it"
                   : fmt::format("its daemon ({}) no longer holds it", out.daemon_socket);
  return true;
}

}  // namespace

const char* to_string(Leftover::Kind kind) {
  switch (kind) {
    case Leftover::Kind::kUnserved:
      return "unserved";
    case Leftover::Kind::kOlderLayout:
      return "older-layout";
    case Leftover::Kind::kOrphan:
      return "orphan";
    case Leftover::Kind::kQuarantined:
      return "quarantined";
    case Leftover::Kind::kNotRegular:
      return "not-regular";
  }
  return "unknown";
}

Result<LeftoverScan> find_leftovers(const std::string& directory) {
  kj::AutoCloseFd dir_fd(::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) return from_errno(errno, "directory " + directory);
  int scan_fd = fcntl(dir_fd.get(), F_DUPFD_CLOEXEC, 0);
  DIR* dir = scan_fd >= 0 ? fdopendir(scan_fd) : nullptr;
  if (dir == nullptr) {
    if (scan_fd >= 0) ::close(scan_fd);
    return from_errno(errno, "listing " + directory);
  }
  std::map<std::string, std::vector<std::string>> side_files;  // by segment name
  std::vector<std::string> segments;
  std::vector<std::string> quarantined;
  while (dirent* entry = readdir(dir)) {
    std::string file = entry->d_name;
    if (file.rfind(shm::kQuarantinePrefix, 0) == 0) {
      quarantined.push_back(file);
      continue;
    }
    size_t length = segment_name_length(file);
    if (length == 0) continue;
    if (length == file.size()) {
      segments.push_back(file);
    } else {
      side_files[file.substr(0, length)].push_back(file);
    }
  }
  closedir(dir);
  std::sort(segments.begin(), segments.end());
  std::sort(quarantined.begin(), quarantined.end());

  LeftoverScan scan;
  for (const std::string& file : segments) {
    Leftover out;
    out.directory = directory;
    out.file = file;
    out.side_files = side_files[file];
    side_files.erase(file);
    kj::AutoCloseFd fd(
        openat(dir_fd.get(), file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    struct stat st {};
    if (fd.get() < 0 && errno != ELOOP) {
      scan.unchecked.push_back(fmt::format("{}/{}: {}", directory, file, std::strerror(errno)));
      continue;
    }
    if (fd.get() < 0 || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      out.kind = Leftover::Kind::kNotRegular;
      out.reason = "a symlink, fifo or device under a segment's name";
      fstatat(dir_fd.get(), file.c_str(), &st, AT_SYMLINK_NOFOLLOW);
    } else if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      ++scan.served;  // a live daemon holds it
      continue;
    } else if (!describe_segment(fd.get(), st, out)) {
      continue;
    }
    out.inode = st.st_ino;
    out.bytes = allocated(dir_fd.get(), file);
    for (const auto& side : out.side_files) out.bytes += allocated(dir_fd.get(), side);
    scan.leftovers.push_back(std::move(out));
  }
  for (auto& [segment, files] : side_files) {
    Leftover out;
    out.kind = Leftover::Kind::kOrphan;
    out.directory = directory;
    out.file = segment;
    out.side_files = files;
    out.reason = "side files of a segment that is gone";
    for (const auto& side : files) out.bytes += allocated(dir_fd.get(), side);
    scan.leftovers.push_back(std::move(out));
  }
  for (const std::string& file : quarantined) {
    Leftover out;
    out.kind = Leftover::Kind::kQuarantined;
    out.directory = directory;
    out.file = file;
    out.reason = "moved aside by a daemon instead of adopted (its reason ends the name)";
    struct stat st {};
    if (fstatat(dir_fd.get(), file.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) out.inode = st.st_ino;
    out.bytes = allocated(dir_fd.get(), file);
    scan.leftovers.push_back(std::move(out));
  }
  return scan;
}

Status remove_leftover(const Leftover& leftover) {
  kj::AutoCloseFd dir_fd(::open(leftover.directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd.get() < 0) return from_errno(errno, "directory " + leftover.directory);
  const std::string shown = leftover.directory + "/" + leftover.file;
  auto unlink_one = [&](const std::string& file) -> Status {
    if (unlinkat(dir_fd.get(), file.c_str(), 0) != 0 && errno != ENOENT) {
      int err = errno;
      return Status(
          err == EPERM || err == EACCES ? ErrorCode::kPermissionDenied : ErrorCode::kIo,
          fmt::format("removing {}/{}: {}{}", leftover.directory, file, std::strerror(err),
                      err == EPERM || err == EACCES
                          ? " (another user's: run as root or as its owner)"
                          : ""));
    }
    return Status();
  };
  Status first;
  auto remove_side_files = [&] {
    for (const auto& side : leftover.side_files) {
      if (Status s = unlink_one(side); !s.ok() && first.ok()) first = s;
    }
  };
  switch (leftover.kind) {
    case Leftover::Kind::kOrphan: {
      struct stat st {};
      if (fstatat(dir_fd.get(), leftover.file.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        return Status(ErrorCode::kBusy, shown + ": its segment is back: its side files stay");
      }
      remove_side_files();
      return first;
    }
    case Leftover::Kind::kQuarantined:
    case Leftover::Kind::kNotRegular: {
      struct stat st {};
      if (fstatat(dir_fd.get(), leftover.file.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          st.st_ino != leftover.inode) {
        return Status(ErrorCode::kBusy, shown + ": another file has that name now: kept");
      }
      if (Status s = unlink_one(leftover.file); !s.ok()) return s;
      remove_side_files();
      return first;
    }
    case Leftover::Kind::kUnserved:
    case Leftover::Kind::kOlderLayout:
      break;
  }
  // Held exclusive while it goes: a daemon starting now does not adopt it half-removed.
  kj::AutoCloseFd fd(
      openat(dir_fd.get(), leftover.file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  struct stat st {};
  if (fd.get() < 0) return from_errno(errno, shown);
  if (fstat(fd.get(), &st) != 0 || st.st_ino != leftover.inode) {
    return Status(ErrorCode::kBusy, shown + ": another file has that name now: kept");
  }
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return Status(ErrorCode::kBusy, shown + ": a daemon holds it now: kept");
  }
  remove_side_files();
  if (Status s = unlink_one(leftover.file); !s.ok()) return s;
  return first;
}

}  // namespace shmstream
