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
// A busy-polling reader re-checks state, cancellation and its deadline every this many polls.
constexpr int kPollsPerCheck = 4096;
// A producer switches its commits to the light barrier after this many commits in a row that
// woke no reader (it is streaming), and back to the fence at a commit that wakes a reader fewer
// than this many commits after the previous wake-up (readers sleep often: their heavy barriers
// would cost more than the fences, and delay their wake-ups).
constexpr uint32_t kQuietCommitsBeforeLight = 64;

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
  uint64_t ring = ring_capacity_for(params.ring_capacity);
  if (params.ring_capacity > kMaxRingCapacity) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream \"{}\": ring capacity {} is out of range (1 to {})",
                              params.name, params.ring_capacity, kMaxRingCapacity));
  }
  if (ring == 0 && (params.max_data_size == 0 || params.max_data_size > kMaxDataSizeLimit)) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream \"{}\": maximum size {} is out of range (1 to {})",
                              params.name, params.max_data_size, kMaxDataSizeLimit));
  }
  if (params.block_when_full && ring == 0) {
    return Status(
        ErrorCode::kInvalidArgument,
        fmt::format("stream \"{}\": only a ring can block its producer when full", params.name));
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
  // A ring's data is its capacity, allocated now; its offsets grow without limit.
  header->max_data_size = ring != 0 ? ring : params.max_data_size;
  header->ring_capacity = ring;
  header->stream_id = params.stream_id;
  header->created_unix_ns =
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count());
  header->producer_pid = params.producer_pid;
  header->producer_uid = params.producer_uid;
  header->origin_offset = params.origin_offset;
  header->resume_grace_ms = params.resume_grace_ms;
  current_boot_id(header->boot_id);
  header->name_length = static_cast<uint32_t>(params.name.size());
  header->flags =
      (params.records ? kFlagRecords : 0) | (params.block_when_full ? kFlagBlockWhenFull : 0);
  std::memcpy(header->name, params.name.data(), params.name.size());
  header->header_checksum = header_checksum(*header);
  // Relaxed: the fd's hand-over (a socket message) publishes these to other processes.
  header->committed_length.store(0, std::memory_order_relaxed);
  header->wait_word.store(0, std::memory_order_relaxed);
  header->state.store(static_cast<uint32_t>(StreamState::kOpen), std::memory_order_relaxed);
  header->oldest_offset.store(0, std::memory_order_relaxed);
  header->data_file_size.store(0, std::memory_order_relaxed);
  header->resumed_pid.store(0, std::memory_order_relaxed);
  Status status;
  if (ring != 0) {
    // fallocate, not ftruncate: on tmpfs it reserves the pages, so a full file system fails
    // here and not with a SIGBUS on the producer's first write.
    int rc = fallocate(fd, 0, kHeaderSize, static_cast<off_t>(ring));
    if (rc != 0 && errno == EOPNOTSUPP) rc = ftruncate(fd, static_cast<off_t>(kHeaderSize + ring));
    if (rc != 0) {
      int err = errno;
      status = Status(err == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kIo,
                      fmt::format("stream \"{}\": allocating its {}-byte ring: {}", params.name,
                                  ring, errno_text(err)));
    } else {
      header->data_file_size.store(ring, std::memory_order_relaxed);  // as above
    }
  }
  munmap(base, kHeaderSize);
  return status;
}

