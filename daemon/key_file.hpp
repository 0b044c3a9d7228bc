// daemon/key_file.hpp — the daemon's secret key (shm/authenticator.hpp), kept in a file only
// the daemon's user can read.
#pragma once

#include <string>

#include "shm/authenticator.hpp"
#include "shmstream/status.hpp"

namespace shmstream::daemon {

// The key in file `name` of directory `dir_fd` (shown as `shown` in messages), made if there
// is none: 32 random bytes, mode 0600, put in place by link() so that a daemon starting at the
// same moment reads a whole key or makes its own first. Never follows a symlink; refuses a file
// that is not a regular 32-byte file of this user readable by nobody else, saying why.
Result<shm::DaemonKey> load_or_make_key(int dir_fd, const std::string& name,
                                        const std::string& shown);

}  // namespace shmstream::daemon
