// Unit tests of the segment core: producer and reader on one segment (a memfd), in one process.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "shm/naming.hpp"
#include "shm/producer_core.hpp"
#include "shm/reader_core.hpp"
#include "shm/segment_fixture.hpp"
#include "support/harness.hpp"

namespace shmstream::shm {
namespace {

using namespace std::chrono_literals;
using test::eventually;
using test::thread_sleeps_in_futex;
using ::testing::HasSubstr;

TEST_F(SegmentTest, FormatWritesAValidHeader) {
  format();
  auto segment = Segment::map(fd_, Access::kReadOnly, MapExtent::kHeaderOnly, "unit");
  ASSERT_TRUE(segment.ok()) << segment.status().to_string();
  const SegmentHeader& h = segment->header();
  EXPECT_EQ(h.magic, kMagic);
  EXPECT_EQ(h.layout_version, kLayoutVersion);
  EXPECT_EQ(h.stream_id, 42u);
  EXPECT_EQ(segment->name(), "unit");
  EXPECT_EQ(load_state(h), StreamState::kOpen);
  EXPECT_EQ(h.committed_length.load(), 0u);
}

TEST_F(SegmentTest, AppendThenReadToCleanEnd) {
  format();
  auto p = producer();
  ASSERT_TRUE(p.append(bytes_of("hello ")).ok());
  ASSERT_TRUE(p.append(bytes_of("world")).ok());
  ASSERT_TRUE(p.close().ok());
  auto r = reader();
  char buf[64];
  auto n = r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr);
  ASSERT_TRUE(n.ok()) << n.status().to_string();
  EXPECT_EQ(std::string(buf, *n), "hello world");
  auto end = r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr);
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(*end, 0u);  // clean end
  EXPECT_EQ(r.wait_until(100, in(1s), nullptr).code(), ErrorCode::kEndOfStream);
}