uint64_t ring_capacity_for(uint64_t requested) {
  return (requested + kRingGranule - 1) / kRingGranule * kRingGranule;
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
  if ((header.flags & ~kKnownFlags) != 0) {
    return Status(ErrorCode::kCorrupt, fmt::format("corrupt segment: flags {:#x}", header.flags));
  }
  const uint64_t ring = header.ring_capacity;
  if (ring != 0 &&
      (ring % kRingGranule != 0 || ring > kMaxRingCapacity || header.max_data_size != ring)) {
    return Status(ErrorCode::kCorrupt, fmt::format("corrupt segment: ring capacity {}", ring));
  }
  if (ring == 0 && (header.flags & kFlagBlockWhenFull) != 0) {
    return Status(ErrorCode::kCorrupt, "corrupt segment: a blocking stream that is not a ring");
  }
  // Acquire: pairs with the producer's release stores; committed is loaded first, so the
  // data_file_size loaded after it is at least as new (the producer grows before committing).
  // A ring's oldest_offset is loaded between two loads of committed that must agree, so that
  // the pair is one the producer really published (it moves oldest before committing).
  uint64_t committed = header.committed_length.load(std::memory_order_acquire);
  uint64_t oldest = 0;
  for (int tries = 0; tries < 1000; ++tries) {
    // Acquire: pairs with the release store in ProducerCore::make_room().
    oldest = header.oldest_offset.load(std::memory_order_acquire);
    uint64_t again = header.committed_length.load(std::memory_order_acquire);  // as above
    if (again == committed) break;
    committed = again;
  }
  uint64_t data_size = header.data_file_size.load(std::memory_order_acquire);
  uint32_t state = header.state.load(std::memory_order_acquire);
  if (!valid_state(state)) {
    return Status(ErrorCode::kCorrupt, fmt::format("corrupt segment: state {}", state));
  }
  if (ring != 0) {
    // A ring's whole data region is allocated at creation; its offsets grow without limit.
    if (data_size != ring || file_size - kHeaderSize < ring || oldest > committed ||
        committed - oldest > ring) {
      return Status(ErrorCode::kCorrupt,
                    fmt::format("corrupt ring: capacity {}, {} allocated, file holds {} data "
                                "bytes, offsets {} to {}",
                                ring, data_size, file_size - kHeaderSize, oldest, committed));
    }
  } else if (oldest != 0 || committed > data_size || data_size > header.max_data_size ||
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
  // The sizes that decide the mapping's shape come from a pread of the header's first bytes,
  // not from a temporary mapping: unmapping one costs a TLB shoot-down across the process's
  // threads, which in a VM was most of an open's time. Validation then runs on the real mapping.
  auto truncated = [&](int64_t size) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("truncated segment: {} bytes, smaller than the {}-byte header", size,
                            kHeaderSize));
  };
  std::byte prefix[32];
  ssize_t got = pread(fd, prefix, sizeof(prefix), 0);
  if (got < 0)
    return fail(ErrorCode::kIo, fmt::format("reading the header: {}", errno_text(errno)));
  if (static_cast<size_t>(got) < sizeof(prefix)) return truncated(got);
  uint64_t magic = 0;
  uint64_t max_data_size = 0;
  uint64_t ring = 0;
  std::memcpy(&magic, prefix + offsetof(SegmentHeader, magic), sizeof(magic));
  std::memcpy(&max_data_size, prefix + offsetof(SegmentHeader, max_data_size),
              sizeof(max_data_size));
  std::memcpy(&ring, prefix + offsetof(SegmentHeader, ring_capacity), sizeof(ring));
  if (magic != kMagic) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("not a shmstream segment (magic {:#018x})", magic));
  }
  // Bounds first: the mapping's length is computed from these before the checksum is checked.
  if (max_data_size == 0 || max_data_size > kMaxDataSizeLimit || ring > kMaxRingCapacity ||
      ring % kRingGranule != 0) {
    return fail(
        ErrorCode::kCorrupt,
        fmt::format("corrupt segment: maximum size {}, ring capacity {}", max_data_size, ring));
  }

  Segment segment;
  int prot = access == Access::kReadWrite ? PROT_READ | PROT_WRITE : PROT_READ;
  void* base = nullptr;
  if (extent == MapExtent::kWhole && ring != 0) {
    // Header and ring, then the ring again right after: [o, o + n) for any n <= capacity is
    // contiguous at data + o % capacity. Reserve the whole range first, then map over it.
    segment.length_ = kHeaderSize + 2 * ring;
    base = mmap(nullptr, segment.length_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                -1, 0);
    auto* bytes = static_cast<std::byte*>(base);
    if (base != MAP_FAILED &&
        (mmap(bytes, kHeaderSize + ring, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
         mmap(bytes + kHeaderSize + ring, ring, prot, MAP_SHARED | MAP_FIXED, fd, kHeaderSize) ==
             MAP_FAILED)) {
      int err = errno;
      munmap(base, segment.length_);
      errno = err;
      base = MAP_FAILED;
    }
  } else {
    segment.length_ = extent == MapExtent::kWhole ? kHeaderSize + max_data_size : kHeaderSize;
    base = mmap(nullptr, segment.length_, prot, MAP_SHARED | MAP_NORESERVE, fd, 0);
  }
  if (base == MAP_FAILED) {
    int err = errno;
    return fail(err == EACCES ? ErrorCode::kPermissionDenied : ErrorCode::kIo,
                fmt::format("mapping {} bytes: {}", segment.length_, errno_text(err)));
  }
  segment.base_ = static_cast<std::byte*>(base);
  // fstat comes after the mmap and before validation reads the sizes; a concurrent producer
  // only grows the file, so a size check against this st_size stays conservative.
  struct stat st {};
  if (fstat(fd, &st) != 0) return fail(ErrorCode::kIo, fmt::format("fstat: {}", errno_text(errno)));
  // Checked before the header is read through the mapping: past the file's end is SIGBUS.
  if (static_cast<uint64_t>(st.st_size) < kHeaderSize) return truncated(st.st_size);
  const SegmentHeader& header = segment.header();
  if (Status status = validate_header(header, static_cast<uint64_t>(st.st_size)); !status.ok()) {
    return Status(status.code(), fmt::format("{}: {}", what, status.message()));
  }
  // The identity fields are immutable once published; a mismatch means they were rewritten.
  if (header.max_data_size != max_data_size || header.ring_capacity != ring) {
    return fail(ErrorCode::kCorrupt, "corrupt segment: its header changed while being opened");
  }
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

uint32_t producer_pid_now(const SegmentHeader& header) {
  // Relaxed: resumed_pid publishes nothing; it only names the producer (layout.hpp).
  uint32_t resumed = header.resumed_pid.load(std::memory_order_relaxed);
  return resumed != 0 ? resumed : header.producer_pid;
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

void current_boot_id(std::byte (&out)[16]) {
  std::memset(out, 0, sizeof(out));
  int fd = ::open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char text[64] = {};
  ssize_t n = ::read(fd, text, sizeof(text) - 1);
  ::close(fd);
  size_t byte = 0;
  int half = -1;
  for (ssize_t i = 0; i < n && byte < sizeof(out); ++i) {
    char c = text[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) continue;  // dashes, newline
    if (half < 0) {
      half = v;
    } else {
      out[byte++] = static_cast<std::byte>(half << 4 | v);
      half = -1;
    }
  }
}

bool created_this_boot(const SegmentHeader& header) {
  std::byte now[16];
  current_boot_id(now);
  return std::memcmp(now, header.boot_id, sizeof(now)) == 0;
}

Status format_wait_page(int fd, uint64_t stream_id, uint32_t max_readers) {
  if (max_readers == 0 || max_readers > kMaxReadersLimit) {
    return Status(
        ErrorCode::kInvalidArgument,
        fmt::format("maximum readers {} is out of range (1 to {})", max_readers, kMaxReadersLimit));
  }
  const uint64_t size = wait_file_size(max_readers);
  if (ftruncate(fd, static_cast<off_t>(size)) != 0) {
    int err = errno;
    return Status(err == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kIo,
                  fmt::format("sizing the wait file: {}", errno_text(err)));
  }
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return Status(ErrorCode::kIo, fmt::format("mapping the wait file: {}", errno_text(errno)));
  }
  // New and not handed out yet: plain initialisation; the fd's hand-over publishes it. The
  // slots are zero (free) as ftruncate made them.
  auto* page = new (base) WaitPage{};
  page->magic = kWaitMagic;
  page->layout_version = kLayoutVersion;
  page->max_readers = max_readers;
  page->stream_id = stream_id;
  page->min_wanted.store(kNobody, std::memory_order_relaxed);
  page->space_wanted.store(kNobody, std::memory_order_relaxed);
  munmap(base, size);
  return Status();
}

Result<WaitPageMap> WaitPageMap::map(int fd, uint64_t stream_id, std::string_view what) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < kWaitPageSize) {
    return Status(ErrorCode::kCorrupt, fmt::format("{}: truncated wait file", what));
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return Status(ErrorCode::kIo,
                  fmt::format("{}: mapping the wait file: {}", what, errno_text(errno)));
  }
  WaitPageMap out;
  out.page_ = static_cast<WaitPage*>(base);
  out.length_ = size;
  const WaitPage& page = out.page();
  if (page.magic != kWaitMagic || page.layout_version != kLayoutVersion ||
      page.stream_id != stream_id) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: wait file does not belong to this segment (magic {:#x}, "
                              "version {}, stream id {:#x})",
                              what, page.magic, page.layout_version, page.stream_id));
  }
  if (page.max_readers == 0 || page.max_readers > kMaxReadersLimit ||
      wait_file_size(page.max_readers) != size) {
    return Status(ErrorCode::kCorrupt, fmt::format("{}: wait file of {} bytes for {} readers", what,
                                                   size, page.max_readers));
  }
  return out;
}

