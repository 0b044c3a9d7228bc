// shm/segment.hpp — a stream segment: its format, validation and mapping, and the end of a
// stream. The roles that act on a segment live beside it: reader_table.hpp (reader slots and
// cursors), producer_core.hpp, reader_core.hpp. Depends on nothing of shmstream's but status.
//
// Thread-safety: a Segment is a value owned by one object; its const methods may be called
// from any thread while nobody resets or moves it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "shm/authenticator.hpp"
#include "shm/fault_guard.hpp"
#include "shm/layout.hpp"
#include "shmstream/status.hpp"

namespace shmstream::shm {

// Largest reservation a segment may declare (and so the largest unbounded stream).
inline constexpr uint64_t kMaxDataSizeLimit = 1ULL << 40;  // 1 TiB
// Default reservation when the creator names none.
inline constexpr uint64_t kDefaultMaxDataSize = 16ULL << 30;  // 16 GiB
// Rings: capacities are multiples of this (the page size), from one page to kMaxRingCapacity.
inline constexpr uint64_t kRingGranule = 4096;
inline constexpr uint64_t kMaxRingCapacity = kMaxDataSizeLimit / 2;  // mapped twice

const char* state_name(StreamState state);  // "open", "closed", "aborted", "cancelled"

// What a new segment holds.
struct SegmentParams {
  std::string name;
  uint64_t max_data_size = kDefaultMaxDataSize;  // unbounded streams; ignored for rings
  uint64_t ring_capacity = 0;    // 0 = unbounded; else rounded up to a multiple of kRingGranule
  bool block_when_full = false;  // ring: the producer waits for the slowest reader
  bool records = false;
  uint64_t stream_id = 0;
  uint32_t producer_pid = 0;
  uint32_t producer_uid = 0;
  uint64_t origin_offset = 0;      // see layout.hpp
  uint32_t resume_grace_ms = 0;    // see layout.hpp
  uint32_t stall_limit_ms = 0;     // see layout.hpp (block rings)
  std::string daemon_socket;       // see layout.hpp; at most kMaxSocketPathLength bytes
  const DaemonKey* key = nullptr;  // the daemon's: signs the header (null: zero authenticator)
};

// Makes an empty file (fd open read-write) a fresh, open segment with no data. A ring's data
// is allocated here, so that a full file system fails the creation, not a later append.
Status format_segment(int fd, const SegmentParams& params);
// Allocates the pages of [offset, offset + length) of the file (fallocate; growing it if
// shorter), so that touching them later cannot fault on a full file system: kNoSpace now
// instead. Where fallocate is not supported, only sizes the file.
Status reserve_file(int fd, uint64_t offset, uint64_t length);
// The kernel's boot id (16 bytes of /proc/sys/kernel/random/boot_id; zero if unreadable).
void current_boot_id(std::byte (&out)[16]);
// Whether the segment was created since the machine last booted (its producer_pid is then a
// process of this boot).
bool created_this_boot(const SegmentHeader& header);
// The capacity a ring of `requested` bytes gets (rounded up to kRingGranule).
uint64_t ring_capacity_for(uint64_t requested);

// Checks a header as found in a file of `file_size` bytes. Pure: safe on any bytes.
Status validate_header(const SegmentHeader& header, uint64_t file_size);

enum class Access { kReadOnly, kReadWrite };
enum class MapExtent { kHeaderOnly, kWhole };

// A validated mapping of a segment file. Owns a duplicate of the fd and the mapping.
class Segment {
 public:
  // Validates the segment behind `fd` and maps it. `what` names it in messages (the stream).
  static Result<Segment> map(int fd, Access access, MapExtent extent, std::string_view what);

  Segment() = default;
  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  ~Segment();

  bool valid() const { return base_ != nullptr; }
  void reset();  // unmaps and closes

