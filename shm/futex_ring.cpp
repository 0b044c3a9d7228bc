#include "shm/futex_ring.hpp"

#include <errno.h>
#include <fmt/format.h>
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <utility>

#include "shm/posix_error.hpp"

namespace shmstream::shm {

namespace {

// Opcodes newer than Debian 12's kernel headers (Linux 6.1): io_uring's enum, Linux 6.7.
constexpr uint8_t kOpFutexWaitv = 53;
constexpr uint32_t kEntries = 8;

int sys_setup(uint32_t entries, io_uring_params* params) {
  return static_cast<int>(syscall(SYS_io_uring_setup, entries, params));
}
int sys_enter(int fd, uint32_t to_submit) {
  return static_cast<int>(syscall(SYS_io_uring_enter, fd, to_submit, 0u, 0u, nullptr, 0));
}

// The status of a failed io_uring_enter.
Status enter_failed(int err, const char* what) {
  return from_errno(err, fmt::format("io_uring_enter ({})", what));
}

int sys_register(int fd, unsigned opcode, void* arg, unsigned count) {
  return static_cast<int>(syscall(SYS_io_uring_register, fd, opcode, arg, count));
}

// Whether the kernel behind ring `fd` knows `opcode`.
bool supports(int fd, uint8_t opcode) {
  constexpr size_t kOps = 256;
  alignas(io_uring_probe)
      std::byte buf[sizeof(io_uring_probe) + kOps * sizeof(io_uring_probe_op)] = {};
  auto* probe = reinterpret_cast<io_uring_probe*>(buf);
  if (sys_register(fd, IORING_REGISTER_PROBE, probe, kOps) < 0) return false;
  return opcode <= probe->last_op && (probe->ops[opcode].flags & IO_URING_OP_SUPPORTED) != 0;
}

// Accesses to the words the kernel shares with us in the rings' mapping.
uint32_t load_acquire(uint32_t* p) {
  return std::atomic_ref<uint32_t>(*p).load(std::memory_order_acquire);
}
void store_release(uint32_t* p, uint32_t v) {
  std::atomic_ref<uint32_t>(*p).store(v, std::memory_order_release);
}

}  // namespace

struct FutexRing::Sqe : io_uring_sqe {};

// Kept alive in the ring's private memory while requests that point to it are queued.
struct FutexRing::WaitVector {
  futex_waitv waiters[kMaxRingWatches];
  __kernel_timespec delay;
};

Result<FutexRing> FutexRing::create(int event_fd) {
  io_uring_params params{};
  int fd = sys_setup(kEntries, &params);
  if (fd < 0) return from_errno(errno, "io_uring_setup");
  FutexRing ring;
  ring.fd_ = fd;
  ring.event_fd_ = event_fd;
  if (sys_register(fd, IORING_REGISTER_EVENTFD, &event_fd, 1) < 0) {
    return from_errno(errno, "io_uring: registering the eventfd");
  }
  if ((params.features & IORING_FEAT_SINGLE_MMAP) == 0) {
    return Status(ErrorCode::kIo, "io_uring: no IORING_FEAT_SINGLE_MMAP (kernel older than 5.4)");
  }
  if (!supports(fd, kOpFutexWaitv)) {
    return Status(ErrorCode::kIo, "io_uring: no IORING_OP_FUTEX_WAITV (kernel older than 6.7)");
  }
  ring.rings_size_ = std::max(params.sq_off.array + params.sq_entries * sizeof(uint32_t),
                              params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe));
  void* rings = ::mmap(nullptr, ring.rings_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                       fd, IORING_OFF_SQ_RING);
  if (rings == MAP_FAILED) return from_errno(errno, "io_uring: mmap of the rings");
  ring.rings_ = rings;
  ring.sqes_size_ = params.sq_entries * sizeof(io_uring_sqe);
  void* sqes = ::mmap(nullptr, ring.sqes_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                      fd, IORING_OFF_SQES);
  if (sqes == MAP_FAILED) return from_errno(errno, "io_uring: mmap of the submission entries");
  ring.sqes_ = sqes;
  auto* base = static_cast<std::byte*>(rings);
  ring.sq_head_ = reinterpret_cast<uint32_t*>(base + params.sq_off.head);
  ring.sq_tail_ = reinterpret_cast<uint32_t*>(base + params.sq_off.tail);
  ring.sq_mask_ = *reinterpret_cast<uint32_t*>(base + params.sq_off.ring_mask);
  ring.sq_array_ = reinterpret_cast<uint32_t*>(base + params.sq_off.array);
  ring.cq_head_ = reinterpret_cast<uint32_t*>(base + params.cq_off.head);
  ring.cq_tail_ = reinterpret_cast<uint32_t*>(base + params.cq_off.tail);
  ring.cq_mask_ = *reinterpret_cast<uint32_t*>(base + params.cq_off.ring_mask);
  ring.cqes_ = base + params.cq_off.cqes;
  ring.waitv_ = new WaitVector{};
  return ring;
}

FutexRing::FutexRing(FutexRing&& other) noexcept { *this = std::move(other); }