TEST_F(SegmentTest, ReserveCommitIsZeroCopyAndPartialCommitsPublishOnlyWhatIsCommitted) {
  format();
  auto p = producer();
  auto span = p.reserve(10);
  ASSERT_TRUE(span.ok());
  std::memcpy(span->data(), "0123456789", 10);
  ASSERT_TRUE(p.commit(4).ok());
  auto r = reader();
  EXPECT_EQ(r.committed(), 4u);
  auto view = r.view(0, 4);
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(text_of(*view), "0123");
  EXPECT_EQ(r.view(0, 5).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(p.commit(1).code(), ErrorCode::kInvalidArgument);  // nothing reserved any more
}

TEST_F(SegmentTest, ReadBlocksUntilTheProducerCommits) {
  format();
  auto p = producer();
  auto r = reader();
  std::string got;
  std::thread t = test::blocked_thread([&] {
    char buf[16];
    auto n = r.read(std::as_writable_bytes(std::span(buf)), in(10s), nullptr);
    if (n.ok()) got.assign(buf, *n);
  });
  ASSERT_TRUE(p.append(bytes_of("wake")).ok());
  t.join();
  EXPECT_EQ(got, "wake");
}

TEST_F(SegmentTest, CommitsWakeNobodyWhileNoReaderSleeps) {
  format();
  auto p = producer();
  uint32_t slot = 0;
  auto r = reader(&slot);
  uint32_t before = wait_word();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(p.append(bytes_of("x")).ok());
  EXPECT_EQ(wait_word(), before);  // the wake path (bump + FUTEX_WAKE) was never taken
  EXPECT_EQ(page_of(slot).wake[kWakeOwn].wanted.load(), kNobody);
  EXPECT_EQ(r.committed(), 100u);
}

TEST_F(SegmentTest, AReaderSleepingForAFarOffsetIsWokenOnlyWhenItIsReached) {
  format();
  auto p = producer();
  uint32_t slot = 0;
  auto r = reader(&slot);
  std::atomic<pid_t> tid{0};  // kept: the test checks below that the thread still sleeps
  Status status;
  std::thread t([&] {
    tid = static_cast<pid_t>(syscall(SYS_gettid));
    status = r.wait_until(1000, in(30s), nullptr);
  });
  ASSERT_TRUE(eventually([&] { return tid != 0 && thread_sleeps_in_futex(tid); }));
  EXPECT_EQ(page_of(slot).wake[kWakeOwn].wanted.load(), 1000u);  // in its own page
  uint32_t before = wait_word();
  std::vector<std::byte> some(100);
  for (int i = 0; i < 9; ++i) ASSERT_TRUE(p.append(some).ok());  // 900 < 1000
  EXPECT_EQ(wait_word(), before);
  EXPECT_TRUE(thread_sleeps_in_futex(tid));
  ASSERT_TRUE(p.append(some).ok());  // 1000: now
  t.join();
  EXPECT_TRUE(status.ok()) << status.to_string();
  // Awake, its request matches nothing: the producer moved the word past its seen_word.
  const WakeRequest& request = page_of(slot).wake[kWakeOwn];
  EXPECT_TRUE(request.wanted.load() == kNobody || request.seen_word.load() != wait_word());
}

// A streaming producer drops its fence for a light barrier (readers then pay a membarrier before
// they sleep), and goes back to fencing when readers sleep between its commits. Either way a
// sleeping reader is woken.
TEST_F(SegmentTest, TheProducerSwitchesBarriersWithTheTrafficAndWakesReadersInBothModes) {
  if (!register_light_barriers()) GTEST_SKIP() << "membarrier(GLOBAL_EXPEDITED) unavailable";
  format();
  auto p = producer();
  auto r = reader();
  std::atomic<uint32_t>& light = raw_header().light_producer;
  EXPECT_EQ(light.load(), 0u);  // a new producer fences
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(p.append(bytes_of("x")).ok());
  EXPECT_EQ(light.load(), 1u);  // 100 commits woke nobody: streaming
  // A sleeping reader woken by a light commit; then another, at once: wake-ups are frequent.
  for (int round = 0; round < 2; ++round) {
    EXPECT_EQ(light.load(), 1u) << round;
    std::atomic<pid_t> tid{0};
    Status status;
    std::thread t([&] {
      tid = static_cast<pid_t>(syscall(SYS_gettid));
      status = r.wait_until(r.committed() + 1, in(10s), nullptr);
    });
    ASSERT_TRUE(eventually([&] { return tid != 0 && thread_sleeps_in_futex(tid); }));
    ASSERT_TRUE(p.append(bytes_of("y")).ok());
    t.join();
    ASSERT_TRUE(status.ok()) << status.to_string();
  }
  EXPECT_EQ(light.load(), 0u);  // two wake-ups within 64 commits: fences again
  std::thread t = test::blocked_thread(
      [&] { EXPECT_TRUE(r.wait_until(r.committed() + 1, in(10s), nullptr).ok()); });
  ASSERT_TRUE(p.append(bytes_of("z")).ok());
  t.join();
}

// A reader's event-loop relay (watch()) and its own blocking wait sleep at once, each with its
// own wake request in the reader's page: the relay waking up and letting go of its request does
// not take the other's away.
TEST_F(SegmentTest, TheRelayAndTheReaderSleepOnTheirOwnWakeRequests) {
  format();
  auto p = producer();
  uint32_t slot = 0;
  auto r = reader(&slot);
  std::atomic<uint32_t> rearm{0};
  std::atomic<int> relay_result{-1};
  auto relay =
      test::blocked_thread([&] { relay_result = static_cast<int>(r.watch(100, &rearm, 0)); });
  Status own;
  auto waiter = test::blocked_thread([&] { own = r.wait_until(100, in(10s), nullptr); });
  EXPECT_EQ(page_of(slot).wake[kWakeWatcher].wanted.load(), 100u);
  EXPECT_EQ(page_of(slot).wake[kWakeOwn].wanted.load(), 100u);
  // The relay's owner moves its target: the relay wakes and lets go of its request.
  rearm.fetch_add(1);
  futex_wake_all(&rearm, /*shared=*/false);
  relay.join();
  EXPECT_EQ(relay_result.load(), static_cast<int>(ReaderCore::WatchResult::kRearmed));
  EXPECT_EQ(page_of(slot).wake[kWakeWatcher].wanted.load(), kNobody);
  EXPECT_EQ(page_of(slot).wake[kWakeOwn].wanted.load(), 100u);  // still asks
  ASSERT_TRUE(p.append(std::vector<std::byte>(100)).ok());
  waiter.join();
  EXPECT_TRUE(own.ok()) << own.to_string();
}

// Many tiny commits racing readers that sleep between them: a lost wake-up shows as a timeout.
TEST_F(SegmentTest, NoWakeUpIsLostUnderRacingCommits) {
  format();
  auto p = producer();
  constexpr int kReaders = 3;
  constexpr uint64_t kCommits = 100'000;
  std::vector<std::unique_ptr<ReaderCore>> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.push_back(new_reader());
  }
  std::vector<Status> results(kReaders);
  std::vector<std::thread> threads;
  for (int i = 0; i < kReaders; ++i) {
    threads.emplace_back([&, i] {
      uint64_t seen = 0;
      while (seen < kCommits) {
        auto view = readers[i]->next(1 << 20, in(20s), nullptr);
        if (!view.ok()) {
          results[i] = view.status();
          return;
        }
        seen += view->size();
      }
    });
  }
  std::byte one{1};
  uint32_t wakes_before = wait_word();
  for (uint64_t i = 0; i < kCommits; ++i) {
    ASSERT_TRUE(p.append(std::span(&one, 1)).ok());
    if (i % 16 == 0) std::this_thread::yield();  // let readers catch up and go to sleep
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kReaders; ++i) EXPECT_TRUE(results[i].ok()) << results[i].to_string();
  // The race under test happened: readers slept and were woken many times.
  EXPECT_GT(wait_word() - wakes_before, 10u);
  std::printf("%u wake-ups over %llu commits\n", wait_word() - wakes_before,
              static_cast<unsigned long long>(kCommits));
}

