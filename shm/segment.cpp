#include "shm/segment.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>

namespace shmstream::shm {
namespace {

constexpr uint64_t kMinGrowth = 1ULL << 20;   // file grows by at least 1 MiB
constexpr uint64_t kMaxGrowth = 64ULL << 20;  // and by at most 64 MiB beyond what is needed

std::string errno_text(int err) { return std::strerror(err); }

uint64_t fnv1a(uint64_t hash, const void* bytes, size_t length) {
  const auto* p = static_cast<const unsigned char*>(bytes);
  for (size_t i = 0; i < length; ++i) {
    hash ^= p[i];
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

// Tells the CPU we are spinning (saves power, yields to a hyper-thread sibling).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

bool valid_state(uint32_t raw) {
  return raw >= static_cast<uint32_t>(StreamState::kOpen) &&
         raw <= static_cast<uint32_t>(StreamState::kCancelled);
}

}  // namespace

uint64_t header_checksum(const SegmentHeader& header) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  hash = fnv1a(hash, &header, offsetof(SegmentHeader, header_checksum));
  size_t name_length = std::min<size_t>(header.name_length, kMaxNameLength);
  return fnv1a(hash, header.name, name_length);
}

const char* state_name(StreamState state) {
  switch (state) {
    case StreamState::kOpen:
      return "open";
    case StreamState::kClosed:
      return "closed";
    case StreamState::kAborted:
      return "aborted";
    case StreamState::kCancelled:
      return "cancelled";
  }
  return "invalid";
}

Status format_segment(int fd, const SegmentParams& params) {
  if (params.name.empty() || params.name.size() > kMaxNameLength) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream name of {} bytes: must be 1 to {}", params.name.size(),
                              kMaxNameLength));
  }
  if (params.max_data_size == 0 || params.max_data_size > kMaxDataSizeLimit) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream \"{}\": maximum size {} is out of range (1 to {})",
                              params.name, params.max_data_size, kMaxDataSizeLimit));
  }
  if (ftruncate(fd, kHeaderSize) != 0) {
    int err = errno;
    return Status(
        err == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kIo,
        fmt::format("stream \"{}\": sizing the segment: {}", params.name, errno_text(err)));
  }
  void* base = mmap(nullptr, kHeaderSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return Status(ErrorCode::kIo, fmt::format("stream \"{}\": mapping the new segment: {}",
                                              params.name, errno_text(errno)));
  }
  // The file is new and nobody else has it yet: plain initialisation is race-free.
  auto* header = new (base) SegmentHeader{};
  header->magic = kMagic;
  header->layout_version = kLayoutVersion;
  header->header_size = kHeaderSize;
  header->max_data_size = params.max_data_size;
  header->retention_bytes = 0;
  header->stream_id = params.stream_id;
  header->created_unix_ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  header->producer_pid = params.producer_pid;
  header->producer_uid = params.producer_uid;
  header->name_length = static_cast<uint32_t>(params.name.size());
  header->flags = 0;
  std::memcpy(header->name, params.name.data(), params.name.size());
  header->header_checksum = header_checksum(*header);
  // Relaxed: the fd's hand-over (a socket message) publishes these to other processes.
  header->committed_length.store(0, std::memory_order_relaxed);
  header->wait_word.store(0, std::memory_order_relaxed);
  header->state.store(static_cast<uint32_t>(StreamState::kOpen), std::memory_order_relaxed);
  header->oldest_offset.store(0, std::memory_order_relaxed);
  header->data_file_size.store(0, std::memory_order_relaxed);
  munmap(base, kHeaderSize);
  return Status();
}