WaitPageMap& WaitPageMap::operator=(WaitPageMap&& other) noexcept {
  if (this != &other) {
    if (page_ != nullptr) munmap(page_, length_);
    page_ = std::exchange(other.page_, nullptr);
    length_ = std::exchange(other.length_, 0);
  }
  return *this;
}

WaitPageMap::~WaitPageMap() {
  if (page_ != nullptr) munmap(page_, length_);
}

Result<uint32_t> claim_reader_slot(const WaitPageMap& wait, uint64_t position, uint32_t pid,
                                   std::string_view cursor) {
  if (!cursor.empty()) {
    if (Status s = validate_cursor_name(cursor); !s.ok()) return s;
  }
  WaitPage& page = wait.page();
  for (uint32_t i = 0; i < wait.max_readers(); ++i) {
    ReaderSlot& slot = wait.slot(i);
    // Relaxed: only the daemon (one thread) claims and releases slots.
    if (slot.in_use.load(std::memory_order_relaxed) != 0) continue;
    slot.position.store(position, std::memory_order_relaxed);
    slot.pid = pid;
    slot.cursor = cursor.empty() ? 0 : 1;
    // Relaxed: nobody reads the entries before in_use's release store below hands them out.
    slot.commit_seq.store(0, std::memory_order_relaxed);
    slot.committed[0].position.store(position, std::memory_order_relaxed);
    slot.committed[0].token.store(0, std::memory_order_relaxed);
    slot.name_length = static_cast<uint8_t>(cursor.size());
    std::memset(slot.name, 0, sizeof(slot.name));
    if (!cursor.empty()) std::memcpy(slot.name, cursor.data(), cursor.size());
    // Release: pairs with the producer's acquire load in slowest_reader(); it sees the
    // position stored above with the slot (and a reader the other fields).
    slot.in_use.store(1, std::memory_order_release);
    // Relaxed: a scan bound only; a producer that misses the new slot is caught by the
    // reader's own oldest_offset checks.
    if (page.slots_in_use_hint.load(std::memory_order_relaxed) <= i) {
      page.slots_in_use_hint.store(i + 1, std::memory_order_relaxed);
    }
    return i;
  }
  return Status(ErrorCode::kTooManyReaders,
                fmt::format("all {} reader slots are taken", wait.max_readers()));
}

Status validate_cursor_name(std::string_view name) {
  bool ok = !name.empty() && name.size() <= kMaxCursorNameLength;
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == ':' || c == '@' || c == '-');
  }
  if (ok) return Status();
  return Status(ErrorCode::kInvalidArgument,
                fmt::format("cursor name \"{}\" is invalid: use 1 to {} of A-Z a-z 0-9 . _ : @ -",
                            name.substr(0, 80), kMaxCursorNameLength));
}

std::string_view cursor_name(const ReaderSlot& slot) {
  return std::string_view(slot.name, std::min<size_t>(slot.name_length, kMaxCursorNameLength));
}

CursorPosition cursor_committed(const ReaderSlot& slot) {
  // Acquire: pairs with ReaderCore::commit()'s release store; the entry it names is whole.
  uint32_t seq = slot.commit_seq.load(std::memory_order_acquire);
  const CursorCommit& entry = slot.committed[seq & 1];
  // Relaxed: ordered by the acquire above; the writer only rewrites the other entry next.
  return {entry.position.load(std::memory_order_relaxed),
          entry.token.load(std::memory_order_relaxed)};
}