TEST_F(SegmentTest, ASpinningReaderSeesCommitsWithoutAnyWakeUpAndStillTimesOutAndCancels) {
  format();
  auto p = producer();
  uint32_t slot = 0;
  auto r = reader(&slot);
  r.set_spin(true);
  uint32_t before = wait_word();
  std::string got;
  std::thread t([&] {
    char buf[8];
    auto n = r.read(std::as_writable_bytes(std::span(buf)), in(10s), nullptr);
    if (n.ok()) got.assign(buf, *n);
  });
  ASSERT_TRUE(p.append(bytes_of("spun")).ok());
  t.join();
  EXPECT_EQ(got, "spun");
  EXPECT_EQ(wait_word(), before);  // it never slept, so nobody had to wake it
  EXPECT_EQ(page_of(slot).wake[kWakeOwn].wanted.load(), kNobody);
  char buf[8];
  EXPECT_EQ(r.read(std::as_writable_bytes(std::span(buf)), in(30ms), nullptr).status().code(),
            ErrorCode::kTimeout);
  Cancellation cancel;
  Status status;
  std::thread c(
      [&] { status = r.read(std::as_writable_bytes(std::span(buf)), in(10s), &cancel).status(); });
  cancel.cancel();
  c.join();
  EXPECT_EQ(status.code(), ErrorCode::kInterrupted);
  ASSERT_TRUE(p.close().ok());
  EXPECT_EQ(r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr).value(), 0u);
}

TEST_F(SegmentTest, ReadTimesOut) {
  format();
  auto p = producer();
  auto r = reader();
  char buf[4];
  auto start = Clock::now();
  auto n = r.read(std::as_writable_bytes(std::span(buf)), in(50ms), nullptr);
  EXPECT_EQ(n.status().code(), ErrorCode::kTimeout);
  EXPECT_GE(Clock::now() - start, 50ms);
}

TEST_F(SegmentTest, CancellationWakesABlockedRead) {
  format();
  auto p = producer();
  auto r = reader();
  Cancellation cancel;
  Status status;
  std::thread t = test::blocked_thread([&] {
    char buf[4];
    status = r.read(std::as_writable_bytes(std::span(buf)), in(30s), &cancel).status();
  });
  auto start = Clock::now();
  cancel.cancel();
  t.join();
  EXPECT_EQ(status.code(), ErrorCode::kInterrupted) << status.to_string();
  EXPECT_LT(Clock::now() - start, 1s);
}

