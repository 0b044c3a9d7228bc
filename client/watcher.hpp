// client/watcher.hpp — turns a reader's futex wait into a file descriptor for event loops.
//
// The descriptor is an eventfd. Where the kernel has io_uring futex waits (Linux >= 6.7), a
// FutexRing's wait sleeps in the kernel and the producer's wake signals the eventfd itself: one
// wake-up per message, as for a blocking read. Elsewhere (or with SHMSTREAM_EVENT_FD=relay in
// the environment) a relay thread sleeps in the futex on the loop's behalf and signals the
// eventfd: two wake-ups per message. Either way the reader re-arms the descriptor each time it
// finds nothing at its position (a read that would block), which also clears it.
#pragma once

#include <cstdint>
#include <memory>

#include "shm/reader_core.hpp"
#include "shmstream/status.hpp"

namespace shmstream {

class ReadyWatcher {
 public:
  // Starts watching `core` for bytes at `position`. `core` must outlive the watcher, and be
  // closed before the watcher is destroyed only through ReaderCore::close() (which wakes it).
  static Result<std::unique_ptr<ReadyWatcher>> start(shm::ReaderCore& core, uint64_t position);
  virtual ~ReadyWatcher() = default;

  // Readable while bytes at the watched position are committed (or the stream ended, or the
  // reader closed); now and then without them (the reader's read then re-arms it).
  virtual int fd() const = 0;
  // The owner's thread found nothing at `position`: clears the descriptor and watches that
  // position. Publishes the reader's position first (a blocking ring may wait for it).
  virtual void rearm(uint64_t position) = 0;
};

}  // namespace shmstream
