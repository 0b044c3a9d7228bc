#include "shm/segment.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <new>
#include <utility>

#include "shm/futex.hpp"
#include "shm/posix_error.hpp"

namespace shmstream::shm {
namespace {

uint64_t fnv1a(uint64_t hash, const void* bytes, size_t length) {
  const auto* p = static_cast<const unsigned char*>(bytes);
  for (size_t i = 0; i < length; ++i) {
    hash ^= p[i];
    hash *= 0x100000001b3ULL;
  }
  return hash;
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
  hash = fnv1a(hash, header.name, name_length);
  return fnv1a(hash, header.daemon_socket, sizeof(header.daemon_socket));
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
  if (params.daemon_socket.size() > kMaxSocketPathLength) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("daemon socket path of {} bytes: the limit is {}",
                              params.daemon_socket.size(), kMaxSocketPathLength));
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
  // Allocated first: a full file system is kNoSpace here, for the header as for the ring.
  if (Status s = reserve_file(fd, 0, kHeaderSize); !s.ok()) {
    return s.with_context(fmt::format("stream \"{}\": allocating its header", params.name));
  }
  // Built in private memory and written with one pwrite: no mapping of a file its owner may
  // truncate meanwhile (and no mmap/munmap pair, which costs a TLB shoot-down).
  alignas(SegmentHeader) std::byte base[kHeaderSize];
  std::memset(base, 0, sizeof(base));  // reserved bytes and padding are zero, as on a new page
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
  header->stall_limit_ms = params.block_when_full ? params.stall_limit_ms : 0;
  current_boot_id(header->boot_id);
  header->name_length = static_cast<uint32_t>(params.name.size());
  header->flags =
      (params.records ? kFlagRecords : 0) | (params.block_when_full ? kFlagBlockWhenFull : 0);
  std::memcpy(header->name, params.name.data(), params.name.size());
  std::memcpy(header->daemon_socket, params.daemon_socket.data(), params.daemon_socket.size());
  if (params.key != nullptr) {
    const auto mac = header_authenticator(*header, *params.key);
    std::memcpy(header->authenticator, mac.data(), mac.size());
  }
  header->header_checksum = header_checksum(*header);
  // Relaxed: the fd's hand-over (a socket message) publishes these to other processes.
  header->committed_length.store(0, std::memory_order_relaxed);
  header->wait_word.store(0, std::memory_order_relaxed);
  header->state.store(static_cast<uint32_t>(StreamState::kOpen), std::memory_order_relaxed);
  header->oldest_offset.store(0, std::memory_order_relaxed);
  header->data_file_size.store(0, std::memory_order_relaxed);
  header->resumed_pid.store(0, std::memory_order_relaxed);
  header->space_wanted.store(kNobody, std::memory_order_relaxed);
  header->space_word.store(0, std::memory_order_relaxed);
  header->stalled_since_ns.store(0, std::memory_order_relaxed);
  Status status;
  if (ring != 0) {
    // Reserved now, so that a full file system fails here and not with a SIGBUS on the
    // producer's first write.
    status = reserve_file(fd, kHeaderSize, ring);
    if (!status.ok()) {
      status = status.with_context(
          fmt::format("stream \"{}\": allocating its {}-byte ring", params.name, ring));
    } else {
      header->data_file_size.store(ring, std::memory_order_relaxed);  // as above
    }
  }
  if (status.ok()) {
    ssize_t written = pwrite(fd, base, kHeaderSize, 0);
    if (written != static_cast<ssize_t>(kHeaderSize)) {
      status =
          written < 0
              ? from_errno(errno, fmt::format("stream \"{}\": writing its header", params.name))
              : Status(ErrorCode::kNoSpace,
                       fmt::format("stream \"{}\": its header was written short", params.name));
    }
  }
  return status;
}

Status reserve_file(int fd, uint64_t offset, uint64_t length) {
  int rc = fallocate(fd, 0, static_cast<off_t>(offset), static_cast<off_t>(length));
  if (rc != 0 && errno == EOPNOTSUPP) {
    // No fallocate (some file systems): at least the size, so that the mapping covers it.
    struct stat st {};
    rc = fstat(fd, &st);
    if (rc == 0 && static_cast<uint64_t>(st.st_size) < offset + length) {
      rc = ftruncate(fd, static_cast<off_t>(offset + length));
    }
  }
  if (rc != 0) return from_errno(errno, fmt::format("reserving {} bytes at {}", length, offset));
  return Status();
}

uint64_t ring_capacity_for(uint64_t requested) {
  return (requested + kRingGranule - 1) / kRingGranule * kRingGranule;
}

namespace {

Status truncated_header(uint64_t file_size) {
  return Status(ErrorCode::kCorrupt,
                fmt::format("truncated segment: {} bytes, smaller than the {}-byte header",
                            file_size, kHeaderSize));
}

// The checks of validate_header(). `file_size()` is called once, after the shared sizes and
// lengths are loaded: a producer grows its file before it publishes a size or a length in it,
// so a size taken after those loads holds them (taken before, it may not, while it grows).
template <typename FileSize>
Status validate(const SegmentHeader& header, FileSize&& file_size_now) {
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
  uint64_t committed = load_committed(header);
  uint64_t oldest = 0;
  for (int tries = 0; tries < 1000; ++tries) {
    oldest = load_oldest(header);
    uint64_t again = load_committed(header);
    if (again == committed) break;
    committed = again;
  }
  uint64_t data_size = load_data_file_size(header);
  // Acquire, as load_state(); loaded raw here because a garbage value must be seen as such.
  uint32_t state = header.state.load(std::memory_order_acquire);
  Result<uint64_t> sized = file_size_now();
  if (!sized.ok()) return sized.status();
  const uint64_t file_size = *sized;
  if (file_size < kHeaderSize) return truncated_header(file_size);
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

}  // namespace

Status validate_header(const SegmentHeader& header, uint64_t file_size) {
  if (file_size < kHeaderSize) return truncated_header(file_size);
  return validate(header, [file_size] { return Result<uint64_t>(file_size); });
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
  if (got < 0) return from_errno(errno, fmt::format("{}: reading the header", what));
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
    return from_errno(err, fmt::format("{}: mapping {} bytes", what, segment.length_));
  }
  segment.base_ = static_cast<std::byte*>(base);
  segment.guard_ = FaultGuard(base, segment.length_, prot);
  // The file's size, by fstat after the mmap: first to check that the header is there before
  // reading it through the mapping (past the file's end is SIGBUS), then again for validation,
  // after it loaded the sizes (a producer may be growing the file meanwhile).
  auto file_size = [&]() -> Result<uint64_t> {
    struct stat st {};
    if (fstat(fd, &st) != 0) return from_errno(errno, fmt::format("{}: fstat", what));
    return static_cast<uint64_t>(st.st_size);
  };
  Result<uint64_t> size = file_size();
  if (!size.ok()) return size.status();
  if (*size < kHeaderSize) return truncated(static_cast<int64_t>(*size));
  const SegmentHeader& header = segment.header();
  if (Status status = validate(header, file_size); !status.ok()) {
    if (status.code() == ErrorCode::kIo) return status;  // fstat's, with its context
    return status.with_context(what);
  }
  // The identity fields are immutable once published; a mismatch means they were rewritten.
  if (header.max_data_size != max_data_size || header.ring_capacity != ring) {
    return fail(ErrorCode::kCorrupt, "corrupt segment: its header changed while being opened");
  }
  segment.fd_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (segment.fd_ < 0) return from_errno(errno, fmt::format("{}: dup", what));
  segment.ring_capacity_ = ring;
  segment.max_data_size_ = max_data_size;
  // Read again after validation (an owner may rewrite them meanwhile): kept consistent with
  // the geometry whatever they say now.
  segment.flags_ = header.flags & (ring != 0 ? kKnownFlags : kKnownFlags & ~kFlagBlockWhenFull);
  segment.stall_limit_ms_ = header.stall_limit_ms;
  segment.name_.assign(header.name, std::min<size_t>(header.name_length, kMaxNameLength));
  return segment;
}

Segment::Segment(Segment&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      length_(std::exchange(other.length_, 0)),
      guard_(std::move(other.guard_)),
      fd_(std::exchange(other.fd_, -1)),
      ring_capacity_(other.ring_capacity_),
      max_data_size_(other.max_data_size_),
      flags_(other.flags_),
      stall_limit_ms_(other.stall_limit_ms_),
      name_(std::move(other.name_)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    reset();
    base_ = std::exchange(other.base_, nullptr);
    length_ = std::exchange(other.length_, 0);
    guard_ = std::move(other.guard_);
    fd_ = std::exchange(other.fd_, -1);
    ring_capacity_ = other.ring_capacity_;
    max_data_size_ = other.max_data_size_;
    flags_ = other.flags_;
    stall_limit_ms_ = other.stall_limit_ms_;
    name_ = std::move(other.name_);
  }
  return *this;
}

Segment::~Segment() { reset(); }

void Segment::reset() {
  guard_.reset();
  if (base_ != nullptr) munmap(base_, length_);
  if (fd_ >= 0) ::close(fd_);
  base_ = nullptr;
  length_ = 0;
  fd_ = -1;
}

std::string Segment::describe() const { return fmt::format("stream \"{}\"", name()); }

Result<KeptPrefix> keep_intact_prefix(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return from_errno(errno, "fstat");
  const auto size = static_cast<uint64_t>(st.st_size);
  if (!S_ISREG(st.st_mode) || size < kHeaderSize) return truncated_header(size);
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return from_errno(errno, "mapping the segment");
  // The file may shrink again while it is read: every access below is guarded.
  FaultGuard guard(base, size, PROT_READ | PROT_WRITE);
  auto* header = static_cast<SegmentHeader*>(base);
  const auto* data = static_cast<const std::byte*>(base) + kHeaderSize;
  const uint64_t held = size - kHeaderSize;
  Result<KeptPrefix> out = Status(ErrorCode::kCorrupt, "a ring cannot be cut to its intact part");
  if (header->ring_capacity == 0 && load_oldest(*header) == 0) {
    const uint64_t committed = load_committed(*header);
    uint64_t keep = std::min(committed, held);
    if ((header->flags & kFlagRecords) != 0) {
      // Only whole records: walk the frames from the start (a frame that is not one ends it).
      uint64_t at = 0;
      while (at + sizeof(RecordHeader) <= keep) {
        RecordHeader frame{};
        std::memcpy(&frame, data + at, sizeof(frame));
        const uint64_t next = at + record_frame_size(frame.length);
        if (frame.check != ~frame.length || next > keep) break;
        at = next;
      }
      keep = at;
    }
    // Release: the header claims no byte the file lacks (readers acquire committed first).
    header->data_file_size.store(std::min(held, header->max_data_size), std::memory_order_release);
    header->committed_length.store(keep, std::memory_order_release);
    // The reason, for its readers (nobody else writes this header now).
    header->abort_claim.store(static_cast<uint32_t>(Claimant::kDaemon), std::memory_order_relaxed);
    header->abort_kind.store(static_cast<uint32_t>(AbortKind::kTruncated),
                             std::memory_order_relaxed);
    if (keep < committed) {
      // It did not end where it says: readers must not see a clean end. Release, as
      // end_stream(); a closed state is replaced only here, before any reader maps the file.
      header->state.store(static_cast<uint32_t>(StreamState::kAborted), std::memory_order_release);
    } else {
      end_stream(*header, StreamState::kAborted);  // an open stream with no producer
    }
    out = KeptPrefix{keep, committed - keep};
  }
  const bool faulted = guard.faulted();
  guard.reset();
  munmap(base, size);
  if (faulted) return Status(ErrorCode::kCorrupt, "the file shrank again while being cut");
  return out;
}

bool end_stream(SegmentHeader& header, StreamState to) {
  uint32_t current = header.state.load(std::memory_order_relaxed);
  for (;;) {
    // A state that is none of the four (an owner scribbled it, or the file shrank under it)
    // ends like an open one: its readers must wake to find out.
    bool allowed =
        to == StreamState::kCancelled
            ? current != static_cast<uint32_t>(StreamState::kCancelled)
            : current == static_cast<uint32_t>(StreamState::kOpen) || !valid_state(current);
    if (!allowed) return false;
    // acq_rel: publishes every commit before the end (pairs with load_state's acquire).
    if (header.state.compare_exchange_weak(current, static_cast<uint32_t>(to),
                                           std::memory_order_acq_rel, std::memory_order_relaxed)) {
      break;
    }
  }
  wake_readers(header);
  return true;
}

bool abort_stream(SegmentHeader& header, const AbortReason& why, Claimant who) {
  uint32_t nobody = 0;
  // acq_rel: one claimer only; what it writes next is published by end_stream's CAS below.
  if (header.abort_claim.compare_exchange_strong(nobody, static_cast<uint32_t>(who),
                                                 std::memory_order_acq_rel,
                                                 std::memory_order_relaxed) &&
      load_state(header) == StreamState::kOpen) {
    // Relaxed: published by end_stream()'s acq_rel CAS (pairs with load_state()'s acquire).
    header.abort_kind.store(static_cast<uint32_t>(why.kind), std::memory_order_relaxed);
    header.abort_code.store(why.code, std::memory_order_relaxed);
    // Cut on a UTF-8 character boundary.
    size_t length = std::min(why.message.size(), kMaxAbortMessage);
    while (length > 0 && length < why.message.size() &&
           (static_cast<unsigned char>(why.message[length]) & 0xC0) == 0x80) {
      --length;
    }
    std::memset(header.abort_message, 0, sizeof(header.abort_message));
    std::memcpy(header.abort_message, why.message.data(), length);
  }
  return end_stream(header, StreamState::kAborted);
}

AbortReason load_abort_reason(const SegmentHeader& header) {
  AbortReason why;
  // Relaxed: the caller's load_state() acquire (it saw kAborted) pairs with end_stream()'s CAS,
  // after which abort_stream() wrote these.
  why.kind = abort_kind_of(header.abort_kind.load(std::memory_order_relaxed));
  why.code = header.abort_code.load(std::memory_order_relaxed);
  // A copy first: the owner may scribble the shared bytes meanwhile.
  char copy[sizeof(header.abort_message)];
  std::memcpy(copy, header.abort_message, sizeof(copy));
  copy[sizeof(copy) - 1] = '\0';
  why.message = copy;
  for (char& c : why.message) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  if (why.kind == AbortKind::kUnknown && why.message.empty()) {
    // Recorded by nobody: an older release's segment, or a producer killed as it claimed the
    // reason (the daemon then aborts without one). Its producer died, as far as anyone knows.
    why = AbortReason{AbortKind::kProducerDied, static_cast<int32_t>(producer_pid_now(header)), ""};
  }
  return why;
}

void clear_abort_claim(SegmentHeader& header) {
  // Release: orders nothing anyone reads; the claim only arbitrates later aborts.
  header.abort_claim.store(0, std::memory_order_release);
}

void wake_readers(SegmentHeader& header) {
  // Release: pairs with the readers' acquire load of wait_word before they check the length
  // and state: a reader that loads the new value sees what we published before.
  header.wait_word.fetch_add(1, std::memory_order_release);
  futex_wake_all(&header.wait_word, /*shared=*/true);
}

namespace {

void read_boot_id(std::byte (&out)[16]) {
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

}  // namespace

void current_boot_id(std::byte (&out)[16]) {
  // A process lives within one boot: read once (a function-local static: thread-safe).
  static const std::array<std::byte, 16> id = [] {
    std::byte raw[16];
    read_boot_id(raw);
    std::array<std::byte, 16> copy;
    std::memcpy(copy.data(), raw, sizeof(raw));
    return copy;
  }();
  std::memcpy(out, id.data(), sizeof(out));
}

bool created_this_boot(const SegmentHeader& header) {
  std::byte now[16];
  current_boot_id(now);
  return std::memcmp(now, header.boot_id, sizeof(now)) == 0;
}

}  // namespace shmstream::shm
