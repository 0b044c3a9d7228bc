// FutexRing: io_uring futex waits an event loop can poll. Woken across processes on a read-only
// mapping, completing at once on a changed word, and surviving what a hostile owner does to the
// page under a queued wait (scribbling the word, truncating the file away).
#include "shm/futex_ring.hpp"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

namespace shmstream::shm {
namespace {

constexpr uint64_t kTag = 7;

// Whether `fd` polls readable within `ms`.
bool readable(int fd, int ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, ms) == 1 && (p.revents & POLLIN) != 0;
}

// A shared word in a memfd, mapped read-write (the producer's view) and read-only (a reader's).
struct SharedWord {
  SharedWord() {
    fd = memfd_create("futex-ring-test", MFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(ftruncate(fd, 4096), 0);
    rw = static_cast<std::atomic<uint32_t>*>(
        mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    ro = static_cast<const std::atomic<uint32_t>*>(
        mmap(nullptr, 4096, PROT_READ, MAP_SHARED, fd, 0));
    EXPECT_NE(static_cast<void*>(rw), MAP_FAILED);
    EXPECT_NE(static_cast<const void*>(ro), MAP_FAILED);
  }
  ~SharedWord() {
    munmap(static_cast<void*>(rw), 4096);
    munmap(const_cast<void*>(static_cast<const void*>(ro)), 4096);
    close(fd);
  }
  int fd = -1;
  std::atomic<uint32_t>* rw = nullptr;
  const std::atomic<uint32_t>* ro = nullptr;
};

class FutexRingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    efd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_GE(efd_, 0);
    auto created = FutexRing::create(efd_);
    if (!created.ok())
      GTEST_SKIP() << "no io_uring futex waits here: " << created.status().to_string();
    ring_ = std::move(created.value());
  }
  void TearDown() override {
    ring_ = FutexRing();
    if (efd_ >= 0) close(efd_);
  }
  // Consumes the eventfd's signal and the ring's completions: how many had `tag`.
  size_t drain(uint64_t tag) { return ring_.consume(tag); }
  int efd_ = -1;
  FutexRing ring_;
};

TEST_F(FutexRingTest, AWaitOnAReadOnlyMappingIsWokenByAnotherProcess) {
  SharedWord word;
  FutexWatch watch{word.ro, 0, /*shared=*/true};
  ASSERT_TRUE(ring_.wait(std::span(&watch, 1), kTag).ok());
  EXPECT_FALSE(readable(efd_, 50)) << "readable before anyone woke the word";
  pid_t child = fork();
  if (child == 0) {
    word.rw->store(1);
    futex_wake_all(word.rw, /*shared=*/true);
    _exit(0);
  }
  ASSERT_GT(child, 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(readable(efd_, 10'000)) << "the other process's wake posted nothing";
  EXPECT_EQ(drain(kTag), 1u);
  EXPECT_FALSE(readable(efd_, 0)) << "drain left the descriptor readable";
}

TEST_F(FutexRingTest, AnEpollLoopIsWokenByAWakeFromAnotherThread) {
  SharedWord word;
  int ep = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(ep, 0);
  epoll_event event{};
  event.events = EPOLLIN;
  ASSERT_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, efd_, &event), 0);
  for (uint32_t round = 0; round < 100; ++round) {
    FutexWatch watch{word.ro, round, true};
    ASSERT_TRUE(ring_.wait(std::span(&watch, 1), kTag).ok());
    std::thread waker([&] {
      word.rw->store(round + 1);
      futex_wake_all(word.rw, true);
    });
    // The completion is posted by task work in this thread, which interrupts epoll_wait once
    // (EINTR) as a signal without a handler would; then the eventfd is ready.
    int n;
    int interrupted = 0;
    while ((n = epoll_wait(ep, &event, 1, 10'000)) < 0 && errno == EINTR) ++interrupted;
    waker.join();
    ASSERT_LE(interrupted, 1) << "round " << round;
    ASSERT_EQ(n, 1) << "round " << round;
    ASSERT_EQ(drain(kTag), 1u) << "round " << round;
  }
  close(ep);
}

TEST_F(FutexRingTest, AWordThatAlreadyChangedCompletesAtOnceAndANopToo) {
  SharedWord word;
  word.rw->store(5);
  FutexWatch watch{word.ro, 4, true};  // expects 4, holds 5
  ASSERT_TRUE(ring_.wait(std::span(&watch, 1), kTag).ok());
  ASSERT_TRUE(readable(efd_, 10'000));
  EXPECT_EQ(drain(kTag), 1u);
  ASSERT_TRUE(ring_.nop(kTag + 1).ok());
  ASSERT_TRUE(readable(efd_, 10'000));
  EXPECT_EQ(drain(kTag), 0u);  // the NOP's tag is not the wait's
  EXPECT_FALSE(readable(efd_, 0));
}

TEST_F(FutexRingTest, APrivateWordWakesTheSameWaitAsTheSharedOne) {
  SharedWord word;
  std::atomic<uint32_t> closing{0};
  FutexWatch watches[2] = {{word.ro, 0, true}, {&closing, 0, false}};
  ASSERT_TRUE(ring_.wait(watches, kTag).ok());
  EXPECT_FALSE(readable(efd_, 20));
  closing.store(1);
  futex_wake_all(&closing, /*shared=*/false);
  ASSERT_TRUE(readable(efd_, 10'000)) << "the private word's wake posted nothing";
  EXPECT_EQ(drain(kTag), 1u);
}

TEST_F(FutexRingTest, ATimeoutCompletesOnItsOwn) {
  ASSERT_TRUE(ring_.timeout(std::chrono::milliseconds(1), kTag).ok());
  ASSERT_TRUE(readable(efd_, 10'000));
  EXPECT_EQ(drain(kTag), 1u);
}

// The owner scribbles the word without waking it: nothing completes (a missed wake-up is the
// owner's loss, as for a blocked reader), and the ring still works afterwards.
TEST_F(FutexRingTest, AScribbledWordWithoutAWakeLeavesTheWaitQueuedAndHarmless) {
  SharedWord word;
  FutexWatch watch{word.ro, 0, true};
  ASSERT_TRUE(ring_.wait(std::span(&watch, 1), kTag).ok());
  for (uint32_t v = 1; v < 1000; ++v) word.rw->store(v * 2654435761u);
  EXPECT_FALSE(readable(efd_, 20));
  futex_wake_all(word.rw, true);
  ASSERT_TRUE(readable(efd_, 10'000));
  EXPECT_EQ(drain(kTag), 1u);
}

// The owner truncates the file under the reader's mapping: a wait on the vanished page fails
// (-EFAULT in its completion) instead of raising SIGBUS, and a wait queued before the truncation
// stays harmless; the ring closes cleanly either way.
TEST_F(FutexRingTest, ATruncatedPageFailsTheWaitWithoutASignal) {
  SharedWord word;
  FutexWatch watch{word.ro, 0, true};
  ASSERT_TRUE(ring_.wait(std::span(&watch, 1), kTag).ok());  // queued before
  ASSERT_EQ(ftruncate(word.fd, 0), 0);
  FutexWatch gone{word.ro, 0, true};
  ASSERT_TRUE(ring_.wait(std::span(&gone, 1), kTag + 1).ok());  // on a page past the end
  ASSERT_TRUE(readable(efd_, 10'000));
  EXPECT_EQ(drain(kTag + 1), 1u);
  EXPECT_FALSE(readable(efd_, 20));  // the first wait sleeps on, woken by nobody
}

TEST_F(FutexRingTest, MoreWordsThanARingWaitTakesAreRefused) {
  std::atomic<uint32_t> words[FutexRing::kMaxRingWatches + 1] = {};
  FutexWatch watches[FutexRing::kMaxRingWatches + 1];
  for (size_t i = 0; i < std::size(watches); ++i) watches[i] = {&words[i], 0, false};
  EXPECT_EQ(ring_.wait(watches, kTag).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ring_.wait(std::span<const FutexWatch>(), kTag).code(), ErrorCode::kInvalidArgument);
}

// Closing a ring with a wait queued cancels the wait: a later wake finds nobody, and nothing
// leaks (the sanitizer builds check the process's own memory).
TEST_F(FutexRingTest, ClosingTheRingWithAQueuedWaitIsClean) {
  SharedWord word;
  for (int i = 0; i < 1000; ++i) {
    auto ring = FutexRing::create(efd_);
    ASSERT_TRUE(ring.ok()) << ring.status().to_string();
    FutexWatch watch{word.ro, 0, true};
    ASSERT_TRUE(ring->wait(std::span(&watch, 1), kTag).ok());
  }
  futex_wake_all(word.rw, true);
  FutexWatch watch{word.ro, 0, true};
  ASSERT_TRUE(ring_.wait(std::span(&watch, 1), kTag).ok());
  futex_wake_all(word.rw, true);
  ASSERT_TRUE(readable(efd_, 10'000));
  EXPECT_EQ(drain(kTag), 1u);
}

}  // namespace
}  // namespace shmstream::shm
