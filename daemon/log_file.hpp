// daemon/log_file.hpp — the background daemon's log: a file beside the socket that is its
// stderr, reopened on SIGHUP (after logrotate moved it) and capped in size (past the cap it
// becomes NAME.1, replacing the one before, and a new file starts).
#pragma once

#include <kj/io.h>

#include <cstdint>
#include <string>

#include "shmstream/status.hpp"

namespace shmstream::daemon {

// Opens (creating it 0600) file `name` of directory `dir_fd` for `flags`, never following a
// symlink nor blocking on a fifo, and checks that it is a regular file of this user. The error
// names `shown` and says why: a planted file must not get the daemon's pid or log.
Result<kj::AutoCloseFd> open_own_file(int dir_fd, const std::string& name, int flags,
                                      const std::string& shown);

class LogFile {
 public:
  // The log `name` in directory `dir_fd` (a duplicate is kept), shown as `shown`; 0: no cap.
  LogFile(int dir_fd, std::string name, std::string shown, uint64_t max_bytes);

  // Opens the file by its name again and makes it stderr. On failure the old one stays (and
  // the failure is logged in it).
  void reopen();
  // Past the cap: renames the file to NAME.1 and reopens. Called periodically.
  void check_size();
  uint64_t max_bytes() const { return max_bytes_; }

 private:
  kj::AutoCloseFd dir_;
  std::string name_;
  std::string shown_;
  uint64_t max_bytes_;
};

}  // namespace shmstream::daemon