// What a restarted daemon does to a reader that did not reattach within its grace (its page
// marked, its slot freed, the readers woken): the reader, asleep, wakes and is told; its reads
// and its event-loop watches fail or report ready from then on, even with bytes to read.
TEST_F(SegmentTest, AReaderTheDaemonLetGoIsWokenAndToldSo) {
  format();
  auto p = producer();
  uint32_t slot = 0;
  auto r = reader(&slot);
  ASSERT_TRUE(p.append(bytes_of("abc"), kNoDeadline, nullptr).ok());
  char buf[4];
  ASSERT_EQ(r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr).value(), 3u);
  Status status;
  std::thread t = test::blocked_thread([&] {
    status = r.read(std::as_writable_bytes(std::span(buf)), kNoDeadline, nullptr).status();
  });
  ASSERT_TRUE(mark_page_evicted(page_fds_.at(pages_by_slot_.at(slot)), kEvictedUnclaimed).ok());
  release(slot);
  wake_readers(raw_header());
  t.join();
  EXPECT_EQ(status.code(), ErrorCode::kUnavailable) << status.to_string();
  EXPECT_THAT(status.message(), HasSubstr("reattachment grace"));
  ASSERT_TRUE(p.append(bytes_of("more"), kNoDeadline, nullptr).ok());
  EXPECT_EQ(r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr).status().code(),
            ErrorCode::kUnavailable);
  uint32_t seen = 0;
  EXPECT_EQ(r.arm_watch(p.committed() + 1, seen, false), ReaderCore::ArmResult::kReady);
  std::atomic<uint32_t> word{0};
  EXPECT_EQ(r.watch(p.committed() + 1, &word, 0), ReaderCore::WatchResult::kReady);
}

TEST_F(SegmentTest, ClosingTheReaderWakesABlockedReadInAnotherThread) {
  format();
  auto p = producer();
  auto r = reader();
  Status status;
  std::thread t = test::blocked_thread([&] { status = r.next(16, kNoDeadline, nullptr).status(); });
  r.close();
  t.join();
  EXPECT_EQ(status.code(), ErrorCode::kInterrupted) << status.to_string();
  EXPECT_FALSE(r.segment().valid());  // unmapped once the blocked read left
  EXPECT_EQ(r.view(0, 0).status().code(), ErrorCode::kInterrupted);
}

// The reading thread's operations are counted without locked instructions (close() pays a
// process-wide barrier instead): close() from another thread in the middle of a stream of
// reads that never block must still wait for the read in progress, then refuse the next. Under
// AddressSanitizer a read let through after the unmapping would fault.
TEST_F(SegmentTest, ClosingTheReaderWhileAnotherThreadReadsWithoutPauseIsSafe) {
  format();
  auto p = producer();
  ASSERT_TRUE(p.append(bytes_of("bytes to read again and again")).ok());
  for (int round = 0; round < 200; ++round) {
    auto r = reader();
    std::atomic<uint64_t> reads{0};
    Status status;
    std::thread t([&] {
      for (;;) {
        // A copy: a view into the mapping would not outlive the close.
        char buf[5] = {};
        auto n = r.read_at(0, std::as_writable_bytes(std::span(buf)), kNoDeadline, nullptr);
        if (!n.ok()) {
          status = n.status();
          return;
        }
        if (*n != sizeof(buf) || std::memcmp(buf, "bytes", sizeof(buf)) != 0) {
          status = Status(ErrorCode::kCorrupt, "wrong bytes");
          return;
        }
        reads.fetch_add(1, std::memory_order_release);
      }
    });
    // Let the reader get going (it never blocks), then close under it.
    while (reads.load(std::memory_order_acquire) < static_cast<uint64_t>(round % 7) + 1) {
      std::this_thread::yield();
    }
    r.close();
    t.join();
    ASSERT_EQ(status.code(), ErrorCode::kInterrupted) << round << ": " << status.to_string();
    EXPECT_FALSE(r.segment().valid());
  }
}

TEST_F(SegmentTest, AbortKeepsCommittedBytesReadableThenReportsItsReason) {
  format();
  auto p = producer();
  ASSERT_TRUE(p.append(bytes_of("kept")).ok());
  auto r = reader();
  ASSERT_TRUE(p.abort(AbortReason{AbortKind::kExitStatus, 3, "gen"}).ok());
  char buf[16];
  auto n = r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "kept");
  auto ended = r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr);
  EXPECT_EQ(ended.status().code(), ErrorCode::kProducerDied);
  EXPECT_THAT(ended.status().message(),
              HasSubstr("aborted: its command `gen` exited with status 3"));
  EXPECT_EQ(load_abort_reason(raw_header()), (AbortReason{AbortKind::kExitStatus, 3, "gen"}));
  EXPECT_EQ(p.append(bytes_of("x")).code(), ErrorCode::kStreamClosed);
}

