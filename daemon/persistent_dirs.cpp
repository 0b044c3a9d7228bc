#include "daemon/persistent_dirs.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>

#include "shm/posix_error.hpp"

namespace shmstream::daemon {

std::vector<std::string> PersistentDirectories::to_adopt() const {
  if (own_.empty()) return {};
  struct stat st {};
  if (::stat(own_.c_str(), &st) != 0) return {};  // created when first needed
  std::vector<std::string> dirs = recorded();
  dirs.insert(dirs.begin(), own_);
  return dirs;
}

std::vector<std::string> PersistentDirectories::recorded() const {
  std::vector<std::string> dirs;
  if (FILE* list = std::fopen((own_ + "/directories").c_str(), "re")) {
    char line[4096];
    while (std::fgets(line, sizeof(line), list) != nullptr) {
      std::string path(line);
      while (!path.empty() && (path.back() == '\n' || path.back() == '\r')) path.pop_back();
      if (!path.empty() && path != own_ &&
          std::find(dirs.begin(), dirs.end(), path) == dirs.end()) {
        dirs.push_back(path);
      }
    }
    std::fclose(list);
  }
  return dirs;
}

Status PersistentDirectories::record(const std::string& path) {
  if (own_.empty()) {
    return Status(ErrorCode::kInvalidArgument,
                  "this daemon has no persistent directory (shmstreamd --persist-dir) in which to "
                  "record another one");
  }
  if (auto own = open(own_, /*record=*/false); !own.ok()) return own.status();
  auto known = recorded();
  if (std::find(known.begin(), known.end(), path) != known.end()) return Status();
  std::string list = own_ + "/directories";
  FILE* out = std::fopen(list.c_str(), "ae");
  if (out == nullptr) return from_errno(errno, "recording " + path + " in " + list);
  std::fprintf(out, "%s\n", path.c_str());
  bool ok = std::fflush(out) == 0 && fsync(fileno(out)) == 0;
  int err = errno;
  std::fclose(out);
  if (!ok) return from_errno(err, "recording " + path + " in " + list);
  return Status();
}

Result<std::shared_ptr<kj::AutoCloseFd>> PersistentDirectories::open(const std::string& path,
                                                                     bool record) {
  std::erase_if(open_, [](const auto& entry) { return entry.second.expired(); });
  if (auto it = open_.find(path); it != open_.end()) return it->second.lock();
  if (path.empty() || path[0] != '/') {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("directory \"{}\": not an absolute path", path));
  }
  if (path == own_) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) {
      return Status(ErrorCode::kIo, fmt::format("creating directory {}: {}", path, ec.message()));
    }
  }
  kj::AutoCloseFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return from_errno(errno, fmt::format("directory {}", path));
  if (record && path != own_) {
    if (Status s = this->record(path); !s.ok()) return s;
  }
  auto shared = std::make_shared<kj::AutoCloseFd>(kj::mv(fd));
  if (path == own_) own_fd_ = shared;
  open_[path] = shared;
  return shared;
}

}  // namespace shmstream::daemon
