// shmstream/cancellation.hpp — a token that interrupts blocking waits from another thread.
//
// Pass a Cancellation to a blocking read or wait; calling cancel() from any thread makes every
// wait that uses the token return ErrorCode::kInterrupted at once. A wait sleeps on the stream's
// futex word and on the token's word together (futex_waitv), so a cancel() cannot be missed.
// Once cancelled, a token stays cancelled. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>

namespace shmstream {

class Cancellation {
 public:
  Cancellation() = default;
  Cancellation(const Cancellation&) = delete;
  Cancellation& operator=(const Cancellation&) = delete;

  // Fires the token and wakes every wait that uses it.
  void cancel();
  bool cancelled() const {
    // Pairs with the release store in cancel().
    return word_.load(std::memory_order_acquire) != 0;
  }

  // The futex word waits sleep on: 0 until cancelled, then 1 (internal).
  const std::atomic<uint32_t>* word() const { return &word_; }

 private:
  std::atomic<uint32_t> word_{0};
};

}  // namespace shmstream
