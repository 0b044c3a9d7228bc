#include "shm/futex.hpp"

#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <ctime>

namespace shmstream::shm {

size_t to_waitv(std::span<const FutexWatch> watches, std::span<::futex_waitv> out) {
  const size_t n = std::min(watches.size(), out.size());
  for (size_t i = 0; i < n; ++i) {
    out[i] = {};
    out[i].val = watches[i].expected;
    out[i].uaddr = reinterpret_cast<uintptr_t>(watches[i].word);
    out[i].flags = FUTEX_32 | (watches[i].shared ? 0 : FUTEX_PRIVATE_FLAG);
  }
  return n;
}

FutexWaitResult futex_wait(std::span<const FutexWatch> watches, Clock::time_point deadline) {
  futex_waitv waiters[FUTEX_WAITV_MAX] = {};
  const size_t n = to_waitv(watches, waiters);
  timespec abs{};
  timespec* timeout = nullptr;
  if (deadline != kNoDeadline) {
    // steady_clock is CLOCK_MONOTONIC on Linux.
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch());
    if (ns.count() < 0) ns = std::chrono::nanoseconds(0);
    abs.tv_sec = static_cast<time_t>(ns.count() / 1'000'000'000);
    abs.tv_nsec = static_cast<long>(ns.count() % 1'000'000'000);
    timeout = &abs;
  }
  long rc =
      syscall(SYS_futex_waitv, waiters, static_cast<unsigned>(n), 0u, timeout, CLOCK_MONOTONIC);
  if (rc >= 0) return FutexWaitResult::kWoken;
  if (errno == ETIMEDOUT) return FutexWaitResult::kTimedOut;
  return FutexWaitResult::kValueChanged;  // EAGAIN, or EINTR: the caller re-checks
}

namespace {

long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0u, 0); }

// Whether the kernel offers every membarrier command in `commands` (asked once per process).
bool membarrier_offers(long commands) {
  static const long offered = membarrier(MEMBARRIER_CMD_QUERY);
  return offered > 0 && (offered & commands) == commands;
}

}  // namespace

bool register_light_barriers() {
  // A function-local static: thread-safe initialisation, one system call per process.
  static const bool registered =
      heavy_barriers_available() && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
  return registered;
}

bool register_process_barriers() {
  static const bool registered = membarrier_offers(MEMBARRIER_CMD_PRIVATE_EXPEDITED |
                                                   MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) &&
                                 membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
  return registered;
}

bool process_barrier() {
  return register_process_barriers() && membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0;
}

bool heavy_barriers_available() {
  return membarrier_offers(MEMBARRIER_CMD_GLOBAL_EXPEDITED |
                           MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED);
}

bool heavy_barrier() {
  return heavy_barriers_available() && membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0;
}

void futex_wake_all(const std::atomic<uint32_t>* word, bool shared) {
  syscall(SYS_futex, reinterpret_cast<const uint32_t*>(word),
          FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG), INT_MAX, nullptr, nullptr, 0);
}

}  // namespace shmstream::shm
