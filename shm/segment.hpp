// shm/segment.hpp — a stream segment: mapping and validation, the producer core and the
// reader core. Depends on nothing of shmstream's but status and cancellation.
//
// The producer appends at the end and publishes with a release store of committed_length;
// readers acquire-load committed_length and may then read every byte below it (in a ring: and
// at or above oldest_offset, checked again after reading), for as long as they keep their
// mapping. A reader sleeps on the header's wait_word (a futex) when it wants
// bytes that are not committed yet, after telling the producer through the wait page (see
// layout.hpp); the producer wakes sleepers only when one waits for what it committed.
//
// Thread-safety: a ProducerCore is used by one thread at a time. A ReaderCore is used by one
// thread at a time, except close(), which any thread may call while another is blocked in it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "shm/futex.hpp"
#include "shm/layout.hpp"
#include "shmstream/cancellation.hpp"
#include "shmstream/status.hpp"

namespace shmstream::shm {

// Largest reservation a segment may declare (and so the largest unbounded stream).
inline constexpr uint64_t kMaxDataSizeLimit = 1ULL << 40;  // 1 TiB
// Default reservation when the creator names none.
inline constexpr uint64_t kDefaultMaxDataSize = 16ULL << 30;  // 16 GiB
// Rings: capacities are multiples of this (the page size), from one page to kMaxRingCapacity.
inline constexpr uint64_t kRingGranule = 4096;
inline constexpr uint64_t kMaxRingCapacity = kMaxDataSizeLimit / 2;  // mapped twice
// Default number of reader slots in a wait file (readers a stream allows at once).
inline constexpr uint32_t kDefaultMaxReaders = 64;

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
  uint64_t origin_offset = 0;    // see layout.hpp
  uint32_t resume_grace_ms = 0;  // see layout.hpp
};

// Makes an empty file (fd open read-write) a fresh, open segment with no data. A ring's data
// is allocated here, so that a full file system fails the creation, not a later append.
Status format_segment(int fd, const SegmentParams& params);
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
  SegmentHeader& mutable_header() { return *reinterpret_cast<SegmentHeader*>(base_); }
  const std::byte* data() const { return base_ + kHeaderSize; }
  std::byte* mutable_data() { return base_ + kHeaderSize; }
  uint64_t ring_capacity() const { return header().ring_capacity; }
  bool records() const { return (header().flags & kFlagRecords) != 0; }
  bool block_when_full() const { return (header().flags & kFlagBlockWhenFull) != 0; }
  // The whole mapping (header + reserved data range).
  std::span<const std::byte> mapping() const { return {base_, length_}; }
  int fd() const { return fd_; }
  std::string name() const;
  // `stream "name"` for messages.
  std::string describe() const;

 private:
  std::byte* base_ = nullptr;
  size_t length_ = 0;
  int fd_ = -1;
};

// Makes an empty file (fd open read-write) the wait file of segment `stream_id`, with
// `max_readers` reader slots.
Status format_wait_page(int fd, uint64_t stream_id, uint32_t max_readers);

// A validated read-write mapping of a wait file. Owns the mapping.
class WaitPageMap {
 public:
  static Result<WaitPageMap> map(int fd, uint64_t stream_id, std::string_view what);
  WaitPageMap() = default;
  WaitPageMap(WaitPageMap&& other) noexcept
      : page_(std::exchange(other.page_, nullptr)), length_(std::exchange(other.length_, 0)) {}
  WaitPageMap& operator=(WaitPageMap&& other) noexcept;
  ~WaitPageMap();
  bool valid() const { return page_ != nullptr; }
  WaitPage& page() const { return *page_; }
  uint32_t max_readers() const { return page_->max_readers; }
  ReaderSlot& slot(uint32_t index) const {
    return reinterpret_cast<ReaderSlot*>(reinterpret_cast<std::byte*>(page_) +
                                         kWaitPageSize)[index];
  }

 private:
  WaitPage* page_ = nullptr;
  size_t length_ = 0;
};

// Daemon side of reader slots. Takes a free slot for a reader starting at `position`
// (kTooManyReaders when none is free), and gives it back (waking a producer waiting for room).
// With a `cursor` name, the slot is a named cursor's, committed at `position`.
Result<uint32_t> claim_reader_slot(const WaitPageMap& wait, uint64_t position, uint32_t pid,
                                   std::string_view cursor = {});
