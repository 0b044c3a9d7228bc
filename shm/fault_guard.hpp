// shm/fault_guard.hpp — survives a file that shrinks under a mapping of it.
//
// Whoever can write a file can truncate it, and then touching a mapped page past its new end
// raises SIGBUS. Every shmstream mapping of a file another process can write (a reader's
// segment, the daemon's headers, the producer's view of reader pages) is registered here; a
// process-wide SIGBUS handler that finds the faulting address in a registered range maps
// anonymous zero pages over the whole range (as Wayland compositors do for client shm pools)
// and flags it. The faulting access then completes, reading zeros; the owner of the mapping
// checks faulted() before it trusts what it read and reports the stream corrupt. A fault
// outside every registered range goes to the handler installed before ours (or kills the
// process, as without us).
//
// Thread-safety: FaultGuard objects may be created and destroyed from any thread; faulted()
// from any thread. The handler is async-signal-safe (atomics and mmap only).
#pragma once

#include <cstddef>
#include <utility>

namespace shmstream::shm {

class FaultGuard {
 public:
  FaultGuard() = default;
  // Watches [base, base + length), mapped with protection `prot` (PROT_* bits). The range
  // must stay mapped until the guard is reset or destroyed.
  FaultGuard(void* base, size_t length, int prot);
  FaultGuard(FaultGuard&& other) noexcept : entry_(std::exchange(other.entry_, nullptr)) {}
  FaultGuard& operator=(FaultGuard&& other) noexcept;
  FaultGuard(const FaultGuard&) = delete;
  FaultGuard& operator=(const FaultGuard&) = delete;
  ~FaultGuard() { reset(); }

  // Stops watching (before the range is unmapped).
  void reset();
  // Whether a fault in the range was recovered: its contents are zeros from then on.
  bool faulted() const;

  // Faults recovered in this process so far (diagnostics and tests).
  static unsigned long recovered();

  struct Entry;

 private:
  Entry* entry_ = nullptr;
};

}  // namespace shmstream::shm