TEST_F(SegmentTest, TheFirstToAbortRecordsTheReasonAndNobodyChangesItLater) {
  format();
  auto p = producer();
  auto r = reader();
  // The producer's claim wins; the daemon, aborting after it (it saw the producer go), neither
  // ends the stream again nor changes the reason.
  ASSERT_TRUE(p.abort(AbortReason::because("disk full")).ok());
  EXPECT_FALSE(
      abort_stream(raw_header(), AbortReason{AbortKind::kProducerDied, 1, ""}, Claimant::kDaemon));
  EXPECT_EQ(load_abort_reason(raw_header()), AbortReason::because("disk full"));
  // A close after an abort does not turn it clean.
  EXPECT_FALSE(p.close().ok());
  EXPECT_EQ(load_state(raw_header()), StreamState::kAborted);
  char buf[4];
  EXPECT_THAT(r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr).status().message(),
              HasSubstr("aborted by its producer: disk full"));
}

TEST_F(SegmentTest, AProducerKilledAsItClaimedTheReasonStillEndsAsDied) {
  format();
  auto p = producer();
  auto r = reader();
  // Claimed, nothing written, then killed: the daemon's abort still ends the stream.
  raw_header().abort_claim.store(static_cast<uint32_t>(Claimant::kProducer));
  EXPECT_TRUE(
      abort_stream(raw_header(), AbortReason{AbortKind::kQuota, 0, "x"}, Claimant::kDaemon));
  AbortReason why = load_abort_reason(raw_header());
  EXPECT_EQ(why.kind, AbortKind::kProducerDied);
  EXPECT_EQ(why.code, static_cast<int32_t>(producer_pid_now(raw_header())));
}

TEST_F(SegmentTest, AScribbledReasonReadsAsHarmlessText) {
  format();
  auto p = producer();
  auto r = reader();
  ASSERT_TRUE(p.abort(AbortReason::because("x")).ok());
  // The owner scribbles the reason after the fact: an impossible kind, no NUL, control bytes.
  raw_header().abort_kind.store(0xDEADBEEF);
  std::memset(raw_header().abort_message, '\n', sizeof(raw_header().abort_message));
  raw_header().abort_message[5] = '\x1b';
  AbortReason why = load_abort_reason(raw_header());
  EXPECT_EQ(why.kind, AbortKind::kUnknown);
  EXPECT_EQ(why.message, std::string(kMaxAbortMessage, '?'));
  char buf[4];
  auto ended = r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr);
  EXPECT_EQ(ended.status().code(), ErrorCode::kProducerDied);
  EXPECT_THAT(ended.status().message(), HasSubstr("aborted: ???"));
}

TEST_F(SegmentTest, ALongReasonIsCutOnACharacterBoundary) {
  format();
  auto p = producer();
  std::string message = std::string(kMaxAbortMessage - 1, 'a') + "\xC3\xA9 and more";  // é
  ASSERT_TRUE(p.abort(AbortReason::because(message)).ok());
  EXPECT_EQ(load_abort_reason(raw_header()).message, std::string(kMaxAbortMessage - 1, 'a'));
}

TEST_F(SegmentTest, CancelFailsEveryReadEvenOfCommittedBytes) {
  format();
  auto p = producer();
  ASSERT_TRUE(p.append(bytes_of("data")).ok());
  auto r = reader();
  ASSERT_TRUE(end_stream(raw_header(), StreamState::kCancelled));
  EXPECT_EQ(r.view(0, 4).status().code(), ErrorCode::kCancelled);
  char buf[4];
  EXPECT_EQ(r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr).status().code(),
            ErrorCode::kCancelled);
  EXPECT_EQ(p.append(bytes_of("x")).code(), ErrorCode::kCancelled);
  EXPECT_FALSE(end_stream(raw_header(), StreamState::kCancelled));  // only once
  EXPECT_FALSE(end_stream(raw_header(), StreamState::kClosed));
}

