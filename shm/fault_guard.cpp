#include "shm/fault_guard.hpp"

#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <mutex>

namespace shmstream::shm {

// One watched range. Entries live in blocks that are never freed, so that the handler may walk
// them at any moment without a lock; an entry is reused once its guard lets go of it.
struct FaultGuard::Entry {
  std::atomic<uint32_t> state{0};  // kFree, kClaimed (being filled in) or kWatching
  std::atomic<uintptr_t> base{0};
  std::atomic<size_t> length{0};
  std::atomic<int> prot{0};
  std::atomic<uint32_t> faulted{0};
};

namespace {

constexpr uint32_t kFree = 0;
constexpr uint32_t kClaimed = 1;
constexpr uint32_t kWatching = 2;
constexpr size_t kEntriesPerBlock = 256;

struct Block {
  FaultGuard::Entry entries[kEntriesPerBlock];
  Block* next = nullptr;  // set before the block is published, never changed
};

std::atomic<Block*> g_blocks{nullptr};
std::atomic<unsigned long> g_recovered{0};
struct sigaction g_previous {};
std::once_flag g_installed;

// Passes a SIGBUS that is not ours on to whoever handled it before us, or dies of it.
void pass_on(int sig, siginfo_t* info, void* context) {
  if ((g_previous.sa_flags & SA_SIGINFO) != 0 && g_previous.sa_sigaction != nullptr) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  if (g_previous.sa_handler != SIG_DFL && g_previous.sa_handler != SIG_IGN) {
    g_previous.sa_handler(sig);
    return;
  }
  // Default action: a fault re-executes the access and dies of it; a sent signal is re-raised.
  signal(sig, SIG_DFL);
  if (info->si_code <= 0) raise(sig);
}

void on_sigbus(int sig, siginfo_t* info, void* context) {
  // Only the kernel's own reports name a faulting address (si_code > 0); kill(2) does not.
  if (info->si_code > 0) {
    const auto address = reinterpret_cast<uintptr_t>(info->si_addr);
    // Acquire: pairs with the release CAS that published each block (its entries are zeroed).
    for (Block* block = g_blocks.load(std::memory_order_acquire); block != nullptr;
         block = block->next) {
      for (FaultGuard::Entry& entry : block->entries) {
        // Acquire: pairs with the guard's release store of kWatching; base/length are set.
        if (entry.state.load(std::memory_order_acquire) != kWatching) continue;
        const uintptr_t base = entry.base.load(std::memory_order_relaxed);
        const size_t length = entry.length.load(std::memory_order_relaxed);
        if (address - base >= length) continue;
        const int saved_errno = errno;
        void* replaced =
            mmap(reinterpret_cast<void*>(base), length, entry.prot.load(std::memory_order_relaxed),
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
        errno = saved_errno;
        if (replaced == MAP_FAILED) break;  // cannot recover: die as we would have
        // Release: pairs with faulted()'s acquire load; the zero pages are in place first.
        entry.faulted.store(1, std::memory_order_release);
        g_recovered.fetch_add(1, std::memory_order_relaxed);  // a statistic
        return;  // the access is retried and reads zeros
      }
    }
  }
  pass_on(sig, info, context);
}

void install_handler() {
  struct sigaction action {};
  action.sa_sigaction = on_sigbus;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  sigaction(SIGBUS, &action, &g_previous);
}

FaultGuard::Entry* claim_entry() {
  for (;;) {
    Block* head = g_blocks.load(std::memory_order_acquire);  // as in on_sigbus()
    for (Block* block = head; block != nullptr; block = block->next) {
      for (FaultGuard::Entry& entry : block->entries) {
        uint32_t expected = kFree;
        // Relaxed: the claim only reserves the entry for us; kWatching publishes it.
        if (entry.state.load(std::memory_order_relaxed) == kFree &&
            entry.state.compare_exchange_strong(expected, kClaimed, std::memory_order_relaxed)) {
          return &entry;
        }
      }
    }
    auto* fresh = new Block;
    fresh->next = head;
    // Release: pairs with the acquire loads of g_blocks; the block's zeroed entries come first.
    if (!g_blocks.compare_exchange_strong(head, fresh, std::memory_order_release,
                                          std::memory_order_relaxed)) {
      delete fresh;  // another thread added one: look again
    }
  }
}

}  // namespace

FaultGuard::FaultGuard(void* base, size_t length, int prot) {
  std::call_once(g_installed, install_handler);
  entry_ = claim_entry();
  // Relaxed: published by the release store of kWatching below.
  entry_->base.store(reinterpret_cast<uintptr_t>(base), std::memory_order_relaxed);
  entry_->length.store(length, std::memory_order_relaxed);
  entry_->prot.store(prot, std::memory_order_relaxed);
  entry_->faulted.store(0, std::memory_order_relaxed);
  // Release: pairs with on_sigbus()'s acquire load of the state.
  entry_->state.store(kWatching, std::memory_order_release);
}

FaultGuard& FaultGuard::operator=(FaultGuard&& other) noexcept {
  if (this != &other) {
    reset();
    entry_ = std::exchange(other.entry_, nullptr);
  }
  return *this;
}

void FaultGuard::reset() {
  if (entry_ == nullptr) return;
  // Release: our accesses to the range precede the entry's reuse (claim_entry()).
  entry_->state.store(kFree, std::memory_order_release);
  entry_ = nullptr;
}

bool FaultGuard::faulted() const {
  // Acquire: pairs with on_sigbus()'s release store.
  return entry_ != nullptr && entry_->faulted.load(std::memory_order_acquire) != 0;
}

unsigned long FaultGuard::recovered() { return g_recovered.load(std::memory_order_relaxed); }

}  // namespace shmstream::shm
