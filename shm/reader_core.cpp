#include "shm/reader_core.hpp"

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstring>

namespace shmstream::shm {
namespace {

// A busy-polling reader re-checks state, cancellation and its deadline every this many polls.
constexpr int kPollsPerCheck = 4096;

// Tells the CPU we are spinning (saves power, yields to a hyper-thread sibling).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

// Counts an operation in progress; close() waits until none is. Refuses once close() began.
// kOwner: an operation of the thread using the reader, counted in owner_active_ (see there).
class ReaderCore::OpGuard {
 public:
  enum Lane { kAny, kOwner };
  explicit OpGuard(ReaderCore* reader, Lane lane = kAny)
      : reader_(reader), owner_(lane == kOwner && reader->owner_lane_) {
    if (owner_) {
      std::atomic<uint32_t>& n = reader_->owner_active_;
      // Relaxed: only this thread counts here now. Then a compiler barrier that close()'s
      // process barrier turns into a full fence: Dekker with close(), as below.
      n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      light_barrier();
      admitted_ = reader_->closing_.load(std::memory_order_relaxed) == 0;
      return;
    }
    // seq_cst with closing_'s load: either close() sees this operation in active_, or this
    // operation sees closing_ set (Dekker pairing with close()).
    reader_->active_.fetch_add(1, std::memory_order_seq_cst);
    admitted_ = reader_->closing_.load(std::memory_order_seq_cst) == 0;
  }
  ~OpGuard() {
    if (owner_) {
      std::atomic<uint32_t>& n = reader_->owner_active_;
      // Release: pairs with close()'s acquire load; our last touch of the mapping precedes unmap.
      n.store(n.load(std::memory_order_relaxed) - 1, std::memory_order_release);
      // Relaxed: a hint; close() also re-checks every millisecond (it may miss this wake-up).
      if (reader_->closing_.load(std::memory_order_relaxed) != 0) {
        futex_wake_all(&n, /*shared=*/false);
      }
      return;
    }
    // Release: pairs with close()'s acquire load; our last touch of the mapping precedes unmap.
    if (reader_->active_.fetch_sub(1, std::memory_order_release) == 1) {
      reader_->active_.notify_all();
    }
  }
  bool admitted() const { return admitted_; }

