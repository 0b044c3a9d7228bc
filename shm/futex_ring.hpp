// shm/futex_ring.hpp — futex waits an event loop can poll: a small io_uring whose only work is
// IORING_OP_FUTEX_WAITV (Linux >= 6.7), NOP and TIMEOUT requests.
//
// A futex cannot be polled, but an io_uring can signal an eventfd when it completes a request.
// A wait queued here sleeps in the kernel on the words, on nobody's thread. A FUTEX_WAKE of any
// of them wakes the thread that queued the wait (the ring completes it by task work, which
// interrupts that thread like a signal without a handler), posts the completion and signals
// the eventfd: one wake-up per message, where a relay thread costs two. Consequence for loops:
// an epoll_wait in that thread returns EINTR once before it reports the eventfd (poll() and
// select() restart by themselves); every event loop retries on EINTR.
//
// Measured (docs/BENCHMARKS.md): a ring with deferred task work (IORING_SETUP_DEFER_TASKRUN)
// avoids the EINTR but took 11.9 µs one way against 8.3 µs, the eventfd being signalled late.
//
// Raw system calls, no liburing: Debian 12's liburing (2.3) predates the futex opcodes, and the
// few lines of ring handling below are all this needs.
//
// Thread-safety: one thread at a time. Completions are posted by the thread that submitted the
// wait, when it next enters or leaves the kernel (it is interrupted to do so if it sleeps).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>

#include "shm/futex.hpp"
#include "shmstream/status.hpp"

namespace shmstream::shm {

class FutexRing {
 public:
  // A ring that signals `event_fd` (an eventfd, not owned) when a request completes; an error
  // (kIo, kPermissionDenied) where the kernel has no io_uring, forbids it (sysctl
  // kernel.io_uring_disabled), or lacks FUTEX_WAITV (Linux < 6.7).
  static Result<FutexRing> create(int event_fd);
  FutexRing() = default;
  FutexRing(FutexRing&& other) noexcept;
  FutexRing& operator=(FutexRing&& other) noexcept;
  ~FutexRing();

  // Queues a wait that completes when one of the words is woken or holds another value than
  // expected (at most kMaxRingWatches words). `tag` comes back with its completion.
  Status wait(std::span<const FutexWatch> watches, uint64_t tag);
  // Queues a request that completes at once (makes the descriptor readable).
  Status nop(uint64_t tag);
  // Queues a request that completes after `delay`.
  Status timeout(std::chrono::nanoseconds delay, uint64_t tag);
  // Clears the eventfd and consumes every posted completion; returns how many had tag `tag`.
  // A completion posted meanwhile leaves the eventfd signalled.
  size_t consume(uint64_t tag);

  static constexpr size_t kMaxRingWatches = 4;

 private:
  struct Sqe;
  // The next free submission entry (zeroed), or nullptr if the queue is full.
  Sqe* next_sqe();
  // Hands the queued entries to the kernel.
  Status submit(const char* what);

  void reset();

  int fd_ = -1;
  int event_fd_ = -1;      // not owned
  void* rings_ = nullptr;  // SQ and CQ rings (one mapping: IORING_FEAT_SINGLE_MMAP)
  size_t rings_size_ = 0;
  void* sqes_ = nullptr;
  size_t sqes_size_ = 0;
  // Pointers into rings_.
  uint32_t* sq_head_ = nullptr;
  uint32_t* sq_tail_ = nullptr;
  uint32_t sq_mask_ = 0;
  uint32_t* sq_array_ = nullptr;
  uint32_t* cq_head_ = nullptr;
  uint32_t* cq_tail_ = nullptr;
  uint32_t cq_mask_ = 0;
  void* cqes_ = nullptr;
  uint32_t pending_ = 0;  // entries queued, not yet submitted
  // The waits' vectors and timeouts: the kernel reads them while submitting.
  struct WaitVector;
  WaitVector* waitv_ = nullptr;
};

}  // namespace shmstream::shm
