// A hostile owner lies in the shared header of its own stream; the reader core checks every
// shared value against the geometry it kept privately, and says kCorrupt instead of delivering
// bytes outside the ring or the file, or bytes the producer never committed. (In one process:
// the "owner" writes the header through a read-write mapping of its own, as any owner can.)
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "shm/fault_guard.hpp"
#include "shm/producer_core.hpp"
#include "shm/reader_core.hpp"
#include "shm/segment_fixture.hpp"
#include "support/status_matchers.hpp"

namespace shmstream::shm {
namespace {

using namespace std::chrono_literals;
using test::IsOk;
using test::StatusIs;

constexpr uint64_t kRing = 64 << 10;

SegmentParams ring(uint64_t capacity) {
  SegmentParams params;
  params.ring_capacity = capacity;
  return params;
}

TEST_F(SegmentTest, ACommittedLengthPastTheRingIsCorruptNotTenMegabytesOfMemory) {
  format(ring(kRing));
  ProducerCore p = producer();
  ASSERT_THAT(p.append(bytes_of(std::string(10000, 'r'))), IsOk());
  ReaderCore r = reader();
  raw_header().committed_length.store(10'000'000);  // the lie
  auto view = r.next(16 << 20, in(1s), nullptr);
  EXPECT_THAT(view, StatusIs(ErrorCode::kCorrupt));
  EXPECT_NE(view.status().message().find("ring holds"), std::string::npos)
      << view.status().message();
  std::byte buf[4096];
  EXPECT_THAT(r.read_at(0, buf, in(1s), nullptr), StatusIs(ErrorCode::kCorrupt));
  EXPECT_THAT(r.view(0, 100), StatusIs(ErrorCode::kCorrupt));
  EXPECT_EQ(r.position(), 0u);  // nothing was delivered
  // The truth again: the committed bytes read as before.
  raw_header().committed_length.store(10000);
  auto honest = r.next(1 << 20, in(1s), nullptr);
  ASSERT_THAT(honest, IsOk());
  EXPECT_EQ(honest->size(), 10000u);
}

TEST_F(SegmentTest, ARecordsRingWhoseLengthLiesIsCorrupt) {
  SegmentParams params = ring(kRing);
  params.records = true;
  format(params);
  ProducerCore p = producer();
  ASSERT_THAT(p.publish(bytes_of("one")), IsOk());
  ReaderCore r = reader();
  raw_header().committed_length.store(3 * kRing);
  EXPECT_THAT(r.next_record(in(1s), nullptr), StatusIs(ErrorCode::kCorrupt));
}

TEST_F(SegmentTest, ACommittedLengthPastTheFileIsCorruptNotASigbus) {
  format();
  ProducerCore p = producer();
  ASSERT_THAT(p.append(bytes_of("hello")), IsOk());
  ReaderCore r = reader();
  // Inside the reservation, past the file the producer grew (reading there would fault).
  raw_header().committed_length.store(raw_header().data_file_size.load() + 4096);
  EXPECT_THAT(r.next(1 << 20, in(1s), nullptr), StatusIs(ErrorCode::kCorrupt));
  std::byte buf[16];
  EXPECT_THAT(r.read_at(0, buf, in(1s), nullptr), StatusIs(ErrorCode::kCorrupt));
}

TEST_F(SegmentTest, AGarbageStateIsCorruptNotACleanEnd) {
  format();
  ProducerCore p = producer();
  ASSERT_THAT(p.append(bytes_of("abc")), IsOk());
  ReaderCore r = reader();
  ASSERT_THAT(r.next(3, in(1s), nullptr), IsOk());
  raw_header().state.store(77);
  // Waiting past the committed bytes: not an end of stream, not a hang.
  auto next = r.next(3, in(1s), nullptr);
  EXPECT_THAT(next, StatusIs(ErrorCode::kCorrupt));
  EXPECT_NE(next.status().message().find("invalid stream state 77"), std::string::npos)
      << next.status().message();
  EXPECT_THAT(r.wait_until(4, in(1s), nullptr), StatusIs(ErrorCode::kCorrupt));
}

// The owner truncates its segment file under a reader: the reader's mapping faults, the fault
// guard maps zeros over it, and the reader says kCorrupt instead of dying of SIGBUS.
TEST_F(SegmentTest, ShrinkingTheFileUnderAReaderIsCorruptNotASigbus) {
  format();
  ProducerCore p = producer();
  ASSERT_THAT(p.append(bytes_of(std::string(64 << 10, 'x'))), IsOk());
  ReaderCore r = reader();
  auto view = r.next(32 << 10, in(1s), nullptr);
  ASSERT_THAT(view, IsOk());
  ASSERT_EQ((*view)[20000], std::byte{'x'});
  const unsigned long before = FaultGuard::recovered();
  ASSERT_EQ(ftruncate(fd_, kHeaderSize + 4096), 0);  // the owner's attack
  // The held view: past the new end it now reads zeros, not a SIGBUS.
  EXPECT_EQ((*view)[20000], std::byte{0});
  EXPECT_GT(FaultGuard::recovered(), before);
  EXPECT_TRUE(r.segment().faulted());
  // Every call from now on: kCorrupt, naming the cause.
  auto next = r.next(1 << 20, in(1s), nullptr);
  EXPECT_THAT(next, StatusIs(ErrorCode::kCorrupt));
  EXPECT_NE(next.status().message().find("shrank"), std::string::npos) << next.status().message();
  std::byte buf[64];
  EXPECT_THAT(r.read_at(0, buf, in(1s), nullptr), StatusIs(ErrorCode::kCorrupt));
  EXPECT_THAT(r.view(0, 10), StatusIs(ErrorCode::kCorrupt));
}

TEST_F(SegmentTest, ACopyThatFaultsIsNotDeliveredAsGood) {
  format();
  ProducerCore p = producer();
  ASSERT_THAT(p.append(bytes_of(std::string(64 << 10, 'y'))), IsOk());
  ReaderCore r = reader();
  ASSERT_EQ(ftruncate(fd_, kHeaderSize + 4096), 0);
  std::vector<std::byte> buf(64 << 10);
  // The header (inside the file) still says 64 KiB committed; the copy runs past the end.
  EXPECT_THAT(r.read_at(0, buf, in(1s), nullptr), StatusIs(ErrorCode::kCorrupt));
  EXPECT_EQ(r.position(), 0u);
}

TEST_F(SegmentTest, ShrinkingBelowTheHeaderIsCorruptForReaderAndProducer) {
  format(ring(kRing));
  ProducerCore p = producer();
  ASSERT_THAT(p.append(bytes_of(std::string(1000, 'z'))), IsOk());
  ReaderCore r = reader();
  ASSERT_EQ(ftruncate(fd_, 100), 0);
  EXPECT_THAT(r.next(100, in(1s), nullptr), StatusIs(ErrorCode::kCorrupt));
  EXPECT_THAT(r.wait_until(2000, in(1s), nullptr), StatusIs(ErrorCode::kCorrupt));
  // The owner's own producer is hurt by its own attack, but as an error, not a signal.
  EXPECT_THAT(p.append(bytes_of("more")), StatusIs(ErrorCode::kCorrupt));
}

// Faults outside the library's mappings are not swallowed: the process dies of them as before.
TEST(FaultGuardDeathTest, AFaultOutsideEveryGuardedMappingStillKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // A guarded mapping exists, so the handler is installed.
  int guarded_fd = memfd_create("guarded", MFD_CLOEXEC);
  ASSERT_EQ(ftruncate(guarded_fd, 4096), 0);
  void* guarded = mmap(nullptr, 4096, PROT_READ, MAP_SHARED, guarded_fd, 0);
  ASSERT_NE(guarded, MAP_FAILED);
  FaultGuard guard(guarded, 4096, PROT_READ);
  EXPECT_EXIT(
      {
        int fd = memfd_create("unguarded", MFD_CLOEXEC);
        if (ftruncate(fd, 8192) != 0) _exit(1);
        auto* p = static_cast<volatile char*>(mmap(nullptr, 8192, PROT_READ, MAP_SHARED, fd, 0));
        if (ftruncate(fd, 0) != 0) _exit(1);
        (void)p[4096];
        _exit(0);
      },
      // Killed by the SIGBUS, or by the handler installed before ours (a sanitizer's report).
      [](int status) {
        return (WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) ||
               (WIFEXITED(status) && WEXITSTATUS(status) != 0);
      },
      "");
  guard.reset();
  munmap(guarded, 4096);
  close(guarded_fd);
}

}  // namespace
}  // namespace shmstream::shm