namespace {

// After the daemon changed a slot (freed it, or moved its hold): wakes a producer waiting for
// room. seq_cst fence: Dekker with the producer's space_wanted store and re-scan: either it
// sees the slot's new value, or we see it waiting and wake it.
void wake_space_waiter(WaitPage& page) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (page.space_wanted.load(std::memory_order_relaxed) != kNobody) {
    // Release: the producer acquire-loads space_word before it scans again.
    page.space_word.fetch_add(1, std::memory_order_release);
    futex_wake_all(&page.space_word, /*shared=*/true);
  }
}

}  // namespace

void settle_cursor_hold(const WaitPageMap& wait, uint32_t index) {
  if (index >= wait.max_readers()) return;
  ReaderSlot& slot = wait.slot(index);
  // Release: as the reader's own store in publish_position() (its reads are long done).
  slot.position.store(cursor_committed(slot).position, std::memory_order_release);
  wake_space_waiter(wait.page());
}

void release_reader_slot(const WaitPageMap& wait, uint32_t index) {
  if (index >= wait.max_readers()) return;
  // Release: pairs with the producer's acquire load; it stops counting this reader.
  wait.slot(index).in_use.store(0, std::memory_order_release);
  wait.slot(index).cursor = 0;  // daemon-only field; the slot is free now
  wake_space_waiter(wait.page());
}

// ---------------------------------------------------------------------------------------------
// Producer

