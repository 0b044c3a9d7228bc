// A hostile owner lies in the shared header of its own stream; the reader core checks every
// shared value against the geometry it kept privately, and says kCorrupt instead of delivering
// bytes outside the ring or the file, or bytes the producer never committed. (In one process:
// the "owner" writes the header through a read-write mapping of its own, as any owner can.)
#include <gtest/gtest.h>

#include <string>

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

}  // namespace
}  // namespace shmstream::shm