 private:
  ReaderCore* reader_;
  bool owner_;
  bool admitted_;
};

ReaderCore::ReaderCore(Segment segment, ReaderPageMap page, bool cursor)
    : segment_(std::move(segment)),
      page_map_(std::move(page)),
      describe_(segment_.describe()),
      max_data_size_(segment_.max_data_size()),
      ring_(segment_.ring_capacity()),
      block_ring_(segment_.block_when_full()),
      owner_lane_(register_process_barriers()) {
  if (page_map_.valid()) {
    page_ = &page_map_.page();
    // Relaxed: our own page; the daemon wrote it before handing it to us.
    published_ = page_->position.load(std::memory_order_relaxed);
    // A new reader starts where the daemon placed it: the oldest offset still kept (a ring
    // that wrapped before we joined has lost offset 0).
    position_ = published_;
    if (cursor) {
      cursor_ = true;
      CursorPosition committed = page_committed(*page_);
      cursor_position_ = committed.position;
      cursor_token_ = committed.token;
      position_ = committed.position;  // a named cursor resumes where it committed
      fresh_ = false;
    }
  }
  if (ring_.is_ring()) {
    // Fault the ring's pages in now (both views), not one by one on the first pass: the
    // ring is allocated in full and bounded, and a page fault costs more than a 4 KiB read.
    madvise(const_cast<std::byte*>(segment_.data()), 2 * ring_.capacity(), MADV_POPULATE_READ);
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
  // Every thread of ours runs a full fence: an owner operation that did not see closing_ is
  // now seen in owner_active_ (Dekker with OpGuard's compiler barrier). It was registered when
  // owner_lane_ was set, so it does not fail; if it ever did, the wait below is all we have.
  if (owner_lane_) process_barrier();
  // Acquire: pairs with OpGuard's release store. Its wake-up may come before we sleep: we
  // look again every millisecond.
  for (uint32_t n = owner_active_.load(std::memory_order_acquire); n != 0;
       n = owner_active_.load(std::memory_order_acquire)) {
    const FutexWatch watch{&owner_active_, n, false};
    futex_wait(std::span(&watch, 1), Clock::now() + std::chrono::milliseconds(1));
  }
  segment_.reset();
  page_map_ = ReaderPageMap();
  page_ = nullptr;
}

uint64_t ReaderCore::committed() const {
  return segment_.valid() ? load_committed(segment_.header()) : 0;
}

StreamState ReaderCore::state() const {
  return segment_.valid() ? load_state(segment_.header()) : StreamState::kCancelled;
}

Status ReaderCore::ended_status(StreamState state) const {
  switch (state) {
    case StreamState::kClosed:
      return Status(ErrorCode::kEndOfStream, describe_ + ": end of stream");
    case StreamState::kAborted: {
      return Status(ErrorCode::kProducerDied,
                    fmt::format("{}: aborted: {}", describe_,
                                load_abort_reason(segment_.header()).describe()));
    }
    case StreamState::kCancelled:
      return Status(ErrorCode::kCancelled, describe_ + ": cancelled (removed by force)");
    case StreamState::kOpen:
      return Status();
  }
  if (Status s = check_mapping(); !s.ok()) return s;
  // Only a process that writes the segment (its owner) can put another value there.
  return Status(ErrorCode::kCorrupt, fmt::format("{}: invalid stream state {}", describe_,
                                                 static_cast<uint32_t>(state)));
}

Result<uint64_t> ReaderCore::available_from(uint64_t offset, uint64_t committed) {
  if (committed < offset) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: the committed length went back to {}, below offset {}",
                              describe_, committed, offset));
  }
  const uint64_t available = committed - offset;
  if (ring_.is_ring()) {
    // An honest producer moves oldest_offset past what it overwrites, so that more than a ring
    // of bytes above `offset` means `offset` was overwritten; if it was not, the length lies.
    if (available > ring_.capacity()) {
      if (!intact(offset)) return overrun(offset);
      return Status(ErrorCode::kCorrupt,
                    fmt::format("{}: committed length {} is more than its {}-byte ring holds "
                                "above offset {}",
                                describe_, committed, ring_.capacity(), offset));
    }
  } else if (committed > file_size_seen_) {
    // The producer grows the file before committing into it, so the size needs taking again
    // only when the length passes the last size seen: rarely (growth comes in steps of 1 MiB
    // or more). By fstat, not from the header's data_file_size: its owner may write anything
    // there, and bytes past the file do not exist.
    struct stat st {};
    const uint64_t file = fstat(segment_.fd(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
    file_size_seen_ = std::min(file > kHeaderSize ? file - kHeaderSize : 0, max_data_size_);
    if (committed > file_size_seen_) {
      return Status(ErrorCode::kCorrupt,
                    fmt::format("{}: committed length {} beyond what the segment holds ({} "
                                "allocated, at most {})",
                                describe_, committed, file_size_seen_, max_data_size_));
    }
  }
  return available;
}

Status ReaderCore::check_readable(uint64_t committed, StreamState state) const {
  if (Status s = check_mapping(); !s.ok()) return s;
  const uint32_t evicted = evicted_why();
  if (evicted == kEvictedUnclaimed) {
    return Status(ErrorCode::kUnavailable,
                  fmt::format("{}: let go by the restarted daemon: it kept this reader's slot for "
                              "its reattachment grace (shmstreamd --reattach-grace-ms), which ran "
                              "out first; the reader holds nothing back and is woken by nobody "
                              "now: open the stream again at its position to read on",
                              describe_));
  }
  if (evicted != 0) {
    return Status(ErrorCode::kOverrun,
                  fmt::format("{}: evicted: this reader held the producer longer than the "
                              "stream's stall limit ({} ms); it holds nothing back any more, "
                              "and the oldest available offset is {}",
                              describe_, segment_.stall_limit_ms(), oldest()),
                  oldest());
  }
  if (state == StreamState::kCancelled) return ended_status(state);
  if (!ring_.is_ring() && committed > max_data_size_) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: committed length {} beyond the segment's maximum {}", describe_,
                              committed, max_data_size_));
  }
  return Status();
}