ProducerCore::ProducerCore(Segment segment, WaitPageMap wait)
    : segment_(std::move(segment)), wait_(std::move(wait)) {
  const SegmentHeader& h = segment_.header();
  // Relaxed: only this producer writes these fields.
  committed_ = h.committed_length.load(std::memory_order_relaxed);
  file_size_ = h.data_file_size.load(std::memory_order_relaxed);
  oldest_ = h.oldest_offset.load(std::memory_order_relaxed);
  ring_ = h.ring_capacity;
  mask_ = ring_ != 0 && (ring_ & (ring_ - 1)) == 0 ? ring_ - 1 : 0;
  step_ = std::max<uint64_t>(ring_ / 16, 1);
  records_ = segment_.records();
  light_capable_ = register_light_barriers();
  leave_light_mode();  // a dead producer's flag may linger: start with fenced commits
  if (ring_ != 0) {
    // The ring is allocated; map all of it now rather than one page fault at a time: both
    // views of it (a record that wraps is written through the second).
    madvise(segment_.mutable_data(), 2 * ring_, MADV_POPULATE_WRITE);
  }
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

Status ProducerCore::check_kind(bool records) const {
  if (segment_.records() == records) return Status();
  return Status(ErrorCode::kInvalidArgument,
                segment_.records()
                    ? segment_.describe() + ": a records stream: publish records, not bytes"
                    : segment_.describe() + ": a byte stream: append bytes, not records");
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
  if (rc != 0 && errno == ENOSPC) {
    // Nearly full: the headroom does not fit, but what this append needs may still.
    target = std::min(max, (data_end + kRingGranule - 1) / kRingGranule * kRingGranule);
    rc = fallocate(segment_.fd(), 0, static_cast<off_t>(kHeaderSize + file_size_),
                   static_cast<off_t>(target - file_size_));
  }
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

uint64_t ProducerCore::slowest_reader() const {
  const WaitPage& page = wait_.page();
  // Relaxed: a scan bound (see claim_reader_slot()).
  uint32_t count =
      std::min(page.slots_in_use_hint.load(std::memory_order_relaxed), wait_.max_readers());
  uint64_t slowest = kNobody;
  for (uint32_t i = 0; i < count; ++i) {
    const ReaderSlot& slot = wait_.slot(i);
    // Acquire: pairs with claim_reader_slot()'s release store (the position comes with it).
    if (slot.in_use.load(std::memory_order_acquire) == 0) continue;
    // Acquire: pairs with the reader's release store in publish_position(): its reads of the
    // bytes below the position are done before we overwrite them.
    slowest = std::min(slowest, slot.position.load(std::memory_order_acquire));
  }
  return slowest;
}

Status ProducerCore::wait_for_readers(uint64_t needed, Clock::time_point deadline,
                                      const Cancellation* cancel) {
  WaitPage& page = wait_.page();
  SegmentHeader& h = segment_.mutable_header();
  Status result;
  for (;;) {
    // Acquire: pairs with the readers' (and daemon's) release fetch_add before a wake-up;
    // loaded before the scan, so a slot that moves after the scan changes the word.
    uint32_t seen_space = page.space_word.load(std::memory_order_acquire);
    // Acquire: pairs with end_stream()'s release increment (a forced removal ends the wait).
    uint32_t seen_state = h.wait_word.load(std::memory_order_acquire);
    if (slowest_reader() >= needed) break;
    if (result = check_open(); !result.ok()) break;
    if (cancel != nullptr && cancel->cancelled()) {
      result =
          Status(ErrorCode::kInterrupted, segment_.describe() + ": wait for readers cancelled");
      break;
    }
    if (deadline != kNoDeadline && Clock::now() >= deadline) {
      result = Status(ErrorCode::kTimeout,
                      fmt::format("{}: timed out waiting for the slowest reader to pass offset {} "
                                  "(it is at {})",
                                  segment_.describe(), needed, slowest_reader()));
      break;
    }
    // Relaxed store + seq_cst fence: Dekker with publish_position()/release_reader_slot():
    // either they see what we want, or the scan below sees their move.
    page.space_wanted.store(needed, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (slowest_reader() >= needed) break;
    FutexWatch watches[3] = {{&page.space_word, seen_space, true},
                             {&h.wait_word, seen_state, true}};
    size_t count = 2;
    if (cancel != nullptr) watches[count++] = {cancel->word(), 0, false};
    futex_wait(std::span(watches, count), deadline);
  }
  // Relaxed: only we write it; a reader that sees a stale value wakes us once, harmlessly.
  page.space_wanted.store(kNobody, std::memory_order_relaxed);
  return result;
}

Status ProducerCore::make_room(uint64_t data_end, Clock::time_point deadline,
                               const Cancellation* cancel) {
  if (data_end - committed_ > ring_) {
    return Status(ErrorCode::kTooLarge,
                  fmt::format("{}: {} bytes do not fit in its ring of {}", segment_.describe(),
                              data_end - committed_, ring_));
  }
  if (data_end <= ring_) return Status();    // not wrapped yet
  const uint64_t needed = data_end - ring_;  // bytes below this get overwritten
  if (needed <= oldest_) return Status();
  // Declare a whole step gone at once (never past what is committed), so that oldest_offset
  // changes rarely.
  uint64_t limit = std::min((needed + step_ - 1) / step_ * step_, committed_);
  if (segment_.block_when_full()) {
    if (Status s = wait_for_readers(needed, deadline, cancel); !s.ok()) return s;
    // Never declare gone what a reader still reads.
    limit = std::max(needed, std::min(limit, slowest_reader()));
  }
  uint64_t oldest = limit;
  if (segment_.records()) {
    // Keep oldest_offset on a frame boundary, so that an overrun reader can resume there:
    // walk the frames we wrote (readers cannot write the segment) up to `needed`, then on
    // while whole frames fit below `limit` (in a blocking ring, the slowest reader's
    // position, itself a boundary).
    oldest = oldest_;
    auto frame_at = [&](uint64_t offset) {
      RecordHeader frame;
      std::memcpy(&frame, at(offset), sizeof(frame));
      return record_frame_size(frame.length);
    };
    while (oldest < needed) oldest += frame_at(oldest);
    for (uint64_t next; oldest < limit && (next = oldest + frame_at(oldest)) <= limit;) {
      oldest = next;
    }
  }
  oldest_ = oldest;
  // Release store: a reader that acquire-loads it sees the committed length it follows.
  // Release fence: the writes into the ring that follow are ordered after the store; a reader
  // that read any of them and then issues an acquire fence sees this value (the seqlock
  // pairing with ReaderCore::intact()).
  segment_.mutable_header().oldest_offset.store(oldest_, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_release);
  return Status();
}

Result<std::span<std::byte>> ProducerCore::reserve(size_t size, Clock::time_point deadline,
                                                   const Cancellation* cancel) {
  if (Status s = check_open(); !s.ok()) return s;
  if (Status s = ring_ != 0 ? make_room(committed_ + size, deadline, cancel)
                            : ensure_file_size(committed_ + size);
      !s.ok()) {
    return s;
  }
  reserved_ = size;
  return std::span<std::byte>(at(committed_), size);
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
  publish_committed(size);
  return Status();
}

void ProducerCore::publish_committed(uint64_t size) {
  committed_ += size;
  SegmentHeader& h = segment_.mutable_header();
  // Release: publishes the bytes written into the reservation; pairs with readers' acquire
  // loads of committed_length.
  h.committed_length.store(committed_, std::memory_order_release);
  // Dekker with the reader's fence (and heavy barrier) in wait_admitted(): orders the store
  // above before the load of min_wanted below, so a reader about to sleep either sees the new
  // length or is seen here. A light barrier when the readers' heavy barrier pays for it.
  if (light_) {
    light_barrier();
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  std::atomic<uint64_t>& min_wanted = wait_.page().min_wanted;
  if (min_wanted.load(std::memory_order_relaxed) > committed_) {  // none to wake
    if (light_) {
      quiet_commits_ = std::min(quiet_commits_ + 1, kQuietCommitsBeforeLight);
    } else if (light_capable_ && ++quiet_commits_ >= kQuietCommitsBeforeLight) {
      enter_light_mode();
    }
    return;
  }
  // A reader sleeps between our commits more often than once per kQuietCommitsBeforeLight:
  // its heavy barrier before each sleep would cost more than our fences.
  if (light_ && quiet_commits_ < kQuietCommitsBeforeLight) leave_light_mode();
  quiet_commits_ = 0;
  // acq_rel: every registration this erases (also those wanting more than we committed: they
  // wake below and register again) happened-before it, so those readers loaded wait_word
  // before the increment below, and their futex waits cannot sleep through it.
  min_wanted.exchange(kNobody, std::memory_order_acq_rel);
  // Release: a reader that acquire-loads the new value sees the committed length above.
  h.wait_word.fetch_add(1, std::memory_order_release);
  futex_wake_all(&h.wait_word, /*shared=*/true);
}

void ProducerCore::enter_light_mode() {
  // Relaxed store, then a seq_cst fence: Dekker with a reader's fence and load of the flag
  // before it sleeps; a reader that still sees 0 skips its heavy barrier, and it is then
  // ordered before our fence, so our later (light) commits' min_wanted loads see it.
  segment_.mutable_header().light_producer.store(1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  light_ = true;
}

void ProducerCore::leave_light_mode() {
  // A fence, then a release store: a reader that acquire-loads the 0 (and so skips its heavy
  // barrier) sees every commit made before, light ones included; later commits are fenced.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  segment_.mutable_header().light_producer.store(0, std::memory_order_release);
  light_ = false;
}

Status ProducerCore::append(std::span<const std::byte> bytes, Clock::time_point deadline,
                            const Cancellation* cancel) {
  if (Status s = check_kind(false); !s.ok()) return s;
  auto span = reserve(bytes.size(), deadline, cancel);
  if (!span.ok()) return span.status();
  if (!bytes.empty()) std::memcpy(span->data(), bytes.data(), bytes.size());
  return commit(bytes.size());
}

Result<std::span<std::byte>> ProducerCore::reserve_record(size_t max_length,
                                                          Clock::time_point deadline,
                                                          const Cancellation* cancel) {
  if (Status s = check_kind(true); !s.ok()) return s;
  if (max_length > kMaxRecordLength) {
    return Status(ErrorCode::kTooLarge, fmt::format("{}: a record of {} bytes is over the limit",
                                                    segment_.describe(), max_length));
  }
  auto span = reserve(record_frame_size(max_length), deadline, cancel);
  if (!span.ok()) return span.status();
  record_reserved_ = max_length;
  return span->subspan(sizeof(RecordHeader), max_length);
}

Status ProducerCore::commit_record(size_t length) {
  if (reserved_ == 0 || length > record_reserved_) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{}: commit of a {}-byte record exceeds the {} reserved",
                              segment_.describe(), length, reserved_ == 0 ? 0 : record_reserved_));
  }
  RecordHeader frame{static_cast<uint32_t>(length), ~static_cast<uint32_t>(length)};
  std::memcpy(at(committed_), &frame, sizeof(frame));  // plain: published by commit()
  return commit(record_frame_size(length));
}

Status ProducerCore::publish(std::span<const std::byte> payload, Clock::time_point deadline,
                             const Cancellation* cancel) {
  // The common case, with nothing to check but the state: room without growing or overwriting
  // anything a reader might still hold. Small records cost no more than copying them.
  const uint64_t frame_size = record_frame_size(payload.size());
  if (records_ && payload.size() <= kMaxRecordLength && fits_without_work(frame_size) &&
      load_state(segment_.header()) == StreamState::kOpen) {
    std::byte* frame = at(committed_);
    RecordHeader header{static_cast<uint32_t>(payload.size()),
                        ~static_cast<uint32_t>(payload.size())};
    std::memcpy(frame, &header, sizeof(header));  // plain: published by publish_committed()
    if (!payload.empty()) std::memcpy(frame + sizeof(header), payload.data(), payload.size());
    reserved_ = 0;
    publish_committed(frame_size);
    return Status();
  }
  auto span = reserve_record(payload.size(), deadline, cancel);
  if (!span.ok()) return span.status();
  if (!payload.empty()) std::memcpy(span->data(), payload.data(), payload.size());
  return commit_record(payload.size());
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

ReaderCore::ReaderCore(Segment segment, WaitPageMap wait, int slot)
    : segment_(std::move(segment)),
      wait_(std::move(wait)),
      describe_(segment_.describe()),
      max_data_size_(segment_.header().max_data_size),
      ring_(segment_.header().ring_capacity),
      mask_(ring_ != 0 && (ring_ & (ring_ - 1)) == 0 ? ring_ - 1 : 0),
      step_(std::max<uint64_t>(ring_ / 16, 1)),
      block_ring_(segment_.block_when_full()) {
  if (slot >= 0 && static_cast<uint32_t>(slot) < wait_.max_readers()) {
    slot_ = &wait_.slot(static_cast<uint32_t>(slot));
    // Relaxed: our own slot; the daemon stored it before handing it to us.
    published_ = slot_->position.load(std::memory_order_relaxed);
    // A new reader starts where the daemon claimed its slot: the oldest offset still kept
    // (a ring that wrapped before we joined has lost offset 0).
    position_ = published_;
    if (slot_->cursor != 0) {
      cursor_ = true;
      CursorPosition committed = cursor_committed(*slot_);
      cursor_position_ = committed.position;
      cursor_token_ = committed.token;
      position_ = committed.position;  // a named cursor resumes where it committed
      fresh_ = false;
    }
  }
  if (ring_ != 0) {
    // Fault the ring's pages in now (both views), not one by one on the first pass: the
    // ring is allocated in full and bounded, and a page fault costs more than a 4 KiB read.
    madvise(const_cast<std::byte*>(segment_.data()), 2 * ring_, MADV_POPULATE_READ);
  }
}

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
                                                          producer_pid_now(segment_.header())));
    case StreamState::kCancelled:
      return Status(ErrorCode::kCancelled, describe_ + ": cancelled (removed by force)");
    case StreamState::kOpen:
      break;
  }
  return Status();
}

