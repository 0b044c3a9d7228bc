// shm/segment.hpp — a stream segment: mapping and validation, the producer core and the
// reader core. Depends on nothing of shmstream's but status and cancellation.
//
// The producer appends at the end and publishes with a release store of committed_length;
// readers acquire-load committed_length and may then read every byte below it, for as long as
// they keep their mapping. A reader sleeps on the header's wait_word (a futex) when it wants
// bytes that are not committed yet, after telling the producer through the wait page (see
// layout.hpp); the producer wakes sleepers only when one waits for what it committed.
//
// Thread-safety: a ProducerCore is used by one thread at a time. A ReaderCore is used by one
// thread at a time, except close(), which any thread may call while another is blocked in it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
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

const char* state_name(StreamState state);  // "open", "closed", "aborted", "cancelled"

// What a new segment holds.
struct SegmentParams {
  std::string name;
  uint64_t max_data_size = kDefaultMaxDataSize;
  uint64_t stream_id = 0;
  uint32_t producer_pid = 0;
  uint32_t producer_uid = 0;
};

// Makes an empty file (fd open read-write) a fresh, open segment with no data.
Status format_segment(int fd, const SegmentParams& params);

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

// Makes an empty file (fd open read-write) the wait page of segment `stream_id`.
Status format_wait_page(int fd, uint64_t stream_id);

// A validated read-write mapping of a wait page. Owns the mapping.
class WaitPageMap {
 public:
  static Result<WaitPageMap> map(int fd, uint64_t stream_id, std::string_view what);
  WaitPageMap() = default;
  WaitPageMap(WaitPageMap&& other) noexcept : page_(std::exchange(other.page_, nullptr)) {}
  WaitPageMap& operator=(WaitPageMap&& other) noexcept;
  ~WaitPageMap();
  WaitPage& page() const { return *page_; }

 private:
  WaitPage* page_ = nullptr;
};

// Ends the stream: kOpen -> to (kClosed or kAborted); any state but kCancelled -> kCancelled.
// Wakes every reader. Returns false when the state did not allow it (already ended).
bool end_stream(SegmentHeader& header, StreamState to);
StreamState load_state(const SegmentHeader& header);

// The producer side of one segment.
class ProducerCore {
 public:
  ProducerCore(Segment segment, WaitPageMap wait);

  // A writable span of `size` bytes at the end of the stream; fill it, then commit(n <= size).
  // Valid until the next reserve/append/commit.
  Result<std::span<std::byte>> reserve(size_t size);
  // Publishes the first `size` bytes of the last reservation and wakes readers.
  Status commit(size_t size);
  // Copies `bytes` to the end of the stream and publishes them.
  Status append(std::span<const std::byte> bytes);
  // Ends the stream cleanly at its committed length.
  Status close();
  // Ends the stream as aborted (the producer gives up; readers get kProducerDied).
  Status abort();

  uint64_t committed() const { return committed_; }
  StreamState state() const { return load_state(segment_.header()); }
  const Segment& segment() const { return segment_; }

 private:
  Status check_open() const;
  Status ensure_file_size(uint64_t data_end);

  Segment segment_;
  WaitPageMap wait_;
  uint64_t committed_ = 0;  // our own copy of header.committed_length
  uint64_t reserved_ = 0;   // bytes reserved past committed_
  uint64_t file_size_ = 0;  // data bytes backed by the file
};

enum class Whence { kStart, kCurrent, kEnd };

// The reader side of one segment: a read-only mapping and a private position.
class ReaderCore {
 public:
  ReaderCore(Segment segment, WaitPageMap wait);
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

  uint64_t committed() const;
  StreamState state() const;
  const Segment& segment() const { return segment_; }
  // Busy-poll instead of sleeping in the futex (and never register on the wait page).
  void set_spin(bool spin) { spin_ = spin; }

  // Any thread: wakes blocked waits with kInterrupted, waits for them to return, unmaps.
  void close();

 private:
  class OpGuard;
  // wait_until() for a caller that already holds an admitted OpGuard.
  Status wait_admitted(uint64_t target, Clock::time_point deadline, const Cancellation* cancel);
  Status ended_status(StreamState state) const;
  Status check_readable(uint64_t offset, StreamState state) const;

  Segment segment_;
  WaitPageMap wait_;
  std::string describe_;
  uint64_t max_data_size_ = 0;
  uint64_t position_ = 0;
  bool spin_ = false;
  std::atomic<uint32_t> closing_{0};  // private futex word: 1 once close() began
  std::atomic<int> active_{0};        // operations in progress (close() waits for 0)
};

}  // namespace shmstream::shm