Status validate_header(const SegmentHeader& header, uint64_t file_size) {
  if (file_size < kHeaderSize) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("truncated segment: {} bytes, smaller than the {}-byte header",
                              file_size, kHeaderSize));
  }
  if (header.magic != kMagic) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("not a shmstream segment (magic {:#018x})", header.magic));
  }
  if (header.layout_version != kLayoutVersion) {
    return Status(ErrorCode::kVersionMismatch,
                  fmt::format("segment has layout version {}, this build reads version {}",
                              header.layout_version, kLayoutVersion));
  }
  if (header.header_size != kHeaderSize) {
    return Status(ErrorCode::kCorrupt, fmt::format("corrupt segment: header size {}, expected {}",
                                                   header.header_size, kHeaderSize));
  }
  if (header.name_length == 0 || header.name_length > kMaxNameLength) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("corrupt segment: name length {}", header.name_length));
  }
  if (header.header_checksum != header_checksum(header)) {
    return Status(ErrorCode::kCorrupt, "corrupt segment: header checksum mismatch");
  }
  if (header.max_data_size == 0 || header.max_data_size > kMaxDataSizeLimit) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("corrupt segment: maximum size {}", header.max_data_size));
  }
  // Acquire: pairs with the producer's release stores; committed is loaded first, so the
  // data_file_size loaded after it is at least as new (the producer grows before committing).
  uint64_t committed = header.committed_length.load(std::memory_order_acquire);
  uint64_t data_size = header.data_file_size.load(std::memory_order_acquire);
  uint32_t state = header.state.load(std::memory_order_acquire);
  if (!valid_state(state)) {
    return Status(ErrorCode::kCorrupt, fmt::format("corrupt segment: state {}", state));
  }
  if (committed > data_size || data_size > header.max_data_size ||
      data_size > file_size - kHeaderSize) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("truncated segment: committed {} bytes, {} allocated, but the file "
                              "holds {} data bytes",
                              committed, data_size, file_size - kHeaderSize));
  }
  return Status();
}

Result<Segment> Segment::map(int fd, Access access, MapExtent extent, std::string_view what) {
  auto fail = [&](ErrorCode code, std::string_view why) {
    return Status(code, fmt::format("{}: {}", what, why));
  };
  // The header mapping is read-only even for writers: validation must not write.
  void* header_map = mmap(nullptr, kHeaderSize, PROT_READ, MAP_SHARED, fd, 0);
  if (header_map == MAP_FAILED) {
    return fail(ErrorCode::kIo, fmt::format("mapping the header: {}", errno_text(errno)));
  }
  struct stat st {};
  Status status;
  if (fstat(fd, &st) != 0) {
    status = fail(ErrorCode::kIo, fmt::format("fstat: {}", errno_text(errno)));
  } else if (static_cast<uint64_t>(st.st_size) < kHeaderSize) {
    status = fail(ErrorCode::kCorrupt,
                  fmt::format("truncated segment: {} bytes, smaller than the {}-byte header",
                              st.st_size, kHeaderSize));
  } else {
    // fstat comes after the mmap and before validation reads the sizes; a concurrent producer
    // only grows the file, so a size check against this st_size stays conservative.
    status = validate_header(*static_cast<const SegmentHeader*>(header_map),
                             static_cast<uint64_t>(st.st_size));
    if (!status.ok()) status = Status(status.code(), fmt::format("{}: {}", what, status.message()));
  }
  uint64_t max_data_size = static_cast<const SegmentHeader*>(header_map)->max_data_size;
  munmap(header_map, kHeaderSize);
  if (!status.ok()) return status;

  Segment segment;
  segment.length_ = extent == MapExtent::kWhole ? kHeaderSize + max_data_size : kHeaderSize;
  int prot = access == Access::kReadWrite ? PROT_READ | PROT_WRITE : PROT_READ;
  void* base = mmap(nullptr, segment.length_, prot, MAP_SHARED | MAP_NORESERVE, fd, 0);
  if (base == MAP_FAILED) {
    int err = errno;
    return fail(err == EACCES ? ErrorCode::kPermissionDenied : ErrorCode::kIo,
                fmt::format("mapping {} bytes: {}", segment.length_, errno_text(err)));
  }
  segment.base_ = static_cast<std::byte*>(base);
  segment.fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (segment.fd_ < 0) return fail(ErrorCode::kIo, fmt::format("dup: {}", errno_text(errno)));
  return segment;
}

