// shm/reader_core.hpp — the reader side of one segment: waits, reads, zero-copy views,
// records, rings and named cursors.
//
// A reader acquire-loads committed_length and may then read every byte below it (in a ring:
// and at or above oldest_offset, checked again after reading), for as long as it keeps its
// mapping. It sleeps on the header's wait_word (a futex) when it wants bytes that are not
// committed yet, after telling the producer through its own reader page (layout.hpp).
//
// The segment's owner can truncate its file under us. The mapping is guarded (fault_guard.hpp):
// a fault maps zero pages over it instead of killing the process, and every operation from
// then on returns kCorrupt. A view handed out before keeps pointing into the mapping and reads
// zeros from the fault on; bytes a read copied are checked after the copy and never delivered
// as good once the mapping faulted.
//
// Thread-safety: a ReaderCore is used by one thread at a time, except close(), which any thread
// may call while another is blocked in it, and watch(), for one watcher thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "shm/futex.hpp"
#include "shm/reader_table.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"
#include "shmstream/cancellation.hpp"
#include "shmstream/status.hpp"

namespace shmstream::shm {

enum class Whence { kStart, kCurrent, kEnd };

// One record of a records stream, seen zero-copy.
struct RecordView {
  std::span<const std::byte> data;
  uint64_t offset;  // of its frame in the stream
};

// The reader side of one segment: a read-only mapping and a private position. `page` is the
// reader page the daemon gave it (where it registers to be woken, and publishes the position
// that holds back a blocking ring's producer); without one, waits poll every millisecond.
// `cursor`: the page is a named cursor's (the reader starts at its committed position).
class ReaderCore {
 public:
  explicit ReaderCore(Segment segment, ReaderPageMap page = {}, bool cursor = false);
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
  // Busy-poll instead of sleeping in the futex (and never register in its page to be woken).
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
  // Event loops without a thread (a kernel-side futex wait, FutexRing): registers `target` in
  // the watcher's wake request, for the wait word's current value (stored in `seen`) or, with
  // `keep_seen`, for the value already in `seen` (a wait on it is still queued), so that the
  // producer wakes the word once it commits the target. kReady: nothing to wait for (the length
  // reached the target, the stream is not open, or the reader closed); kArmed: a wait on
  // watch_words(seen) will be woken; kUnsure: a light producer could not be made to see the
  // request (no membarrier): wait for a short while only.
  enum class ArmResult { kReady, kArmed, kUnsure };
  ArmResult arm_watch(uint64_t target, uint32_t& seen, bool keep_seen);
  // What an armed watch sleeps on: the stream's wait word while it holds `seen`, and close().
  std::array<FutexWatch, 2> watch_words(uint32_t seen) const;
  // The armed wait completed: withdraws the request unless the producer's wake made it stale.
  void disarm_watch(uint32_t seen);
  // Stores the position in our slot now: a reader about to wait elsewhere (in an event loop)
  // must not hold a blocking ring's producer back with a lazily published position.
  void publish_position_now();

 private:
  class OpGuard;
  // Why the daemon let go of us (kEvicted*, from our page), or 0.
  uint32_t evicted_why() const {
    // Acquire: pairs with the daemon's wake-up after its pwrite (Registry::forget_orphan());
    // otherwise a plain flag.
    return page_ != nullptr ? page_->evicted.load(std::memory_order_acquire) : 0;
  }
  // wait_until() for a caller that already holds an admitted OpGuard.
  Status wait_admitted(uint64_t target, Clock::time_point deadline, const Cancellation* cancel);
  // Registers `target` (for wait-word value `seen`) in our page's wake request `who`, then the
  // Dekker fence: kSatisfied if the length reached the target meanwhile (no sleep needed);
  // else kSure if the producer will see the request (a heavy barrier if it is light), kUnsure
  // if it might not (no membarrier: sleep in short slices).
  enum class Announced { kSatisfied, kSure, kUnsure };
  Announced announce_wait(int who, uint64_t target, uint32_t seen);
  // Awake: clears request `who` unless the producer's wake made it stale.
  void withdraw_wait(int who, uint32_t seen);
  // Sleeps (at most until `deadline`) unless the committed length reached `target`, after
  // registering `target` with the producer in our page's wake request `who` (kWakeOwn, or
  // kWakeWatcher for watch(), which may sleep while the owner thread does); wakes when the
  // stream's wait word leaves `seen`, the reader closes, or `also` (if it has a word) fires.
  // Callers re-check their condition.
  void sleep_for_commit(uint64_t target, uint32_t seen, Clock::time_point deadline, FutexWatch also,
                        int who = kWakeOwn);
  // kEndOfStream, kProducerDied, kCancelled for an ended stream; kCorrupt for a state that is
  // none of the four; ok while open.
  Status ended_status(StreamState state) const;
  // The committed bytes above `offset` (committed - offset), checked against the geometry kept
  // in private memory: kCorrupt when the shared length claims more than the ring or the file
  // can hold, or went back below `offset`; kOverrun when a ring overwrote `offset`.
  Result<uint64_t> available_from(uint64_t offset, uint64_t committed);
  Status check_readable(uint64_t offset, StreamState state) const;
  // kCorrupt once the segment's file shrank under our mapping (fault_guard.hpp).
  Status check_mapping() const;
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
  const std::byte* at(uint64_t offset) const { return segment_.data() + ring_.index(offset); }

  Segment segment_;
  ReaderPageMap page_map_;
  ReaderPage* page_ = nullptr;  // our own page, if we have one
  std::string describe_;
  uint64_t max_data_size_ = 0;
  uint64_t file_size_seen_ = 0;  // unbounded: the file's data bytes as last seen (fstat)
  RingGeometry ring_;            // from the validated header; the slot is published every step()
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
  // The hot operations of the thread using the reader (next, next_record, read), counted with
  // a plain load and store (one thread at a time uses a reader) and a compiler barrier, which
  // close()'s process-wide barrier makes a full one: a locked read-modify-write pair per
  // record was a fifth of a 64-byte record subscriber's time. Without the process barrier
  // (before Linux 4.14) they count in active_.
  std::atomic<uint32_t> owner_active_{0};
  bool owner_lane_ = false;
};

}  // namespace shmstream::shm
