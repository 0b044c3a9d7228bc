// client/watcher.hpp — turns a reader's futex wait into a file descriptor for event loops.
//
// A futex cannot be polled, so a thread sleeps in the futex on the loop's behalf and signals an
// eventfd when the reader has something to deliver. The reader re-arms it each time it finds
// nothing at its position (a read that would block), which also clears the eventfd.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "shm/reader_core.hpp"
#include "shmstream/status.hpp"

namespace shmstream {

class ReadyWatcher {
 public:
  // Starts watching `core` for bytes at `position`. `core` must outlive the watcher, and be
  // closed before the watcher is destroyed only through ReaderCore::close() (which wakes it).
  static Result<std::unique_ptr<ReadyWatcher>> start(shm::ReaderCore& core, uint64_t position);
  ~ReadyWatcher();
  ReadyWatcher(const ReadyWatcher&) = delete;
  ReadyWatcher& operator=(const ReadyWatcher&) = delete;

  // The eventfd: readable while bytes at the watched position are committed (or the stream
  // ended, or the reader closed).
  int fd() const { return event_fd_; }
  // The owner's thread found nothing at `position`: clears the eventfd and watches that
  // position. Publishes the reader's position first (a blocking ring may wait for it).
  void rearm(uint64_t position);

 private:
  ReadyWatcher(shm::ReaderCore& core, int event_fd, uint64_t position);
  void run();
  void signal();

  shm::ReaderCore& core_;
  int event_fd_;
  std::atomic<uint64_t> target_;      // the offset + 1 whose commit makes the fd readable
  std::atomic<uint32_t> arm_seq_{0};  // private futex word: bumped by every re-arm and stop
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace shmstream