Status ReaderCore::check_readable(uint64_t committed, StreamState state) const {
  if (state == StreamState::kCancelled) return ended_status(state);
  if (ring_ == 0 && committed > max_data_size_) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: committed length {} beyond the segment's maximum {}", describe_,
                              committed, max_data_size_));
  }
  return Status();
}

uint64_t ReaderCore::oldest() const {
  // Acquire: pairs with make_room()'s release store.
  return ring_ != 0 && segment_.valid()
             ? segment_.header().oldest_offset.load(std::memory_order_acquire)
             : 0;
}

bool ReaderCore::intact(uint64_t offset) const {
  if (ring_ == 0) return true;
  // Acquire fence after our reads of the ring, then the load: pairs with the release fence in
  // make_room(). If a read saw a byte the producer wrote after moving oldest_offset past
  // `offset`, this load sees that move (a seqlock's read side).
  std::atomic_thread_fence(std::memory_order_acquire);
  return offset >= segment_.header().oldest_offset.load(std::memory_order_relaxed);
}

Status ReaderCore::overrun(uint64_t offset) const {
  uint64_t oldest = this->oldest();
  return Status(ErrorCode::kOverrun,
                fmt::format("{}: overrun: offset {} was overwritten; the oldest available is {}",
                            describe_, offset, oldest),
                oldest);
}

