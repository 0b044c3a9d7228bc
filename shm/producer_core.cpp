#include "shm/producer_core.hpp"

#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>

namespace shmstream::shm {
namespace {

constexpr uint64_t kMinGrowth = 1ULL << 20;   // file grows by at least 1 MiB
constexpr uint64_t kMaxGrowth = 64ULL << 20;  // and by at most 64 MiB beyond what is needed
// A producer switches its commits to the light barrier after this many commits in a row that
// woke no reader (it is streaming), and back to the fence at a commit that wakes a reader fewer
// than this many commits after the previous wake-up (readers sleep often: their heavy barriers
// would cost more than the fences, and delay their wake-ups).
constexpr uint32_t kQuietCommitsBeforeLight = 64;

}  // namespace

ProducerCore::ProducerCore(Segment segment, ReaderSet readers)
    : segment_(std::move(segment)), readers_(std::move(readers)) {
  const SegmentHeader& h = segment_.header();
  // Relaxed: only this producer writes these fields.
  committed_ = h.committed_length.load(std::memory_order_relaxed);
  record_count_ = h.records_committed.load(std::memory_order_relaxed);
  file_size_ = h.data_file_size.load(std::memory_order_relaxed);
  oldest_ = h.oldest_offset.load(std::memory_order_relaxed);
  ring_ = RingGeometry(segment_.ring_capacity());
  records_ = segment_.records();
  light_capable_ = register_light_barriers();
  leave_light_mode();  // a dead producer's flag may linger: start with fenced commits
  if (ring_.is_ring()) {
    // The ring is allocated; map all of it now rather than one page fault at a time: both
    // views of it (a record that wraps is written through the second).
    madvise(segment_.mutable_data(), 2 * ring_.capacity(), MADV_POPULATE_WRITE);
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
  if (segment_.faulted()) {
    return Status(ErrorCode::kCorrupt,
                  segment_.describe() + ": its segment file shrank under the producer");
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
  uint64_t max = segment_.max_data_size();
  if (data_end > max) {
    return Status(ErrorCode::kTooLarge,
                  fmt::format("{}: appending would reach {} bytes, beyond its maximum of {}",
                              segment_.describe(), data_end, max));
  }
  uint64_t growth = std::clamp(file_size_, kMinGrowth, kMaxGrowth);
  uint64_t target = std::min(max, (data_end + growth + kMinGrowth - 1) / kMinGrowth * kMinGrowth);
  // Reserved, not only sized: on tmpfs a full file system is a clear kNoSpace here instead of a
  // SIGBUS when the page is first written.
  Status s = reserve_file(segment_.fd(), kHeaderSize + file_size_, target - file_size_);
  if (s.code() == ErrorCode::kNoSpace) {
    // Nearly full: the headroom does not fit, but what this append needs may still.
    target = std::min(max, (data_end + kRingGranule - 1) / kRingGranule * kRingGranule);
    s = reserve_file(segment_.fd(), kHeaderSize + file_size_, target - file_size_);
  }
  if (!s.ok()) {
    return s.with_context(fmt::format("{}: growing to {} bytes", segment_.describe(), target));
  }
  // Map the new pages now, in one call, instead of one page fault per 4 KiB as the producer
  // first writes them (about 2x fewer cycles; Linux >= 5.14, best effort elsewhere).
  madvise(segment_.mutable_data() + file_size_, target - file_size_, MADV_POPULATE_WRITE);
  file_size_ = target;
  // Release: pairs with the acquire load in validate_header(); the file is already this big.
  segment_.mutable_header().data_file_size.store(file_size_, std::memory_order_release);
  return Status();
}

Status ProducerCore::wait_for_readers(uint64_t needed, Clock::time_point deadline,
                                      const Cancellation* cancel) {
  SegmentHeader& h = segment_.mutable_header();
  Status result;
  bool stalled = false;
  for (;;) {
    // Acquire: pairs with the daemon's release fetch_add in wake_space_waiter(); loaded before
    // the scan, so a slot it changes after the scan changes the word.
    uint32_t seen_space = h.space_word.load(std::memory_order_acquire);
    // Acquire: pairs with end_stream()'s release increment (a forced removal ends the wait).
    uint32_t seen_state = h.wait_word.load(std::memory_order_acquire);
    if (readers_.slowest() >= needed) break;
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
                                  segment_.describe(), needed, readers_.slowest()));
      break;
    }
    if (!stalled) {
      stalled = true;
      // Relaxed: for display and the daemon's stall limit; it publishes nothing.
      h.stalled_since_ns.store(
          static_cast<uint64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
                  .count()),
          std::memory_order_relaxed);
    }
    // Relaxed store + seq_cst fence: Dekker with the readers' store_position() and the daemon's
    // wake_space_waiter(): either they see what we want, or the scan below sees their move.
    h.space_wanted.store(needed, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    FutexWatch watches[kMaxFutexWatches];
    size_t count = 0;
    watches[count++] = {&h.space_word, seen_space, true};
    watches[count++] = {&h.wait_word, seen_state, true};
    if (cancel != nullptr) watches[count++] = {cancel->word(), 0, false};
    bool all = true;
    count +=
        readers_.holder_watches(needed, std::span(watches + count, kMaxFutexWatches - count), &all);
    if (readers_.slowest() >= needed) break;
    // More holders than one wait can watch: the others are looked at every millisecond.
    Clock::time_point until =
        all ? deadline : std::min(deadline, Clock::now() + std::chrono::milliseconds(1));
    futex_wait(std::span(watches, count), until);
  }
  // Relaxed: only we write them; a reader that sees a stale value wakes us once, harmlessly.
  h.space_wanted.store(kNobody, std::memory_order_relaxed);
  if (stalled) h.stalled_since_ns.store(0, std::memory_order_relaxed);
  return result;
}

