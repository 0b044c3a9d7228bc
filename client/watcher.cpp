#include "client/watcher.hpp"

#include <errno.h>
#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>

#include "shm/futex.hpp"

namespace shmstream {

Result<std::unique_ptr<ReadyWatcher>> ReadyWatcher::start(shm::ReaderCore& core,
                                                          uint64_t position) {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    return Status(ErrorCode::kIo,
                  fmt::format("{}: eventfd: {}", core.segment().describe(), std::strerror(errno)));
  }
  return std::unique_ptr<ReadyWatcher>(new ReadyWatcher(core, fd, position));
}

ReadyWatcher::ReadyWatcher(shm::ReaderCore& core, int event_fd, uint64_t position)
    : core_(core), event_fd_(event_fd), target_(position + 1) {
  thread_ = std::thread([this] { run(); });
}

ReadyWatcher::~ReadyWatcher() {
  // Relaxed: the release increment below publishes it.
  stopping_.store(true, std::memory_order_relaxed);
  // Release: pairs with run()'s acquire loads of arm_seq_; it then sees stopping_.
  arm_seq_.fetch_add(1, std::memory_order_release);
  shm::futex_wake_all(&arm_seq_, /*shared=*/false);
  thread_.join();
  ::close(event_fd_);
}

void ReadyWatcher::rearm(uint64_t position) {
  uint64_t count;
  while (::read(event_fd_, &count, sizeof count) < 0 && errno == EINTR) {
  }
  core_.publish_position_now();
  // Relaxed: the release increment below publishes it.
  target_.store(position + 1, std::memory_order_relaxed);
  // Release: pairs with run()'s and ReaderCore::watch()'s acquire loads (the new target first).
  arm_seq_.fetch_add(1, std::memory_order_release);
  shm::futex_wake_all(&arm_seq_, /*shared=*/false);
}

void ReadyWatcher::signal() {
  uint64_t one = 1;
  while (::write(event_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void ReadyWatcher::run() {
  // Acquire: pairs with rearm()'s release increment; target_ read after it is current.
  uint32_t seq = arm_seq_.load(std::memory_order_acquire);
  for (;;) {
    if (stopping_.load(std::memory_order_relaxed)) return;
    // Relaxed: ordered by the acquire load of arm_seq_ that produced `seq`.
    uint64_t target = target_.load(std::memory_order_relaxed);
    auto result = core_.watch(target, &arm_seq_, seq);
    if (result != shm::ReaderCore::WatchResult::kRearmed) {
      signal();  // bytes at the target, the stream's end, or the reader closed
      // Sleep until the owner re-arms (it found nothing more to read) or we stop.
      shm::FutexWatch rearmed{&arm_seq_, seq, false};
      // Acquire: as above.
      while (arm_seq_.load(std::memory_order_acquire) == seq) {
        shm::futex_wait(std::span(&rearmed, 1), shm::kNoDeadline);
      }
    }
    // Acquire: as above.
    seq = arm_seq_.load(std::memory_order_acquire);
  }
}

}  // namespace shmstream
