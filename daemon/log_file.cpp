#include "daemon/log_file.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace shmstream::daemon {

Result<kj::AutoCloseFd> open_own_file(int dir_fd, const std::string& name, int flags,
                                      const std::string& shown) {
  int fd =
      openat(dir_fd, name.c_str(), flags | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
  if (fd < 0 && (errno == ENXIO || errno == ENODEV)) {  // a fifo with no reader, a device
    return Status(ErrorCode::kPermissionDenied,
                  "refusing " + shown + ": not a regular file (a fifo or a device)");
  }
  if (fd < 0) {
    return Status(ErrorCode::kIo,
                  "opening " + shown + ": " + std::strerror(errno) +
                      (errno == ELOOP ? " (a symlink: refused, never followed)" : ""));
  }
  kj::AutoCloseFd owned(fd);
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    return Status(ErrorCode::kPermissionDenied,
                  "refusing " + shown + ": not a regular file owned by uid " +
                      std::to_string(geteuid()) + " (something else was put in its place)");
  }
  return owned;
}

LogFile::LogFile(int dir_fd, std::string name, std::string shown, uint64_t max_bytes)
    : dir_(fcntl(dir_fd, F_DUPFD_CLOEXEC, 3)),
      name_(std::move(name)),
      shown_(std::move(shown)),
      max_bytes_(max_bytes) {}

void LogFile::reopen() {
  auto fd = open_own_file(dir_.get(), name_, O_WRONLY | O_APPEND, shown_);
  if (!fd.ok()) {
    spdlog::error("reopening the log: {}; still writing to the old one", fd.status().message());
    return;
  }
  std::fflush(stderr);
  if (dup2(fd->get(), STDERR_FILENO) < 0) {
    spdlog::error("reopening the log: dup2: {}", std::strerror(errno));
  }
}

void LogFile::check_size() {
  struct stat st {};
  if (max_bytes_ == 0 || fstat(STDERR_FILENO, &st) != 0) return;
  if (static_cast<uint64_t>(st.st_size) <= max_bytes_) return;
  // Only the file still named so is moved (after a logrotate, ours may be elsewhere already).
  struct stat named {};
  if (fstatat(dir_.get(), name_.c_str(), &named, AT_SYMLINK_NOFOLLOW) == 0 &&
      named.st_ino == st.st_ino && named.st_dev == st.st_dev &&
      renameat(dir_.get(), name_.c_str(), dir_.get(), (name_ + ".1").c_str()) != 0) {
    spdlog::error("capping the log at {} bytes: renaming {} to {}.1: {}", max_bytes_, shown_,
                  shown_, std::strerror(errno));
    return;
  }
  reopen();
  spdlog::info("log capped at {} bytes: the previous part is {}.1", max_bytes_, shown_);
}

}  // namespace shmstream::daemon