void release_reader_slot(const WaitPageMap& wait, uint32_t index);

// Named cursors: a slot that stays in use while no reader holds it, so that its committed
// position survives the reader (and the daemon: it lives in the wait file).
// Whether `name` may name a cursor: 1 to 64 of [A-Za-z0-9._:@-].
Status validate_cursor_name(std::string_view name);
std::string_view cursor_name(const ReaderSlot& slot);
struct CursorPosition {
  uint64_t position = 0;
  uint64_t token = 0;
};
// The cursor's committed position and token (the entry commit_seq names).
CursorPosition cursor_committed(const ReaderSlot& slot);
// Daemon, for a cursor no reader holds: makes its hold (slot position, which a reader
// publishes lazily) exactly its committed position, waking a producer that waits for room.
void settle_cursor_hold(const WaitPageMap& wait, uint32_t index);

// Ends the stream: kOpen -> to (kClosed or kAborted); any state but kCancelled -> kCancelled.
// Wakes every reader. Returns false when the state did not allow it (already ended).
bool end_stream(SegmentHeader& header, StreamState to);
StreamState load_state(const SegmentHeader& header);
// The pid of the stream's producer now: the one that resumed it last, else its creator.
uint32_t producer_pid_now(const SegmentHeader& header);

// The producer side of one segment.
class ProducerCore {
 public:
  ProducerCore(Segment segment, WaitPageMap wait);

  // A writable span of `size` bytes at the end of the stream; fill it, then commit(n <= size).
  // Valid until the next reserve/append/commit. In a ring, size <= the capacity; a blocking
  // ring waits here (until the deadline, or the cancellation fires) for slow readers.
  Result<std::span<std::byte>> reserve(size_t size, Clock::time_point deadline = kNoDeadline,
                                       const Cancellation* cancel = nullptr);
  // Publishes the first `size` bytes of the last reservation and wakes readers.
  Status commit(size_t size);
  // Copies `bytes` to the end of the stream and publishes them.
  Status append(std::span<const std::byte> bytes, Clock::time_point deadline = kNoDeadline,
                const Cancellation* cancel = nullptr);

  // Records streams: a writable span for a payload of up to `max_length` bytes; fill it, then
  // commit_record(length <= max_length) publishes it as one record.
  Result<std::span<std::byte>> reserve_record(size_t max_length,
                                              Clock::time_point deadline = kNoDeadline,
                                              const Cancellation* cancel = nullptr);
  Status commit_record(size_t length);
  Status publish(std::span<const std::byte> payload, Clock::time_point deadline = kNoDeadline,
                 const Cancellation* cancel = nullptr);
  // Ends the stream cleanly at its committed length.
  Status close();
  // Ends the stream as aborted (the producer gives up; readers get kProducerDied).
  Status abort();

  uint64_t committed() const { return committed_; }
  StreamState state() const { return load_state(segment_.header()); }
  const Segment& segment() const { return segment_; }

 private:
  Status check_open() const;
  Status check_kind(bool records) const;
  Status ensure_file_size(uint64_t data_end);
  // Ring: lets the bytes up to `data_end` be written, advancing oldest_offset (after waiting
  // for slow readers in a blocking ring).
  Status make_room(uint64_t data_end, Clock::time_point deadline, const Cancellation* cancel);
  // Blocking ring: the lowest position of a reader slot in use (kNobody if none).
  uint64_t slowest_reader() const;
  Status wait_for_readers(uint64_t needed, Clock::time_point deadline, const Cancellation* cancel);
  std::byte* at(uint64_t offset) { return segment_.mutable_data() + ring_index(offset); }
  uint64_t ring_index(uint64_t offset) const {
    return ring_ == 0 ? offset : mask_ != 0 ? offset & mask_ : offset % ring_;
  }
  // Whether `size` more bytes fit without growing the file or advancing oldest_offset.
  bool fits_without_work(uint64_t size) const {
    uint64_t end = committed_ + size;
    return ring_ == 0 ? end <= file_size_
                      : size <= ring_ && (end <= ring_ || end - ring_ <= oldest_);
  }
  // commit()'s publication: the release store, then a wake-up if a reader sleeps for it.
  void publish_committed(uint64_t size);