Segment::Segment(Segment&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      length_(std::exchange(other.length_, 0)),
      fd_(std::exchange(other.fd_, -1)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    reset();
    base_ = std::exchange(other.base_, nullptr);
    length_ = std::exchange(other.length_, 0);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

Segment::~Segment() { reset(); }

void Segment::reset() {
  if (base_ != nullptr) munmap(base_, length_);
  if (fd_ >= 0) ::close(fd_);
  base_ = nullptr;
  length_ = 0;
  fd_ = -1;
}

std::string Segment::name() const {
  const SegmentHeader& h = header();
  return std::string(h.name, std::min<size_t>(h.name_length, kMaxNameLength));
}

std::string Segment::describe() const { return fmt::format("stream \"{}\"", name()); }

StreamState load_state(const SegmentHeader& header) {
  // Acquire: pairs with the CAS in end_stream(); a reader that sees the end also sees every
  // commit made before it.
  return static_cast<StreamState>(header.state.load(std::memory_order_acquire));
}

bool end_stream(SegmentHeader& header, StreamState to) {
  uint32_t current = header.state.load(std::memory_order_relaxed);
  for (;;) {
    bool allowed = to == StreamState::kCancelled
                       ? current != static_cast<uint32_t>(StreamState::kCancelled)
                       : current == static_cast<uint32_t>(StreamState::kOpen);
    if (!allowed) return false;
    // acq_rel: publishes every commit before the end (pairs with load_state's acquire).
    if (header.state.compare_exchange_weak(current, static_cast<uint32_t>(to),
                                           std::memory_order_acq_rel, std::memory_order_relaxed)) {
      break;
    }
  }
  // Release: readers that load wait_word (acquire) then state see the new state.
  header.wait_word.fetch_add(1, std::memory_order_release);
  futex_wake_all(&header.wait_word, /*shared=*/true);
  return true;
}

Status format_wait_page(int fd, uint64_t stream_id) {
  if (ftruncate(fd, kWaitPageSize) != 0) {
    return Status(ErrorCode::kIo, fmt::format("sizing the wait page: {}", errno_text(errno)));
  }
  void* base = mmap(nullptr, kWaitPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return Status(ErrorCode::kIo, fmt::format("mapping the wait page: {}", errno_text(errno)));
  }
  // New and not handed out yet: plain initialisation; the fd's hand-over publishes it.
  auto* page = new (base) WaitPage{};
  page->magic = kWaitMagic;
  page->layout_version = kLayoutVersion;
  page->stream_id = stream_id;
  page->min_wanted.store(kNobody, std::memory_order_relaxed);
  munmap(base, kWaitPageSize);
  return Status();
}

Result<WaitPageMap> WaitPageMap::map(int fd, uint64_t stream_id, std::string_view what) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < kWaitPageSize) {
    return Status(ErrorCode::kCorrupt, fmt::format("{}: truncated wait page", what));
  }
  void* base = mmap(nullptr, kWaitPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return Status(ErrorCode::kIo,
                  fmt::format("{}: mapping the wait page: {}", what, errno_text(errno)));
  }
  WaitPageMap out;
  out.page_ = static_cast<WaitPage*>(base);
  const WaitPage& page = out.page();
  if (page.magic != kWaitMagic || page.layout_version != kLayoutVersion ||
      page.stream_id != stream_id) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: wait page does not belong to this segment (magic {:#x}, "
                              "version {}, stream id {:#x})",
                              what, page.magic, page.layout_version, page.stream_id));
  }
  return out;
}

WaitPageMap& WaitPageMap::operator=(WaitPageMap&& other) noexcept {
  if (this != &other) {
    if (page_ != nullptr) munmap(page_, kWaitPageSize);
    page_ = std::exchange(other.page_, nullptr);
  }
  return *this;
}

WaitPageMap::~WaitPageMap() {
  if (page_ != nullptr) munmap(page_, kWaitPageSize);
}

// ---------------------------------------------------------------------------------------------
// Producer

ProducerCore::ProducerCore(Segment segment, WaitPageMap wait)
    : segment_(std::move(segment)), wait_(std::move(wait)) {
  const SegmentHeader& h = segment_.header();
  // Relaxed: only this producer writes these fields.
  committed_ = h.committed_length.load(std::memory_order_relaxed);
  file_size_ = h.data_file_size.load(std::memory_order_relaxed);
}