Status ReaderCore::check_intact(uint64_t offset) const {
  return intact(offset) ? Status() : overrun(offset);
}

void ReaderCore::publish_position(uint64_t position, bool now) {
  if (slot_ == nullptr) return;
  // A named cursor holds the producer back at its committed position, not where it reads.
  if (cursor_) position = cursor_position_;
  if (position == published_) return;
  if (!now && position > published_ && position - published_ < step_) return;
  store_position(position);
}

void ReaderCore::write_commit(uint64_t position, uint64_t token) {
  // Relaxed: only this reader writes its slot's entries and sequence.
  uint32_t seq = slot_->commit_seq.load(std::memory_order_relaxed);
  CursorCommit& entry = slot_->committed[(seq + 1) & 1];
  entry.position.store(position, std::memory_order_relaxed);
  entry.token.store(token, std::memory_order_relaxed);
  // Release: pairs with cursor_committed()'s acquire load; the entry above is whole first.
  slot_->commit_seq.store(seq + 1, std::memory_order_release);
  cursor_position_ = position;
  cursor_token_ = token;
}

void ReaderCore::commit_delivered() {
  if (!cursor_ || !delivered_ || position_ == cursor_position_) return;
  write_commit(position_, cursor_token_);
  // The hold follows lazily (before sleeping and on close it is exact): a hold behind the
  // commit only keeps a few more bytes.
  publish_position(position_, /*now=*/false);
}

Status ReaderCore::commit(uint64_t position, uint64_t token) {
  if (!cursor_) {
    return Status(ErrorCode::kInvalidArgument, describe_ + ": commit needs a named cursor");
  }
  if (position == cursor_position_ && token == cursor_token_) return Status();
  OpGuard guard(this);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  if (position > committed()) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("{}: cannot commit offset {} beyond the committed length {}",
                              describe_, position, committed()));
  }
  write_commit(position, token);
  // An explicit commit moves the hold at once: the caller may not read (and so publish) again.
  publish_position(position, /*now=*/true);
  return Status();
}

void ReaderCore::store_position(uint64_t position) {
  const uint64_t before = published_;
  published_ = position;
  // Release: pairs with slowest_reader()'s acquire load; our reads of the bytes below the
  // position happen before the producer overwrites them.
  slot_->position.store(position, std::memory_order_release);
  if (!block_ring_) return;
  // Dekker with wait_for_readers(): our store above is ordered before the load below, so
  // either the producer's re-scan sees it or we see what it waits for.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint64_t wanted = wait_.page().space_wanted.load(std::memory_order_relaxed);
  if (wanted != kNobody && before < wanted && wanted <= position) {
    // Release: the producer acquire-loads space_word before scanning again.
    wait_.page().space_word.fetch_add(1, std::memory_order_release);
    futex_wake_all(&wait_.page().space_word, /*shared=*/true);
  }
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
  delivered_ = false;
  fresh_ = false;
  OpGuard guard(this);
  if (guard.admitted()) publish_position(position_, /*now=*/true);
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
      // A producer waiting for room in a blocking ring must see how far we got before we spin.
      // Relaxed: a hint only; before sleeping we publish under the Dekker protocol below.
      if (block_ring_ && wait_.page().space_wanted.load(std::memory_order_relaxed) != kNobody) {
        publish_position(position_, /*now=*/true);
      }
      // Busy-poll: re-read the length (acquire, as above) until it moves, checking state,
      // cancellation, close and the deadline (in the outer loop) every 4096 polls.
      // (Without the spin strategy we do not poll before sleeping: measured, polling costs a
      // streaming producer the cache line it commits to, and a ping-pong several microseconds.)
      for (int i = 0; i < kPollsPerCheck; ++i) {
        if (h.committed_length.load(std::memory_order_acquire) >= target) break;
        cpu_relax();
      }
      continue;
    }
    // A blocking ring's producer may wait for us: show it how far we got before we sleep.
    publish_position(position_, /*now=*/true);
    FutexWatch cancelled{nullptr, 0, false};
    if (cancel != nullptr) cancelled = {cancel->word(), 0, false};
    sleep_for_commit(target, seen, deadline, cancelled);
  }
}

void ReaderCore::sleep_for_commit(uint64_t target, uint32_t seen, Clock::time_point deadline,
                                  FutexWatch also) {
  const SegmentHeader& h = segment_.header();
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
  // A light producer has no fence there: make it execute one now (asymmetric Dekker). If we
  // cannot, sleep in short slices so that a missed wake-up costs at most one slice.
  // Acquire: pairs with leave_light_mode()'s release store (a 0 read here means every light
  // commit is visible to the re-check below); a 1 is Dekker with enter_light_mode()'s fence.
  Clock::time_point sleep_until = deadline;
  if (h.light_producer.load(std::memory_order_acquire) != 0 && !heavy_barrier()) {
    sleep_until = std::min(deadline, Clock::now() + std::chrono::milliseconds(1));
  }
  // Acquire: pairs with commit()'s release store.
  if (h.committed_length.load(std::memory_order_acquire) >= target) return;
  FutexWatch watches[3] = {{&h.wait_word, seen, true}, {&closing_, 0, false}};
  size_t count = 2;
  if (also.word != nullptr) watches[count++] = also;
  futex_wait(std::span(watches, count), sleep_until);
}