Status ProducerCore::make_room(uint64_t data_end, Clock::time_point deadline,
                               const Cancellation* cancel) {
  const uint64_t capacity = ring_.capacity();
  if (data_end - committed_ > capacity) {
    return Status(ErrorCode::kTooLarge,
                  fmt::format("{}: {} bytes do not fit in its ring of {}", segment_.describe(),
                              data_end - committed_, capacity));
  }
  if (data_end <= capacity) return Status();    // not wrapped yet
  const uint64_t needed = data_end - capacity;  // bytes below this get overwritten
  if (needed <= oldest_) return Status();
  // Declare a whole step gone at once (never past what is committed), so that oldest_offset
  // changes rarely.
  const uint64_t step = ring_.step();
  uint64_t limit = std::min((needed + step - 1) / step * step, committed_);
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
  if (Status s = ring_.is_ring() ? make_room(committed_ + size, deadline, cancel)
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
  // above before the loads of the readers' wanted below, so a reader about to sleep either sees the
  // new length or is seen here. A light barrier when the readers' heavy barrier pays for it.
  if (light_) {
    light_barrier();
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  // Relaxed: only we (and the daemon ending the stream, which wakes everyone itself) bump it.
  if (!readers_.anyone_wants(committed_, h.wait_word.load(std::memory_order_relaxed))) {
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
  wake_readers(h);
}

void ProducerCore::enter_light_mode() {
  // Relaxed store, then a seq_cst fence: Dekker with a reader's fence and load of the flag
  // before it sleeps; a reader that still sees 0 skips its heavy barrier, and it is then
  // ordered before our fence, so our later (light) commits' loads of its wanted see it.
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
  Status committed = commit(record_frame_size(length));
  if (committed.ok()) count_record();
  return committed;
}

void ProducerCore::count_record() {
  // Relaxed: a count for display (stat); it publishes nothing, readers never rely on it.
  segment_.mutable_header().records_committed.store(++record_count_, std::memory_order_relaxed);
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
    count_record();
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

Status ProducerCore::abort(const AbortReason& why) {
  if (abort_stream(segment_.mutable_header(), why, Claimant::kProducer)) return Status();
  return check_open();
}

}  // namespace shmstream::shm