Status ProducerCore::check_open() const {
  switch (state()) {
    case StreamState::kOpen:
      return Status();
    case StreamState::kClosed:
      return Status(ErrorCode::kStreamClosed, segment_.describe() + ": already closed");
    case StreamState::kAborted:
      return Status(ErrorCode::kStreamClosed, segment_.describe() + ": aborted");
    case StreamState::kCancelled:
      return Status(ErrorCode::kCancelled, segment_.describe() + ": cancelled (removed by force)");
  }
  return Status(ErrorCode::kCorrupt, segment_.describe() + ": invalid state");
}

Status ProducerCore::ensure_file_size(uint64_t data_end) {
  if (data_end <= file_size_) return Status();
  uint64_t max = segment_.header().max_data_size;
  if (data_end > max) {
    return Status(ErrorCode::kTooLarge,
                  fmt::format("{}: appending would reach {} bytes, beyond its maximum of {}",
                              segment_.describe(), data_end, max));
  }
  uint64_t growth = std::clamp(file_size_, kMinGrowth, kMaxGrowth);
  uint64_t target = std::min(max, (data_end + growth + kMinGrowth - 1) / kMinGrowth * kMinGrowth);
  // fallocate, not ftruncate: on tmpfs it reserves the pages now, so a full file system is a
  // clear ENOSPC here instead of a SIGBUS when the page is first written.
  int rc = fallocate(segment_.fd(), 0, static_cast<off_t>(kHeaderSize + file_size_),
                     static_cast<off_t>(target - file_size_));
  if (rc != 0 && errno == EOPNOTSUPP) {
    rc = ftruncate(segment_.fd(), static_cast<off_t>(kHeaderSize + target));
  }
  if (rc != 0) {
    int err = errno;
    return Status(
        err == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kIo,
        fmt::format("{}: growing to {} bytes: {}", segment_.describe(), target, errno_text(err)));
  }
  // Map the new pages now, in one call, instead of one page fault per 4 KiB as the producer
  // first writes them (about 2x fewer cycles; Linux >= 5.14, best effort elsewhere).
  madvise(segment_.mutable_data() + file_size_, target - file_size_, MADV_POPULATE_WRITE);
  file_size_ = target;
  // Release: pairs with the acquire load in validate_header(); the file is already this big.
  segment_.mutable_header().data_file_size.store(file_size_, std::memory_order_release);
  return Status();
}

Result<std::span<std::byte>> ProducerCore::reserve(size_t size) {
  if (Status s = check_open(); !s.ok()) return s;
  if (Status s = ensure_file_size(committed_ + size); !s.ok()) return s;
  reserved_ = size;
  return std::span<std::byte>(segment_.mutable_data() + committed_, size);
}

Status ProducerCore::commit(size_t size) {
  if (size > reserved_) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{}: commit of {} bytes exceeds the {} reserved", segment_.describe(),
                              size, reserved_));
  }
  if (Status s = check_open(); !s.ok()) return s;
  reserved_ = 0;
  if (size == 0) return Status();
  committed_ += size;
  SegmentHeader& h = segment_.mutable_header();
  // Release: publishes the bytes written into the reservation; pairs with readers' acquire
  // loads of committed_length.
  h.committed_length.store(committed_, std::memory_order_release);
  // Dekker with the reader's fence in wait_admitted(): orders the store above before the load
  // of min_wanted below, so a reader about to sleep either sees the new length or is seen here.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  std::atomic<uint64_t>& min_wanted = wait_.page().min_wanted;
  if (min_wanted.load(std::memory_order_relaxed) > committed_) return Status();  // none to wake
  // acq_rel: every registration this erases (also those wanting more than we committed: they
  // wake below and register again) happened-before it, so those readers loaded wait_word
  // before the increment below, and their futex waits cannot sleep through it.
  min_wanted.exchange(kNobody, std::memory_order_acq_rel);
  // Release: a reader that acquire-loads the new value sees the committed length above.
  h.wait_word.fetch_add(1, std::memory_order_release);
  futex_wake_all(&h.wait_word, /*shared=*/true);
  return Status();
}

Status ProducerCore::append(std::span<const std::byte> bytes) {
  auto span = reserve(bytes.size());
  if (!span.ok()) return span.status();
  if (!bytes.empty()) std::memcpy(span->data(), bytes.data(), bytes.size());
  return commit(bytes.size());
}