uint64_t ReaderCore::oldest() const {
  return ring_.is_ring() && segment_.valid() ? load_oldest(segment_.header()) : 0;
}

bool ReaderCore::intact(uint64_t offset) const {
  if (!ring_.is_ring()) return true;
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

Status ReaderCore::check_mapping() const {
  if (!segment_.faulted()) return Status();
  return Status(ErrorCode::kCorrupt,
                describe_ +
                    ": its segment file shrank under the reader (truncated by its owner); "
                    "bytes read since are zeros, not the stream's");
}

Status ReaderCore::check_intact(uint64_t offset) const {
  if (Status s = check_mapping(); !s.ok()) return s;
  return intact(offset) ? Status() : overrun(offset);
}

void ReaderCore::publish_position(uint64_t position, bool now) {
  if (page_ == nullptr) return;
  // A named cursor holds the producer back at its committed position, not where it reads.
  if (cursor_) position = cursor_position_;
  if (position == published_) return;
  if (!now && position > published_ && position - published_ < ring_.step()) return;
  store_position(position);
}

void ReaderCore::write_commit(uint64_t position, uint64_t token) {
  // Relaxed: only this reader writes its slot's entries and sequence.
  uint32_t seq = page_->commit_seq.load(std::memory_order_relaxed);
  CursorCommit& entry = page_->committed[(seq + 1) & 1];
  entry.position.store(position, std::memory_order_relaxed);
  entry.token.store(token, std::memory_order_relaxed);
  // Release: pairs with page_committed()'s acquire load; the entry above is whole first.
  page_->commit_seq.store(seq + 1, std::memory_order_release);
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
  // Release: pairs with load_page_position()'s acquire load; our reads of the bytes below the
  // position happen before the producer overwrites them.
  page_->position.store(position, std::memory_order_release);
  if (!block_ring_) return;
  // Dekker with wait_for_readers(): our store above is ordered before the load below, so
  // either the producer's re-scan sees it or we see what it waits for.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint64_t wanted = segment_.header().space_wanted.load(std::memory_order_relaxed);
  if (wanted != kNobody && before < wanted && wanted <= position) {
    // Release: pairs with the producer's acquire load in holder_watches(); it sleeps on it.
    page_->space_seq.fetch_add(1, std::memory_order_release);
    futex_wake_all(&page_->space_seq, /*shared=*/true);
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
    uint64_t committed = load_committed(h);
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
      if (block_ring_ &&
          segment_.header().space_wanted.load(std::memory_order_relaxed) != kNobody) {
        publish_position(position_, /*now=*/true);
      }
      // Busy-poll: re-read the length (acquire, as above) until it moves, checking state,
      // cancellation, close and the deadline (in the outer loop) every 4096 polls.
      // (Without the spin strategy we do not poll before sleeping: measured, polling costs a
      // streaming producer the cache line it commits to, and a ping-pong several microseconds.)
      for (int i = 0; i < kPollsPerCheck; ++i) {
        if (load_committed(h) >= target) break;
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

ReaderCore::Announced ReaderCore::announce_wait(int who, uint64_t target, uint32_t seen) {
  const SegmentHeader& h = segment_.header();
  // Tell the producer, in our page, the offset we sleep for and the word value we sleep on.
  if (page_ != nullptr) {
    WakeRequest& request = page_->wake[who];
    request.seen_word.store(seen, std::memory_order_relaxed);  // published by the release below
    // Release: pairs with the producer's acquire load in anyone_wants(); seen_word comes with it.
    request.wanted.store(target, std::memory_order_release);
  }
  // Dekker with the producer's fence in commit(): our registration is ordered before the
  // re-check below, so either we see its new length or it sees our offset and wakes us.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // A streaming producer often committed meanwhile: then no sleep, and no heavy barrier (which
  // interrupts every CPU, the producer's included: 8,061 of them for 10 M records of a reader
  // keeping up, 3,058 with this check). Acquire: pairs with commit()'s release store.
  if (load_committed(h) >= target) return Announced::kSatisfied;
  // A light producer has no fence there: make it execute one now (asymmetric Dekker). If we
  // cannot, the caller sleeps in short slices so that a missed wake-up costs at most one.
  // Acquire: pairs with leave_light_mode()'s release store (a 0 read here means every light
  // commit is visible to the caller's re-check); a 1 is Dekker with enter_light_mode()'s fence.
  if (h.light_producer.load(std::memory_order_acquire) != 0 && !heavy_barrier()) {
    return Announced::kUnsure;
  }
  return Announced::kSure;
}

void ReaderCore::withdraw_wait(int who, uint32_t seen) {
  // Awake, we want nothing until we register again. A producer that woke us moved the word
  // past our seen_word, which makes the request match nothing: clearing it then would only
  // take its line back from the producer on the way to our next read. Otherwise (a timeout,
  // a cancellation, a length we saw without sleeping) clear it, or the producer would wake
  // the word once more for nobody.
  // Relaxed: a stale value costs at most one spurious wake-up, never a missed one (the next
  // registration stores both fields before its fence).
  if (page_ != nullptr && segment_.header().wait_word.load(std::memory_order_relaxed) == seen) {
    page_->wake[who].wanted.store(kNobody, std::memory_order_relaxed);
  }
}

void ReaderCore::sleep_for_commit(uint64_t target, uint32_t seen, Clock::time_point deadline,
                                  FutexWatch also, int who) {
  const SegmentHeader& h = segment_.header();
  // Without a page nobody would wake us: sleep in short slices instead.
  if (page_ == nullptr) deadline = std::min(deadline, Clock::now() + std::chrono::milliseconds(1));
  const Announced announced = announce_wait(who, target, seen);
  Clock::time_point sleep_until = deadline;
  if (announced == Announced::kUnsure) {
    sleep_until = std::min(deadline, Clock::now() + std::chrono::milliseconds(1));
  }
  // Acquire: pairs with commit()'s release store.
  if (announced != Announced::kSatisfied && load_committed(h) < target) {
    FutexWatch watches[3] = {{&h.wait_word, seen, true}, {&closing_, 0, false}};
    size_t count = 2;
    if (also.word != nullptr) watches[count++] = also;
    futex_wait(std::span(watches, count), sleep_until);
  }
  withdraw_wait(who, seen);
}

ReaderCore::WatchResult ReaderCore::watch(uint64_t target, const std::atomic<uint32_t>* word,
                                          uint32_t seen) {
  OpGuard guard(this);
  if (!guard.admitted()) return WatchResult::kClosed;
  const SegmentHeader& h = segment_.header();
  for (;;) {
    // Acquire loads as in wait_admitted(): the wait word first, then the length and state.
    uint32_t seen_word = h.wait_word.load(std::memory_order_acquire);
    if (load_committed(h) >= target) return WatchResult::kReady;
    if (load_state(h) != StreamState::kOpen) return WatchResult::kReady;
    if (evicted_why() != 0) return WatchResult::kReady;  // its read says why
    // Acquire: pairs with the owner's release increment of *word (its new target is visible).
    if (word->load(std::memory_order_acquire) != seen) return WatchResult::kRearmed;
    if (closing_.load(std::memory_order_acquire) != 0) return WatchResult::kClosed;
    sleep_for_commit(target, seen_word, kNoDeadline, FutexWatch{word, seen, false}, kWakeWatcher);
  }
}

ReaderCore::ArmResult ReaderCore::arm_watch(uint64_t target, uint32_t& seen, bool keep_seen) {
  OpGuard guard(this);
  if (!guard.admitted() || page_ == nullptr) return ArmResult::kReady;
  const SegmentHeader& h = segment_.header();
  // Acquire: pairs with the release fetch_add in commit()/end_stream(), as in wait_admitted():
  // loaded before the length and state below.
  if (!keep_seen) seen = h.wait_word.load(std::memory_order_acquire);
  if (load_committed(h) >= target || load_state(h) != StreamState::kOpen || evicted_why() != 0) {
    return ArmResult::kReady;
  }
  const Announced announced = announce_wait(kWakeWatcher, target, seen);
  // Acquire: pairs with commit()'s release store (and close()'s of the state).
  if (announced == Announced::kSatisfied || load_committed(h) >= target ||
      load_state(h) != StreamState::kOpen) {
    return ArmResult::kReady;
  }
  return announced == Announced::kSure ? ArmResult::kArmed : ArmResult::kUnsure;
}

std::array<FutexWatch, 2> ReaderCore::watch_words(uint32_t seen) const {
  return {FutexWatch{&segment_.header().wait_word, seen, true}, FutexWatch{&closing_, 0, false}};
}

void ReaderCore::disarm_watch(uint32_t seen) {
  OpGuard guard(this);
  if (guard.admitted()) withdraw_wait(kWakeWatcher, seen);
}

void ReaderCore::publish_position_now() {
  OpGuard guard(this);
  if (guard.admitted()) publish_position(position_, /*now=*/true);
}

Result<size_t> ReaderCore::read_at(uint64_t offset, std::span<std::byte> buf,
                                   Clock::time_point deadline, const Cancellation* cancel) {
  if (buf.empty()) return Status(ErrorCode::kInvalidArgument, describe_ + ": empty buffer");
  OpGuard guard(this, OpGuard::kOwner);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  Status s = wait_admitted(offset + 1, deadline, cancel);
  if (s.code() == ErrorCode::kEndOfStream) return size_t{0};
  if (!s.ok()) return s;
  if (Status s = check_intact(offset); !s.ok()) return s;
  auto available = available_from(offset, committed());
  if (!available.ok()) return available.status();
  size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), *available));
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
  OpGuard guard(this, OpGuard::kOwner);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  if (auto_commit_) commit_delivered();
  // The previous view is done with: the producer of a blocking ring may reuse it.
  publish_position(position_, /*now=*/false);
  Status s = wait_admitted(position_ + 1, deadline, cancel);
  if (s.code() == ErrorCode::kEndOfStream) return std::span<const std::byte>();
  if (!s.ok()) return s;
  if (Status s = check_intact(position_); !s.ok()) return s;
  auto available = available_from(position_, committed());
  if (!available.ok()) return available.status();
  size_t n = static_cast<size_t>(std::min<uint64_t>(max, *available));
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
  if (auto available = available_from(offset, committed); !available.ok()) {
    return available.status();
  }
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
  OpGuard guard(this, OpGuard::kOwner);
  if (!guard.admitted()) return Status(ErrorCode::kInterrupted, describe_ + ": reader closed");
  if (auto_commit_) commit_delivered();
  // The previous record is done with: the producer of a blocking ring may reuse it.
  publish_position(position_, /*now=*/false);
  uint64_t committed = cached_committed_;
  if (position_ >= committed) {
    Status s = wait_admitted(position_ + 1, deadline, cancel);
    if (s.code() == ErrorCode::kEndOfStream) return std::optional<RecordView>();
    if (!s.ok()) return s;
    committed = this->committed();
    if (auto available = available_from(position_, committed); !available.ok()) {
      return available.status();
    }
    cached_committed_ = committed;
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
