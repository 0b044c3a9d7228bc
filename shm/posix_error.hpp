// shm/posix_error.hpp — the one mapping from errno to a Status (leveldb's PosixError).
#pragma once

#include <string_view>

#include "shmstream/status.hpp"

namespace shmstream {

// The Status of a system call that failed with `err`, its message "context: strerror(err)".
// ENOSPC, EDQUOT, ENOMEM -> kNoSpace; EACCES, EPERM -> kPermissionDenied; ENOENT -> kNotFound;
// anything else kIo.
Status from_errno(int err, std::string_view context);

}  // namespace shmstream
