#include "daemon/key_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <kj/io.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "shm/posix_error.hpp"

namespace shmstream::daemon {

namespace {

Result<shm::DaemonKey> read_key(int dir_fd, const std::string& name, const std::string& shown) {
  kj::AutoCloseFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (fd.get() < 0) {
    int err = errno;
    if (err == ELOOP) {
      return Status(ErrorCode::kPermissionDenied,
                    fmt::format("key file {}: a symlink (refused, never followed)", shown));
    }
    return Status(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIo,
                  fmt::format("key file {}: {}", shown, std::strerror(err)));
  }
  struct stat st {};
  shm::DaemonKey key;
  std::string why;
  if (fstat(fd.get(), &st) != 0) {
    why = std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    why = "not a regular file";
  } else if (st.st_uid != geteuid()) {
    why = fmt::format("owned by uid {}, not this daemon's user (uid {})", st.st_uid, geteuid());
  } else if ((st.st_mode & 077) != 0) {
    why = fmt::format("mode {:04o}: others may read it", st.st_mode & 07777);
  } else if (st.st_size != static_cast<off_t>(key.bytes.size()) ||
             pread(fd.get(), key.bytes.data(), key.bytes.size(), 0) !=
                 static_cast<ssize_t>(key.bytes.size())) {
    why = fmt::format("{} bytes, a key has {}", st.st_size, key.bytes.size());
  }
  if (!why.empty()) {
    return Status(ErrorCode::kPermissionDenied,
                  fmt::format("key file {}: {}; move it aside to make a new key (the streams "
                              "signed with the old one are then quarantined, not adopted)",
                              shown, why));
  }
  return key;
}

}  // namespace

Result<shm::DaemonKey> load_or_make_key(int dir_fd, const std::string& name,
                                        const std::string& shown) {
  auto key = read_key(dir_fd, name, shown);
  if (key.ok() || key.status().code() != ErrorCode::kNotFound) return key;
  shm::DaemonKey fresh;
  if (getrandom(fresh.bytes.data(), fresh.bytes.size(), 0) !=
      static_cast<ssize_t>(fresh.bytes.size())) {
    return from_errno(errno, "making a key: getrandom");
  }
  std::string temp = fmt::format("{}.new.{}", name, getpid());
  unlinkat(dir_fd, temp.c_str(), 0);  // ours, if an earlier daemon of this pid died here
  kj::AutoCloseFd fd(
      openat(dir_fd, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (fd.get() < 0) return from_errno(errno, fmt::format("making key file {}", shown));
  bool written = fchmod(fd.get(), 0600) == 0 &&
                 write(fd.get(), fresh.bytes.data(), fresh.bytes.size()) ==
                     static_cast<ssize_t>(fresh.bytes.size()) &&
                 fsync(fd.get()) == 0;
  int err = errno;
  int linked = written ? linkat(dir_fd, temp.c_str(), dir_fd, name.c_str(), 0) : -1;
  if (written && linked != 0) err = errno;
  unlinkat(dir_fd, temp.c_str(), 0);
  if (!written || (linked != 0 && err != EEXIST)) {
    return from_errno(err, fmt::format("making key file {}", shown));
  }
  fsync(dir_fd);
  // Ours, or the one another daemon linked first: whichever is there now is the key.
  return read_key(dir_fd, name, shown);
}

}  // namespace shmstream::daemon