TEST_F(SegmentTest, SeekAndReadAt) {
  format();
  auto p = producer();
  ASSERT_TRUE(p.append(bytes_of("abcdefghij")).ok());
  auto r = reader();
  char buf[3];
  ASSERT_TRUE(r.seek(2, Whence::kStart).ok());
  ASSERT_TRUE(r.seek(3, Whence::kCurrent).ok());
  EXPECT_EQ(r.position(), 5u);
  auto n = r.read(std::as_writable_bytes(std::span(buf)), in(1s), nullptr);
  EXPECT_EQ(std::string(buf, *n), "fgh");
  ASSERT_TRUE(r.seek(-1, Whence::kEnd).ok());
  EXPECT_EQ(r.position(), 9u);
  EXPECT_EQ(r.seek(-11, Whence::kEnd).code(), ErrorCode::kInvalidArgument);
  auto at = r.read_at(1, std::as_writable_bytes(std::span(buf)), in(1s), nullptr);
  EXPECT_EQ(std::string(buf, *at), "bcd");
  EXPECT_EQ(r.position(), 9u);  // read_at leaves the position alone
}

TEST_F(SegmentTest, GrowsToGibibytesWhileEarlierViewsStayValid) {
  format();
  auto p = producer();
  ASSERT_TRUE(p.append(bytes_of("first")).ok());
  auto r = reader();
  auto first = r.view(0, 5);
  ASSERT_TRUE(first.ok());
  const std::byte* first_address = first->data();
  // 3 GiB in 64 MiB reservations, marking the first and last byte of each; nobody declared a
  // size, and the reader never remaps.
  constexpr uint64_t kChunk = 64ULL << 20;
  constexpr uint64_t kTotal = 3ULL << 30;
  for (uint64_t done = 5; done < kTotal; done += kChunk) {
    auto span = p.reserve(kChunk);
    ASSERT_TRUE(span.ok()) << span.status().to_string();
    (*span)[0] = std::byte{0xA5};
    (*span)[kChunk - 1] = std::byte{0x5A};
    ASSERT_TRUE(p.commit(kChunk).ok());
  }
  EXPECT_GE(r.committed(), kTotal);
  auto last = r.view(r.committed() - 1, 1);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ((*last)[0], std::byte{0x5A});
  EXPECT_EQ(text_of(std::span(first_address, 5)), "first");
  EXPECT_EQ(r.view(0, 5)->data(), first_address);
}

TEST_F(SegmentTest, AppendBeyondMaximumFailsAndKeepsData) {
  format(1 << 20);
  auto p = producer();
  std::vector<std::byte> big(700 << 10, std::byte{1});
  ASSERT_TRUE(p.append(big).ok());
  Status s = p.append(big);
  EXPECT_EQ(s.code(), ErrorCode::kTooLarge) << s.to_string();
  auto r = reader();
  EXPECT_EQ(r.committed(), big.size());
}

TEST_F(SegmentTest, ReaderMappingCannotBeMadeWritable) {
  format();
  auto p = producer();
  ASSERT_TRUE(p.append(bytes_of("ro")).ok());
  auto r = reader();
  auto view = r.view(0, 2);
  ASSERT_TRUE(view.ok());
  auto* page = const_cast<std::byte*>(r.segment().mapping().data());
  EXPECT_NE(mprotect(page, 4096, PROT_READ | PROT_WRITE), 0);
  EXPECT_EQ(errno, EACCES);
  EXPECT_TRUE(test::write_faults(view->data())) << "a write through the reader's mapping worked";
  EXPECT_EQ(text_of(*view), "ro");
}

TEST_F(SegmentTest, RefusesABadMagic) {
  format();
  raw_header().magic = 0x1234;
  auto s = map_readonly();
  EXPECT_EQ(s.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.status().message().find("not a shmstream segment"), std::string::npos);
}

TEST_F(SegmentTest, RefusesAnotherLayoutVersion) {
  format();
  raw_header().layout_version = kLayoutVersion + 1;
  reseal();
  EXPECT_EQ(map_readonly().status().code(), ErrorCode::kVersionMismatch);
}