FutexRing& FutexRing::operator=(FutexRing&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
    event_fd_ = other.event_fd_;
    rings_ = std::exchange(other.rings_, nullptr);
    rings_size_ = other.rings_size_;
    sqes_ = std::exchange(other.sqes_, nullptr);
    sqes_size_ = other.sqes_size_;
    sq_head_ = other.sq_head_;
    sq_tail_ = other.sq_tail_;
    sq_mask_ = other.sq_mask_;
    sq_array_ = other.sq_array_;
    cq_head_ = other.cq_head_;
    cq_tail_ = other.cq_tail_;
    cq_mask_ = other.cq_mask_;
    cqes_ = other.cqes_;
    pending_ = std::exchange(other.pending_, 0);
    waitv_ = std::exchange(other.waitv_, nullptr);
  }
  return *this;
}

FutexRing::~FutexRing() { reset(); }

void FutexRing::reset() {
  // Closing the descriptor cancels the queued waits (the kernel no longer reads waitv_ after
  // submission: it copied the vector).
  // Unhooked first: the cancelled wait's completion must not signal an eventfd that lives on
  // (a ring made again in another thread takes it over).
  if (fd_ >= 0) (void)sys_register(fd_, IORING_UNREGISTER_EVENTFD, nullptr, 0);
  if (sqes_ != nullptr) ::munmap(sqes_, sqes_size_);
  if (rings_ != nullptr) ::munmap(rings_, rings_size_);
  if (fd_ >= 0) ::close(fd_);
  delete waitv_;
  fd_ = -1;
  rings_ = sqes_ = nullptr;
  waitv_ = nullptr;
  pending_ = 0;
}

FutexRing::Sqe* FutexRing::next_sqe() {
  // Relaxed would do for our own tail; acquire on the kernel's head: pairs with its release
  // store after it consumed the entries (their slots are free for us to rewrite).
  uint32_t tail = *sq_tail_ + pending_;
  if (tail - load_acquire(sq_head_) > sq_mask_) return nullptr;
  uint32_t index = tail & sq_mask_;
  auto* sqe = static_cast<Sqe*>(sqes_) + index;
  std::memset(static_cast<void*>(sqe), 0, sizeof(io_uring_sqe));
  sq_array_[index] = index;
  ++pending_;
  return sqe;
}

Status FutexRing::submit(const char* what) {
  // Release: pairs with the kernel's acquire load of the tail; the entries written before it
  // are visible to it.
  store_release(sq_tail_, *sq_tail_ + pending_);
  uint32_t count = std::exchange(pending_, 0);
  while (count > 0) {
    int rc = sys_enter(fd_, count);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) {
      // Not consumed: take them back, so that the next submission does not resend them.
      store_release(sq_tail_, *sq_tail_ - count);
      return enter_failed(errno, what);
    }
    count -= static_cast<uint32_t>(rc);
    if (rc == 0) break;
  }
  return Status();
}

Status FutexRing::wait(std::span<const FutexWatch> watches, uint64_t tag) {
  if (watches.empty() || watches.size() > kMaxRingWatches) {
    return Status(ErrorCode::kInvalidArgument, "io_uring futex wait: 1 to 4 words");
  }
  Sqe* sqe = next_sqe();
  if (sqe == nullptr) return Status(ErrorCode::kIo, "io_uring: submission queue full");
  to_waitv(watches, waitv_->waiters);
  sqe->opcode = kOpFutexWaitv;
  sqe->addr = reinterpret_cast<uintptr_t>(waitv_->waiters);
  sqe->len = static_cast<uint32_t>(watches.size());
  sqe->user_data = tag;
  return submit("futex wait");
}

Status FutexRing::nop(uint64_t tag) {
  Sqe* sqe = next_sqe();
  if (sqe == nullptr) return Status(ErrorCode::kIo, "io_uring: submission queue full");
  sqe->opcode = IORING_OP_NOP;
  sqe->user_data = tag;
  return submit("nop");
}

Status FutexRing::timeout(std::chrono::nanoseconds delay, uint64_t tag) {
  Sqe* sqe = next_sqe();
  if (sqe == nullptr) return Status(ErrorCode::kIo, "io_uring: submission queue full");
  waitv_->delay.tv_sec = delay.count() / 1'000'000'000;
  waitv_->delay.tv_nsec = delay.count() % 1'000'000'000;
  sqe->opcode = IORING_OP_TIMEOUT;
  sqe->addr = reinterpret_cast<uintptr_t>(&waitv_->delay);
  sqe->len = 1;
  sqe->user_data = tag;
  return submit("timeout");
}

size_t FutexRing::consume(uint64_t tag) {
  // The eventfd first: a completion posted after this read signals it again.
  uint64_t count;
  while (::read(event_fd_, &count, sizeof count) < 0 && errno == EINTR) {
  }
  size_t matching = 0;
  uint32_t head = *cq_head_;
  // Acquire: pairs with the kernel's release store of the tail after writing the entries.
  uint32_t tail = load_acquire(cq_tail_);
  for (; head != tail; ++head) {
    const auto& cqe = static_cast<const io_uring_cqe*>(cqes_)[head & cq_mask_];
    if (cqe.user_data == tag) ++matching;
  }
  // Release: pairs with the kernel's acquire load of the head; we are done reading the slots.
  store_release(cq_head_, head);
  return matching;
}

}  // namespace shmstream::shm