  const SegmentHeader& header() const { return *reinterpret_cast<const SegmentHeader*>(base_); }
  // The writable header; only through a read-write mapping (the producer's, the daemon's).
  SegmentHeader& mutable_header() { return *reinterpret_cast<SegmentHeader*>(base_); }
  const std::byte* data() const { return base_ + kHeaderSize; }
  std::byte* mutable_data() { return base_ + kHeaderSize; }
  // Geometry and kind, as validated when mapped (kept here, not re-read from shared memory).
  uint64_t ring_capacity() const { return ring_capacity_; }
  uint64_t max_data_size() const { return max_data_size_; }
  bool records() const { return (flags_ & kFlagRecords) != 0; }
  bool block_when_full() const { return (flags_ & kFlagBlockWhenFull) != 0; }
  uint32_t stall_limit_ms() const { return stall_limit_ms_; }
  // The whole mapping (header + reserved data range).
  std::span<const std::byte> mapping() const { return {base_, length_}; }
  int fd() const { return fd_; }
  // Whether the file shrank under the mapping and a fault was recovered (fault_guard.hpp):
  // from then on the mapping reads zeros, and nothing read through it can be trusted.
  bool faulted() const { return guard_.faulted(); }
  // The name, as validated when mapped (kept here: the shared copy may change since).
  const std::string& name() const { return name_; }
  // `stream "name"` for messages.
  std::string describe() const;

 private:
  std::byte* base_ = nullptr;
  size_t length_ = 0;
  FaultGuard guard_;
  int fd_ = -1;
  uint64_t ring_capacity_ = 0;
  uint64_t max_data_size_ = 0;
  uint32_t flags_ = 0;
  uint32_t stall_limit_ms_ = 0;
  std::string name_;
};

// Ends the stream: kOpen (or a state that is none of the four) -> to (kClosed or kAborted); any
// state but kCancelled -> kCancelled.
// Wakes every reader. Returns false when the state did not allow it (already ended).
bool end_stream(SegmentHeader& header, StreamState to);
// Who records an abort's reason (SegmentHeader::abort_claim).
enum class Claimant : uint32_t { kProducer = 1, kDaemon = 2 };
// Aborts the stream (end_stream(kAborted)) with `why` recorded for its readers, unless someone
// else is recording theirs: the first to claim the header's reason writes it, before the state
// CAS that publishes it. Returns what end_stream returns. A reason claimed by a producer that
// died before its CAS stays as far as it got (readers sanitize it: load_abort_reason).
bool abort_stream(SegmentHeader& header, const AbortReason& why, Claimant who);
// The recorded reason of an aborted stream (call after load_state() saw kAborted): the kind
// (kUnknown if out of range), the code, and the message cut at its NUL or kMaxAbortMessage,
// control bytes replaced by '?'. Hostile bytes give a harmless reason, never a crash. None
// recorded reads as kProducerDied with the producer's pid (as the stream ended before reasons).
AbortReason load_abort_reason(const SegmentHeader& header);
// A successor resumed the stream (still open): the next abort records its own reason.
void clear_abort_claim(SegmentHeader& header);
// A segment whose file lost its tail (a full disk at write-back, a truncation by hand): an
// unbounded stream's header is made to claim only what the file still holds, its committed
// length lowered to the end of the last whole record within it (records streams) and the stream
// ended as aborted (even if it was closed: its readers must not see a clean end where it did
// not end), so that the intact prefix stays readable. Only for a stream nobody writes
// (the daemon's adoption). kCorrupt when the file cannot be cut so (a ring, no header).
struct KeptPrefix {
  uint64_t kept = 0;  // committed bytes still readable
  uint64_t lost = 0;  // committed bytes the file no longer held
};
Result<KeptPrefix> keep_intact_prefix(int fd);
// Wakes every reader sleeping on the stream's wait word (and a producer waiting for room):
// release fetch_add of wait_word, then FUTEX_WAKE.
void wake_readers(SegmentHeader& header);

}  // namespace shmstream::shm