TEST_F(SegmentTest, RefusesAChecksumMismatch) {
  format();
  raw_header().name[0] = 'X';
  auto s = map_readonly();
  EXPECT_EQ(s.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.status().message().find("checksum"), std::string::npos) << s.status().message();
}

TEST_F(SegmentTest, RefusesATruncatedFile) {
  format();
  ASSERT_EQ(ftruncate(fd_, 100), 0);
  auto s = map_readonly();
  EXPECT_EQ(s.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(s.status().message().find("truncated"), std::string::npos) << s.status().message();
}

TEST_F(SegmentTest, RefusesCommittedBytesTheFileDoesNotHold) {
  format();
  {
    auto p = producer();
    ASSERT_TRUE(p.append(bytes_of("abc")).ok());
  }
  ASSERT_EQ(ftruncate(fd_, kHeaderSize + 1), 0);  // data cut short behind the header's back
  auto s = map_readonly();
  EXPECT_EQ(s.status().code(), ErrorCode::kCorrupt);
  raw_header();  // keep the header mapping valid for the next check
  ASSERT_EQ(ftruncate(fd_, kHeaderSize + (1 << 20)), 0);
  raw_header().state.store(99);
  EXPECT_EQ(map_readonly().status().code(), ErrorCode::kCorrupt);
}

TEST(SegmentValidation, RandomHeadersNeverCrashAndAreRefused) {
  std::mt19937_64 rng(7);
  alignas(SegmentHeader) std::byte raw[sizeof(SegmentHeader)];
  for (int i = 0; i < 20000; ++i) {
    for (auto& b : raw) b = static_cast<std::byte>(rng());
    auto* h = reinterpret_cast<SegmentHeader*>(raw);
    if (i % 2 == 0) h->magic = kMagic;  // get past the first check half the time
    if (i % 4 == 0) h->layout_version = kLayoutVersion;
    EXPECT_FALSE(validate_header(*h, rng()).ok());
  }
}

TEST(StreamNames, ValidationGivesClearErrors) {
  EXPECT_TRUE(validate_stream_name("cam0").ok());
  EXPECT_TRUE(validate_stream_name("market.data-1 (eu)").ok());
  EXPECT_TRUE(validate_stream_name(std::string(255, 'a')).ok());
  auto expect_bad = [](std::string_view name, std::string_view why) {
    Status s = validate_stream_name(name);
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << name;
    EXPECT_NE(s.message().find(why), std::string::npos) << s.message();
  };
  expect_bad("", "empty");
  expect_bad(std::string(256, 'a'), "256 bytes");
  expect_bad("a/b", "'/'");
  expect_bad("..", "reserved");
  expect_bad(".", "reserved");
  expect_bad(std::string("a\nb"), "control character");
  expect_bad(std::string("a\0b", 3), "control character");
}

}  // namespace
}  // namespace shmstream::shm

namespace shmstream::shm {
namespace {

// A reader that maps the segment while its producer grows the file must never find it
// "truncated": the file's size is taken after the sizes in the header, never before (the demo
// once failed so, a reader attaching before the first byte).
TEST(SegmentRace, MappingWhileTheProducerGrowsTheFileNeverSeesItTruncated) {
  int refusals = 0;
  for (int round = 0; round < 100 && refusals == 0; ++round) {
    int fd = memfd_create("segment_race", MFD_CLOEXEC);
    SegmentParams params;
    params.name = "race";
    params.stream_id = 9;
    params.max_data_size = 1ULL << 30;
    ASSERT_TRUE(format_segment(fd, params).ok());
    std::atomic<bool> done{false};
    std::thread producer([&] {
      ProducerCore p(Segment::map(fd, Access::kReadWrite, MapExtent::kWhole, "race").value(),
                     ReaderSet());
      const std::string chunk(256 << 10, 'g');
      for (int i = 0; i < 48; ++i) EXPECT_TRUE(p.append(bytes_of(chunk)).ok());
      done.store(true);
    });
    while (!done.load()) {
      auto segment = Segment::map(fd, Access::kReadOnly, MapExtent::kHeaderOnly, "race");
      if (!segment.ok()) {
        ++refusals;
        ADD_FAILURE() << segment.status().to_string();
        break;
      }
    }
    producer.join();
    close(fd);
  }
  EXPECT_EQ(refusals, 0);
}

}  // namespace
}  // namespace shmstream::shm
