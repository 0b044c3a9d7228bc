// shmstream/leftovers.hpp — finding and removing what dead daemons left behind (`shmstream gc`).
//
// A daemon's in-memory streams outlive it on purpose: a daemon restarted on the same socket
// adopts them. A daemon that is never restarted leaves them in /dev/shm until reboot. Each daemon
// holds a shared lock (flock) on every segment it serves, so a segment nobody holds is one no
// live daemon serves; removal takes the lock exclusive first, so no daemon adopts a file while
// it goes. Files a daemon refused to adopt (quarantined: forged, corrupt, of another layout) are
// listed too, and removed only when asked.
//
// Needs no daemon. Run as root to remove other users' files (as a user, only one's own).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "shmstream/status.hpp"

namespace shmstream {

struct Leftover {
  enum class Kind {
    kUnserved,     // a segment no live daemon holds (its daemon died or stopped for good)
    kOlderLayout,  // a segment of an older layout: its daemon takes no lock, so it may be live
    kOrphan,       // side files (reader table, reader pages) of a segment that is gone
    kQuarantined,  // a file a daemon moved aside instead of adopting it
    kNotRegular,   // a symlink, fifo or other non-file planted under a segment's name
  };
  Kind kind = Kind::kUnserved;
  std::string directory;
  std::string file;                     // the segment (or quarantined file); kOrphan: its name
  std::vector<std::string> side_files;  // "<file>.t", "<file>.r<N>" beside it
  uint64_t bytes = 0;                   // allocated (memory or disk) by all of its files
  ino_t inode = 0;                      // of `file` when found: removal checks it is the same
  std::string stream;                   // the stream's name, when the header tells it
  std::string daemon_socket;            // the control socket of the daemon that made it
  std::string reason;                   // why it is here, in words
};

struct LeftoverScan {
  std::vector<Leftover> leftovers;
  uint32_t served = 0;  // segments a live daemon holds: not touched
  // Files that could not be checked (another user's, unreadable by us), with the reason.
  std::vector<std::string> unchecked;
};

// What dead daemons left in `directory` (the segment directory, /dev/shm, or a persistent one).
Result<LeftoverScan> find_leftovers(const std::string& directory);
// Removes `leftover` and its side files, after checking, under the segment's exclusive lock,
// that it is still the file found and that no daemon has taken it meanwhile (kBusy then).
Status remove_leftover(const Leftover& leftover);
const char* to_string(Leftover::Kind kind);  // "unserved", "older-layout", ...

}  // namespace shmstream