ReaderCore::WatchResult ReaderCore::watch(uint64_t target, const std::atomic<uint32_t>* word,
                                          uint32_t seen) {
  OpGuard guard(this);
  if (!guard.admitted()) return WatchResult::kClosed;
  const SegmentHeader& h = segment_.header();
  for (;;) {
    // Acquire loads as in wait_admitted(): the wait word first, then the length and state.
    uint32_t seen_word = h.wait_word.load(std::memory_order_acquire);
    if (h.committed_length.load(std::memory_order_acquire) >= target) return WatchResult::kReady;
    if (load_state(h) != StreamState::kOpen) return WatchResult::kReady;
    // Acquire: pairs with the owner's release increment of *word (its new target is visible).
    if (word->load(std::memory_order_acquire) != seen) return WatchResult::kRearmed;
    if (closing_.load(std::memory_order_acquire) != 0) return WatchResult::kClosed;
    sleep_for_commit(target, seen_word, kNoDeadline, FutexWatch{word, seen, false});
  }
}

void ReaderCore::publish_position_now() {
  OpGuard guard(this);
  if (guard.admitted()) publish_position(position_, /*now=*/true);
}

Result<size_t> ReaderCore::read_at(uint64_t offset, std::span<std::byte> buf,
                                   Clock::time_point deadline, const Cancellation* cancel) {
  if (buf.empty()) return Status(ErrorCode::kInvalidArgument, describe_ + ": empty buffer");
  OpGuard guard(this);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  Status s = wait_admitted(offset + 1, deadline, cancel);
  if (s.code() == ErrorCode::kEndOfStream) return size_t{0};
  if (!s.ok()) return s;
  if (Status s = check_intact(offset); !s.ok()) return s;
  size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), committed() - offset));
  std::memcpy(buf.data(), at(offset), n);
  // Checked after the copy too: the producer may have overwritten the bytes while we copied.
  if (Status s = check_intact(offset); !s.ok()) return s;
  return n;
}

template <typename Op>
auto ReaderCore::follow_if_fresh(Op op) -> decltype(op()) {
  auto result = op();
  constexpr int kAttempts = 8;  // a producer that laps a ring this often wins: overrun
  for (int i = 0; i < kAttempts && fresh_ && block_ring_ && !result.ok() &&
                  result.status().code() == ErrorCode::kOverrun;
       ++i) {
    {
      OpGuard guard(this);
      if (!guard.admitted()) break;
      position_ = std::max(position_, result.status().offset());
      publish_position(position_, /*now=*/true);
    }
    result = op();
  }
  if (result.ok()) fresh_ = false;
  return result;
}

Result<size_t> ReaderCore::read(std::span<std::byte> buf, Clock::time_point deadline,
                                const Cancellation* cancel) {
  if (auto_commit_) {
    OpGuard guard(this);
    if (guard.admitted()) commit_delivered();
  }
  auto n = follow_if_fresh([&] { return read_at(position_, buf, deadline, cancel); });
  if (n.ok()) {
    position_ += *n;
    delivered_ = true;
    publish_position(position_, /*now=*/false);
  }
  return n;
}

Result<std::span<const std::byte>> ReaderCore::next(size_t max, Clock::time_point deadline,
                                                    const Cancellation* cancel) {
  return follow_if_fresh([&] { return next_once(max, deadline, cancel); });
}

Result<std::span<const std::byte>> ReaderCore::next_once(size_t max, Clock::time_point deadline,
                                                         const Cancellation* cancel) {
  OpGuard guard(this);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  if (auto_commit_) commit_delivered();
  // The previous view is done with: the producer of a blocking ring may reuse it.
  publish_position(position_, /*now=*/false);
  Status s = wait_admitted(position_ + 1, deadline, cancel);
  if (s.code() == ErrorCode::kEndOfStream) return std::span<const std::byte>();
  if (!s.ok()) return s;
  if (Status s = check_intact(position_); !s.ok()) return s;
  size_t n = static_cast<size_t>(std::min<uint64_t>(max, committed() - position_));
  std::span<const std::byte> out(at(position_), n);
  position_ += n;
  delivered_ = true;
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
  if (Status s = check_intact(offset); !s.ok()) return s;
  return std::span<const std::byte>(at(offset), length);
}

Result<std::optional<RecordView>> ReaderCore::next_record(Clock::time_point deadline,
                                                          const Cancellation* cancel) {
  return follow_if_fresh([&] { return next_record_once(deadline, cancel); });
}

Result<std::optional<RecordView>> ReaderCore::next_record_once(Clock::time_point deadline,
                                                               const Cancellation* cancel) {
  if (!segment_.records()) {
    return Status(ErrorCode::kInvalidArgument, describe_ + ": a byte stream has no records");
  }
  OpGuard guard(this);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  if (auto_commit_) commit_delivered();
  // The previous record is done with: the producer of a blocking ring may reuse it.
  publish_position(position_, /*now=*/false);
  uint64_t committed = cached_committed_;
  if (position_ >= committed) {
    Status s = wait_admitted(position_ + 1, deadline, cancel);
    if (s.code() == ErrorCode::kEndOfStream) return std::optional<RecordView>();
    if (!s.ok()) return s;
    committed = cached_committed_ = this->committed();
  }
  RecordHeader frame;
  std::memcpy(&frame, at(position_), sizeof(frame));
  // The frame header is only meaningful if it was not overwritten while we read it.
  if (Status s = check_intact(position_); !s.ok()) return s;
  const uint64_t size = record_frame_size(frame.length);
  if (frame.check != ~frame.length || position_ % kCacheLine != 0 || size > committed - position_) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: no valid record at offset {} (length {}, check {:#x}, "
                              "committed {})",
                              describe_, position_, frame.length, frame.check, committed));
  }
  RecordView out{std::span(at(position_) + sizeof(frame), frame.length), position_};
  position_ += size;
  delivered_ = true;
  return std::optional<RecordView>(out);
}

}  // namespace shmstream::shm