Status ProducerCore::close() {
  if (end_stream(segment_.mutable_header(), StreamState::kClosed)) return Status();
  return check_open();
}

Status ProducerCore::abort() {
  if (end_stream(segment_.mutable_header(), StreamState::kAborted)) return Status();
  return check_open();
}

// ---------------------------------------------------------------------------------------------
// Reader

// Counts an operation in progress; close() waits until none is. Refuses once close() began.
class ReaderCore::OpGuard {
 public:
  explicit OpGuard(ReaderCore* reader) : reader_(reader) {
    // seq_cst with closing_'s load: either close() sees this operation in active_, or this
    // operation sees closing_ set (Dekker pairing with close()).
    reader_->active_.fetch_add(1, std::memory_order_seq_cst);
    admitted_ = reader_->closing_.load(std::memory_order_seq_cst) == 0;
  }
  ~OpGuard() {
    // Release: pairs with close()'s acquire load; our last touch of the mapping precedes unmap.
    if (reader_->active_.fetch_sub(1, std::memory_order_release) == 1) {
      reader_->active_.notify_all();
    }
  }
  bool admitted() const { return admitted_; }

 private:
  ReaderCore* reader_;
  bool admitted_;
};

ReaderCore::ReaderCore(Segment segment, WaitPageMap wait)
    : segment_(std::move(segment)),
      wait_(std::move(wait)),
      describe_(segment_.describe()),
      max_data_size_(segment_.header().max_data_size) {}

ReaderCore::~ReaderCore() { close(); }

void ReaderCore::close() {
  // seq_cst: see OpGuard. Then wake our own blocked waits (they also watch closing_).
  if (closing_.exchange(1, std::memory_order_seq_cst) == 0) {
    futex_wake_all(&closing_, /*shared=*/false);
  }
  // Acquire: pairs with OpGuard's release decrement; after 0, no operation touches the mapping.
  for (int n = active_.load(std::memory_order_acquire); n != 0;
       n = active_.load(std::memory_order_acquire)) {
    active_.wait(n, std::memory_order_acquire);
  }
  segment_.reset();
}

uint64_t ReaderCore::committed() const {
  // Acquire: pairs with the producer's release store in commit().
  return segment_.valid() ? segment_.header().committed_length.load(std::memory_order_acquire) : 0;
}

StreamState ReaderCore::state() const {
  return segment_.valid() ? load_state(segment_.header()) : StreamState::kCancelled;
}

Status ReaderCore::ended_status(StreamState state) const {
  switch (state) {
    case StreamState::kClosed:
      return Status(ErrorCode::kEndOfStream, describe_ + ": end of stream");
    case StreamState::kAborted:
      return Status(ErrorCode::kProducerDied, fmt::format("{}: producer died (pid {})", describe_,
                                                          segment_.header().producer_pid));
    case StreamState::kCancelled:
      return Status(ErrorCode::kCancelled, describe_ + ": cancelled (removed by force)");
    case StreamState::kOpen:
      break;
  }
  return Status();
}

Status ReaderCore::check_readable(uint64_t committed, StreamState state) const {
  if (state == StreamState::kCancelled) return ended_status(state);
  if (committed > max_data_size_) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: committed length {} beyond the segment's maximum {}", describe_,
                              committed, max_data_size_));
  }
  return Status();
}

Status ReaderCore::seek(int64_t offset, Whence whence) {
  int64_t base = 0;
  if (whence == Whence::kCurrent) base = static_cast<int64_t>(position_);
  if (whence == Whence::kEnd) base = static_cast<int64_t>(committed());
  int64_t target = base + offset;
  if (target < 0) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{}: seek to negative offset {}", describe_, target));
  }
  position_ = static_cast<uint64_t>(target);
  return Status();
}

Status ReaderCore::wait_until(uint64_t target, Clock::time_point deadline,
                              const Cancellation* cancel) {
  OpGuard guard(this);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  return wait_admitted(target, deadline, cancel);
}