  Segment segment_;
  WaitPageMap wait_;
  // Light mode: commits use a light barrier, readers a heavy one (see layout.hpp).
  void enter_light_mode();
  void leave_light_mode();

  bool light_capable_ = false;  // this process may use light barriers (register_light_barriers())
  bool light_ = false;          // commits use a light barrier now
  uint32_t quiet_commits_ = 0;  // commits since the last that woke a reader (saturating)
  bool records_ = false;        // a records stream
  uint64_t ring_ = 0;           // ring capacity, 0 if unbounded
  uint64_t mask_ = 0;    // ring_ - 1 if ring_ is a power of two (offset % ring_ == offset & mask_)
  uint64_t step_ = 0;    // ring: oldest_offset advances in steps of this
  uint64_t oldest_ = 0;  // ring: our own copy of header.oldest_offset
  uint64_t committed_ = 0;      // our own copy of header.committed_length
  uint64_t reserved_ = 0;       // bytes reserved past committed_
  uint64_t file_size_ = 0;      // data bytes backed by the file
  size_t record_reserved_ = 0;  // payload bytes of the pending record reservation
};

enum class Whence { kStart, kCurrent, kEnd };

// One record of a records stream, seen zero-copy.
struct RecordView {
  std::span<const std::byte> data;
  uint64_t offset;  // of its frame in the stream
};

// The reader side of one segment: a read-only mapping and a private position. `slot` is the
// reader slot the daemon gave it in the wait file (its published position holds back a
// blocking ring's producer), or -1 for none.
class ReaderCore {
 public:
  ReaderCore(Segment segment, WaitPageMap wait, int slot = -1);
  ~ReaderCore();

  uint64_t position() const { return position_; }
  // Moves the position to `offset` from the start, the current position or the committed end.
  Status seek(int64_t offset, Whence whence);

  // Blocks until committed_length >= target. kEndOfStream if the stream closed short of it,
  // kProducerDied, kCancelled, kTimeout, kInterrupted (cancel fired or reader closed).
  Status wait_until(uint64_t target, Clock::time_point deadline, const Cancellation* cancel);
  // Blocks until a byte at the position is committed, copies up to buf.size() bytes and advances.
  // Returns 0 at the clean end of the stream.
  Result<size_t> read(std::span<std::byte> buf, Clock::time_point deadline,
                      const Cancellation* cancel);
  // As read(), at `offset`, without moving the position.
  Result<size_t> read_at(uint64_t offset, std::span<std::byte> buf, Clock::time_point deadline,
                         const Cancellation* cancel);
  // Zero-copy: blocks like read(), returns a view of up to `max` committed bytes at the
  // position and advances past them. Empty at the clean end. Valid until close().
  Result<std::span<const std::byte>> next(size_t max, Clock::time_point deadline,
                                          const Cancellation* cancel);
  // Zero-copy view of committed bytes [offset, offset + length); never blocks.
  Result<std::span<const std::byte>> view(uint64_t offset, size_t length);
  // Records streams: blocks like next() for the record at the position and returns it whole,
  // zero-copy, advancing past it; nullopt at the clean end of the stream.
  Result<std::optional<RecordView>> next_record(Clock::time_point deadline,
                                                const Cancellation* cancel);

  // Rings: whether the bytes from `offset` on are still intact. Call it after reading a view
  // of a drop-oldest ring: if false, what was read may have been overwritten while reading.
  bool intact(uint64_t offset) const;
  // Rings: the oldest offset still available (0 for unbounded streams).
  uint64_t oldest() const;
  uint64_t committed() const;
  StreamState state() const;
  const Segment& segment() const { return segment_; }
  // Busy-poll instead of sleeping in the futex (and never register on the wait page).
  void set_spin(bool spin) { spin_ = spin; }

  // Named cursors (a slot whose `cursor` is set): the reader starts at the cursor's committed
  // position; commit() stores a new one (with the caller's token) where the daemon keeps it.
  // Only the committed position holds back a blocking ring's producer.
  Status commit(uint64_t position, uint64_t token);
  // Automatic commits: read(), next() and next_record() first commit what the previous one
  // delivered (not a position sought since), keeping the token: a few stores to our own slot.
  void set_auto_commit(bool on) { auto_commit_ = on && cursor_; }
  uint64_t cursor_position() const { return cursor_position_; }
  uint64_t cursor_token() const { return cursor_token_; }

