// shm/producer_core.hpp — the producer side of one segment: reserve, commit, publish, end.
//
// The producer appends at the end and publishes with a release store of committed_length,
// waking readers that sleep for what it committed (the wake protocol, layout.hpp). A ring's
// producer overwrites the oldest bytes (advancing oldest_offset first), or, in a blocking
// ring, waits for the slowest reader to pass them. What it knows of its readers comes from
// their own pages (ReaderSet): a reader can delay or hurry only itself.
//
// Thread-safety: a ProducerCore is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "shm/futex.hpp"
#include "shm/reader_set.hpp"
#include "shm/ring.hpp"
#include "shm/segment.hpp"
#include "shmstream/cancellation.hpp"
#include "shmstream/status.hpp"

namespace shmstream::shm {

// The producer side of one segment.
class ProducerCore {
 public:
  ProducerCore(Segment segment, ReaderSet readers);

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
  // Ends the stream as aborted (the producer gives up; readers get kProducerDied, saying why).
  Status abort(const AbortReason& why);

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
  // Blocking ring: the lowest position a reader holds (kNobody if none).
  uint64_t slowest_reader() { return readers_.slowest(); }
  Status wait_for_readers(uint64_t needed, Clock::time_point deadline, const Cancellation* cancel);
  std::byte* at(uint64_t offset) { return segment_.mutable_data() + ring_.index(offset); }
  // Whether `size` more bytes fit without growing the file or advancing oldest_offset.
  bool fits_without_work(uint64_t size) const {
    uint64_t end = committed_ + size;
    const uint64_t capacity = ring_.capacity();
    return !ring_.is_ring() ? end <= file_size_
                            : size <= capacity && (end <= capacity || end - capacity <= oldest_);
  }
  // commit()'s publication: the release store, then a wake-up if a reader sleeps for it.
  void publish_committed(uint64_t size);
  // One more record committed: the header's count follows.
  void count_record();

  Segment segment_;
  ReaderSet readers_;
  // Light mode: commits use a light barrier, readers a heavy one (see layout.hpp).
  void enter_light_mode();
  void leave_light_mode();

  bool light_capable_ = false;  // this process may use light barriers (register_light_barriers())
  bool light_ = false;          // commits use a light barrier now
  uint32_t quiet_commits_ = 0;  // commits since the last that woke a reader (saturating)
  bool records_ = false;        // a records stream
  RingGeometry ring_;           // from the validated header, kept privately
  uint64_t oldest_ = 0;         // ring: our own copy of header.oldest_offset
  uint64_t committed_ = 0;      // our own copy of header.committed_length
  uint64_t record_count_ = 0;   // and of header.records_committed
  uint64_t reserved_ = 0;       // bytes reserved past committed_
  uint64_t file_size_ = 0;      // data bytes backed by the file
  size_t record_reserved_ = 0;  // payload bytes of the pending record reservation
};

}  // namespace shmstream::shm