Status ReaderCore::wait_admitted(uint64_t target, Clock::time_point deadline,
                                 const Cancellation* cancel) {
  const SegmentHeader& h = segment_.header();
  for (;;) {
    // Acquire: pairs with the release fetch_add in commit()/end_stream(); loaded before the
    // length and state so that a change after these loads changes the word we sleep on.
    uint32_t seen = h.wait_word.load(std::memory_order_acquire);
    // Acquire: pairs with commit()'s release store; bytes below it are readable.
    uint64_t committed = h.committed_length.load(std::memory_order_acquire);
    StreamState state = load_state(h);
    if (Status s = check_readable(committed, state); !s.ok()) return s;
    if (committed >= target) return Status();
    if (state != StreamState::kOpen) return ended_status(state);
    if (cancel != nullptr && cancel->cancelled()) {
      return Status(ErrorCode::kInterrupted, describe_ + ": wait cancelled");
    }
    if (closing_.load(std::memory_order_acquire) != 0) {
      return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
    }
    if (deadline != kNoDeadline && Clock::now() >= deadline) {
      return Status(ErrorCode::kTimeout,
                    fmt::format("{}: timed out waiting for offset {} (committed {})", describe_,
                                target, committed));
    }
    if (spin_) {
      // Busy-poll: re-read the length (acquire, as above) until it moves, checking state,
      // cancellation, close and the deadline (in the outer loop) every 4096 polls.
      for (int i = 0; i < 4096; ++i) {
        if (h.committed_length.load(std::memory_order_acquire) >= target) break;
        cpu_relax();
      }
      continue;
    }
    // Tell the producer the offset we sleep for: min_wanted = min(min_wanted, target).
    std::atomic<uint64_t>& min_wanted = wait_.page().min_wanted;
    uint64_t wanted = min_wanted.load(std::memory_order_relaxed);
    while (target < wanted &&
           !min_wanted.compare_exchange_weak(wanted, target, std::memory_order_seq_cst,
                                             std::memory_order_relaxed)) {
    }
    // Dekker with the producer's fence in commit(): our registration is ordered before the
    // re-check below, so either we see its new length or it sees our offset and wakes us.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Acquire: pairs with commit()'s release store.
    if (h.committed_length.load(std::memory_order_acquire) >= target) continue;
    FutexWatch watches[3] = {{&h.wait_word, seen, true}, {&closing_, 0, false}};
    size_t count = 2;
    if (cancel != nullptr) watches[count++] = {cancel->word(), 0, false};
    futex_wait(std::span(watches, count), deadline);
  }
}

Result<size_t> ReaderCore::read_at(uint64_t offset, std::span<std::byte> buf,
                                   Clock::time_point deadline, const Cancellation* cancel) {
  if (buf.empty()) return Status(ErrorCode::kInvalidArgument, describe_ + ": empty buffer");
  OpGuard guard(this);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  Status s = wait_admitted(offset + 1, deadline, cancel);
  if (s.code() == ErrorCode::kEndOfStream) return size_t{0};
  if (!s.ok()) return s;
  size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), committed() - offset));
  std::memcpy(buf.data(), segment_.data() + offset, n);
  return n;
}

Result<size_t> ReaderCore::read(std::span<std::byte> buf, Clock::time_point deadline,
                                const Cancellation* cancel) {
  auto n = read_at(position_, buf, deadline, cancel);
  if (n.ok()) position_ += *n;
  return n;
}

Result<std::span<const std::byte>> ReaderCore::next(size_t max, Clock::time_point deadline,
                                                    const Cancellation* cancel) {
  OpGuard guard(this);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  Status s = wait_admitted(position_ + 1, deadline, cancel);
  if (s.code() == ErrorCode::kEndOfStream) return std::span<const std::byte>();
  if (!s.ok()) return s;
  size_t n = static_cast<size_t>(std::min<uint64_t>(max, committed() - position_));
  std::span<const std::byte> out(segment_.data() + position_, n);
  position_ += n;
  return out;
}

Result<std::span<const std::byte>> ReaderCore::view(uint64_t offset, size_t length) {
  OpGuard guard(this);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  uint64_t committed = this->committed();
  if (Status s = check_readable(committed, state()); !s.ok()) return s;
  if (offset > committed || length > committed - offset) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{}: view [{}, {}) is beyond the committed length {}", describe_,
                              offset, offset + length, committed));
  }
  return std::span<const std::byte>(segment_.data() + offset, length);
}

}  // namespace shmstream::shm