  // Any thread: wakes blocked waits with kInterrupted, waits for them to return, unmaps.
  void close();

  // Event loops. For a watcher thread, concurrently with the reader's own operations: blocks
  // until the committed length reaches `target` or the stream is no longer open (kReady),
  // *word != seen (kRearmed: the owner moved the target), or the reader closes (kClosed).
  // Touches neither the position nor the slot.
  enum class WatchResult { kReady, kRearmed, kClosed };
  WatchResult watch(uint64_t target, const std::atomic<uint32_t>* word, uint32_t seen);
  // Stores the position in our slot now: a reader about to wait elsewhere (in an event loop)
  // must not hold a blocking ring's producer back with a lazily published position.
  void publish_position_now();

 private:
  class OpGuard;
  // wait_until() for a caller that already holds an admitted OpGuard.
  Status wait_admitted(uint64_t target, Clock::time_point deadline, const Cancellation* cancel);
  // Sleeps (at most until `deadline`) unless the committed length reached `target`, after
  // registering `target` with the producer; wakes when the stream's wait word leaves `seen`,
  // the reader closes, or `also` (if it has a word) fires. Callers re-check their condition.
  void sleep_for_commit(uint64_t target, uint32_t seen, Clock::time_point deadline,
                        FutexWatch also);
  Status ended_status(StreamState state) const;
  Status check_readable(uint64_t offset, StreamState state) const;
  Status overrun(uint64_t offset) const;
  // Ring: kOverrun unless bytes from `offset` on are intact (after reading them).
  Status check_intact(uint64_t offset) const;
  // Publishes in our slot that we need no bytes below `position` (lazily unless `now`).
  void publish_position(uint64_t position, bool now);
  // Stores `position` in our slot and wakes a blocked producer that waits for it.
  void store_position(uint64_t position);
  void write_commit(uint64_t position, uint64_t token);
  // Called by an admitted operation (the slot must not be written once we are closed).
  void commit_delivered();
  // Runs the read operation `op`. In a block ring, a reader that has read nothing yet and was
  // given no offset (not a cursor, no seek) follows the ring's oldest offset if `op` finds its
  // start overwritten: a producer racing the reader's join may have moved on from where the
  // daemon placed it (once the producer sees the slot, it waits for it). Anyone else, and every
  // reader of a drop-oldest ring (falling behind is its news), gets the overrun.
  template <typename Op>
  auto follow_if_fresh(Op op) -> decltype(op());
  Result<std::span<const std::byte>> next_once(size_t max, Clock::time_point deadline,
                                               const Cancellation* cancel);
  Result<std::optional<RecordView>> next_record_once(Clock::time_point deadline,
                                                     const Cancellation* cancel);
  const std::byte* at(uint64_t offset) const {
    return segment_.data() + (ring_ == 0 ? offset : mask_ != 0 ? offset & mask_ : offset % ring_);
  }

  Segment segment_;
  WaitPageMap wait_;
  ReaderSlot* slot_ = nullptr;
  std::string describe_;
  uint64_t max_data_size_ = 0;
  uint64_t ring_ = 0;  // ring capacity, 0 if unbounded
  uint64_t mask_ = 0;  // ring_ - 1 if ring_ is a power of two
  uint64_t step_ = 0;  // publish the slot when the position moved this far
  bool block_ring_ = false;
  uint64_t published_ = 0;         // last position stored in the slot
  uint64_t cached_committed_ = 0;  // records: a committed length already loaded
  uint64_t position_ = 0;
  bool spin_ = false;
  bool cursor_ = false;
  bool delivered_ = false;  // position_ is the end of what the last read op delivered
  bool fresh_ = true;       // nothing read, no offset asked for (see follow_if_fresh())
  bool auto_commit_ = false;
  uint64_t cursor_position_ = 0;
  uint64_t cursor_token_ = 0;
  std::atomic<uint32_t> closing_{0};  // private futex word: 1 once close() began
  std::atomic<int> active_{0};        // operations in progress (close() waits for 0)
};

}  // namespace shmstream::shm
