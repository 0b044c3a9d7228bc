#include "client/watcher.hpp"

#include <errno.h>
#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <thread>

#include "shm/futex.hpp"
#include "shm/futex_ring.hpp"

namespace shmstream {

namespace {

// Makes eventfd `fd` readable.
void signal_eventfd(int fd) {
  uint64_t one = 1;
  while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

// A thread sleeps in the futex (ReaderCore::watch()) and signals an eventfd.
class RelayWatcher final : public ReadyWatcher {
 public:
  RelayWatcher(shm::ReaderCore& core, int event_fd, uint64_t position);
  ~RelayWatcher() override;
  int fd() const override { return event_fd_; }
  void rearm(uint64_t position) override;

 private:
  void run();

  shm::ReaderCore& core_;
  int event_fd_;
  std::atomic<uint64_t> target_;      // the offset + 1 whose commit makes the fd readable
  std::atomic<uint32_t> arm_seq_{0};  // private futex word: bumped by every re-arm and stop
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// The kernel sleeps in the futex (an io_uring FUTEX_WAITV request), and the producer's wake
// signals the eventfd.
class RingWatcher final : public ReadyWatcher {
 public:
  RingWatcher(shm::ReaderCore& core, int event_fd, shm::FutexRing ring)
      : core_(core), event_fd_(event_fd), ring_(std::move(ring)) {}
  ~RingWatcher() override {
    ring_ = shm::FutexRing();  // cancels the queued wait before the eventfd goes
    ::close(event_fd_);
  }
  int fd() const override { return event_fd_; }
  void rearm(uint64_t position) override;
  // Queues what makes the descriptor readable once bytes at `position` are committed.
  void arm(uint64_t position);

 private:
  static constexpr uint64_t kWaitTag = 1;   // the futex wait
  static constexpr uint64_t kOtherTag = 2;  // a NOP (ready now) or a timeout (poll soon)
  // A light producer we could not make see the request is polled this often.
  static constexpr auto kPollInterval = std::chrono::milliseconds(1);

  shm::ReaderCore& core_;
  int event_fd_;
  shm::FutexRing ring_;
  bool waiting_ = false;  // a futex wait is queued in the kernel, on wait-word value seen_
  uint32_t seen_ = 0;
};

void RingWatcher::rearm(uint64_t position) {
  if (ring_.consume(kWaitTag) > 0 && waiting_) {
    waiting_ = false;
    core_.disarm_watch(seen_);
  }
  core_.publish_position_now();
  arm(position);
}

void RingWatcher::arm(uint64_t position) {
  // A queued wait still sleeps on seen_ (or completes soon): re-register for it, not a second.
  auto result = core_.arm_watch(position + 1, seen_, /*keep_seen=*/waiting_);
  Status status;
  if (result == shm::ReaderCore::ArmResult::kReady) {
    status = ring_.nop(kOtherTag);
  } else {
    if (!waiting_) {
      status = ring_.wait(core_.watch_words(seen_), kWaitTag);
      waiting_ = status.ok();
    }
    if (status.ok() && result == shm::ReaderCore::ArmResult::kUnsure) {
      status = ring_.timeout(kPollInterval, kOtherTag);
    }
  }
  // A ring that takes no more requests (short of kernel memory): readable now, so that the
  // loop reads again rather than never hearing of the bytes.
  if (!status.ok()) signal_eventfd(event_fd_);
}

}  // namespace

Result<std::unique_ptr<ReadyWatcher>> ReadyWatcher::start(shm::ReaderCore& core,
                                                          uint64_t position) {
  const char* choice = std::getenv("SHMSTREAM_EVENT_FD");
  std::string_view wanted = choice == nullptr ? "" : choice;
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    return Status(ErrorCode::kIo,
                  fmt::format("{}: eventfd: {}", core.segment().describe(), std::strerror(errno)));
  }
  if (wanted != "relay") {
    auto ring = shm::FutexRing::create(fd);
    if (ring.ok()) {
      auto watcher = std::make_unique<RingWatcher>(core, fd, std::move(ring.value()));
      watcher->arm(position);
      return std::unique_ptr<ReadyWatcher>(std::move(watcher));
    }
    if (wanted == "io_uring") {
      ::close(fd);
      return Status(ring.status().code(),
                    fmt::format("{}: event_fd: SHMSTREAM_EVENT_FD=io_uring: {}",
                                core.segment().describe(), ring.status().message()));
    }
  }
  return std::unique_ptr<ReadyWatcher>(new RelayWatcher(core, fd, position));
}

RelayWatcher::RelayWatcher(shm::ReaderCore& core, int event_fd, uint64_t position)
    : core_(core), event_fd_(event_fd), target_(position + 1) {
  thread_ = std::thread([this] { run(); });
}

RelayWatcher::~RelayWatcher() {
  // Relaxed: the release increment below publishes it.
  stopping_.store(true, std::memory_order_relaxed);
  // Release: pairs with run()'s acquire loads of arm_seq_; it then sees stopping_.
  arm_seq_.fetch_add(1, std::memory_order_release);
  shm::futex_wake_all(&arm_seq_, /*shared=*/false);
  thread_.join();
  ::close(event_fd_);
}

void RelayWatcher::rearm(uint64_t position) {
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

void RelayWatcher::run() {
  // Acquire: pairs with rearm()'s release increment; target_ read after it is current.
  uint32_t seq = arm_seq_.load(std::memory_order_acquire);
  for (;;) {
    if (stopping_.load(std::memory_order_relaxed)) return;
    // Relaxed: ordered by the acquire load of arm_seq_ that produced `seq`.
    uint64_t target = target_.load(std::memory_order_relaxed);
    auto result = core_.watch(target, &arm_seq_, seq);
    if (result != shm::ReaderCore::WatchResult::kRearmed) {
      signal_eventfd(event_fd_);  // bytes at the target, the stream's end, or the reader closed
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
