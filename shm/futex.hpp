// shm/futex.hpp — futex waits and wakes on 32-bit words.
//
// Shared futexes (no FUTEX_PRIVATE_FLAG) work across processes, also on a read-only mapping
// (the kernel keys them by file and offset), so readers sleep on a word they cannot write.
// A wait can watch several words at once (futex_waitv, Linux >= 5.16): the stream's shared
// word plus process-private cancellation words.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>

namespace shmstream::shm {

using Clock = std::chrono::steady_clock;
// No deadline: wait until woken.
inline constexpr Clock::time_point kNoDeadline = Clock::time_point::max();

// The most words one futex_wait() watches (FUTEX_WAITV_MAX).
inline constexpr size_t kMaxFutexWatches = 128;

// One word to watch: sleep only while *word == expected.
struct FutexWatch {
  const std::atomic<uint32_t>* word;
  uint32_t expected;
  bool shared;  // true for a word in a shared mapping, false for process-private memory
};

enum class FutexWaitResult { kWoken, kValueChanged, kTimedOut };

}  // namespace shmstream::shm

struct futex_waitv;  // <linux/futex.h>

namespace shmstream::shm {

// Writes `watches` (at most out.size() of them) as the kernel's futex_waitv entries, for
// futex_waitv(2) and io_uring's FUTEX_WAITV; returns how many were written.
size_t to_waitv(std::span<const FutexWatch> watches, std::span<::futex_waitv> out);

// Sleeps while every watched word holds its expected value, until one is woken or `deadline`
// (CLOCK_MONOTONIC) passes. Spurious returns are possible: callers re-check their condition.
FutexWaitResult futex_wait(std::span<const FutexWatch> watches, Clock::time_point deadline);
// Wakes every process and thread sleeping on `word`.
void futex_wake_all(const std::atomic<uint32_t>* word, bool shared);

// Asymmetric barriers (membarrier(2), MEMBARRIER_CMD_GLOBAL_EXPEDITED, Linux >= 4.16): a hot
// side that only needs a compiler barrier, paid for by a rare side's system call. A process
// that registers may replace a seq_cst fence by light_barrier() in a store-then-load (Dekker)
// sequence, provided that the other side issues heavy_barrier() between its own store and load:
// the kernel then makes every registered thread execute a full barrier (or be descheduled,
// which is one) before heavy_barrier() returns.
//
// Registers this process (once; later calls return the first answer). True if it may use
// light barriers.
bool register_light_barriers();
// Whether heavy_barrier() is available in this process.
bool heavy_barriers_available();
// The rare side's barrier; false if unavailable (the caller must then not rely on it).
bool heavy_barrier();
inline void light_barrier() { std::atomic_signal_fence(std::memory_order_seq_cst); }
// The same within this process (MEMBARRIER_CMD_PRIVATE_EXPEDITED, Linux >= 4.14): registers it
// (once); true if process_barrier() may be relied on.
bool register_process_barriers();
// Makes every running thread of this process execute a full barrier; false if it could not.
bool process_barrier();

}  // namespace shmstream::shm
