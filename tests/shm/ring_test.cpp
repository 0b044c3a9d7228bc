// Unit tests of rings (drop-oldest and block) and records in the segment core, in one process.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "shm/producer_core.hpp"
#include "shm/reader_core.hpp"
#include "shm/segment_fixture.hpp"
#include "support/harness.hpp"

namespace shmstream::shm {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kRing = 64 << 10;

// The byte at stream offset `offset` in these tests: recognisable, offset-dependent.
// (A multiplicative hash: never periodic in the ring's size.)
std::byte byte_at(uint64_t offset) {
  return static_cast<std::byte>((offset * 0x9E3779B97F4A7C15ULL) >> 56);
}

void append_pattern(ProducerCore& p, uint64_t length) {
  auto span = p.reserve(length);
  ASSERT_TRUE(span.ok()) << span.status().to_string();
  for (uint64_t i = 0; i < length; ++i) (*span)[i] = byte_at(p.committed() + i);
  ASSERT_TRUE(p.commit(length).ok());
}

bool matches_pattern(std::span<const std::byte> bytes, uint64_t offset) {
  for (uint64_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != byte_at(offset + i)) return false;
  }
  return true;
}

SegmentParams ring(uint64_t capacity, bool block = false, bool records = false) {
  SegmentParams params;
  params.ring_capacity = capacity;
  params.block_when_full = block;
  params.records = records;
  return params;
}

TEST_F(SegmentTest, RingCapacityIsRoundedToPagesAndAllocatedAtCreation) {
  format(ring(10000));
  auto segment = map_readonly();
  ASSERT_TRUE(segment.ok()) << segment.status().to_string();
  EXPECT_EQ(segment->ring_capacity(), 12288u);
  EXPECT_EQ(segment->header().data_file_size.load(), 12288u);
  EXPECT_EQ(lseek(fd_, 0, SEEK_END), static_cast<off_t>(kHeaderSize + 12288));
}

TEST_F(SegmentTest, RingKeepsOffsetsGrowingAndViewsAcrossTheWrapAreContiguous) {
  format(ring(kRing));
  auto p = producer();
  auto r = reader();
  // 5.5 rings' worth in odd-sized appends: many of them straddle the end of the ring.
  for (uint64_t i = 0; p.committed() < 5 * kRing + kRing / 2; ++i) {
    append_pattern(p, 1000 + (i * 7919) % 9000);
  }
  EXPECT_GT(r.committed(), 5 * kRing);
  uint64_t oldest = r.oldest();
  EXPECT_GE(oldest, r.committed() - kRing);
  EXPECT_LE(oldest, r.committed());
  // Everything still held reads back as written, in views that cross the wrap.
  for (uint64_t offset = oldest; offset < r.committed(); offset += 4096) {
    size_t length = static_cast<size_t>(std::min<uint64_t>(9000, r.committed() - offset));
    auto view = r.view(offset, length);
    ASSERT_TRUE(view.ok()) << view.status().to_string();
    ASSERT_TRUE(matches_pattern(*view, offset)) << "offset " << offset;
    EXPECT_TRUE(r.intact(offset));
  }
  EXPECT_EQ(r.view(oldest - 1, 1).status().code(), ErrorCode::kOverrun);
}

TEST_F(SegmentTest, DropOldestOverrunNamesTheOldestOffsetAndTheReaderResumesThere) {
  format(ring(kRing));
  auto p = producer();
  auto r = reader();
  for (int i = 0; i < 40; ++i) append_pattern(p, 8192);  // 5 rings: offset 0 is long gone
  std::vector<std::byte> buf(4096);
  auto n = r.read(buf, in(1s), nullptr);
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), ErrorCode::kOverrun);
  EXPECT_EQ(n.status().offset(), r.oldest());
  EXPECT_NE(n.status().message().find("oldest available is"), std::string::npos);
  ASSERT_TRUE(r.seek(static_cast<int64_t>(n.status().offset()), Whence::kStart).ok());
  ASSERT_TRUE(p.close().ok());
  uint64_t total = 0;
  for (;;) {
    auto got = r.read(buf, in(1s), nullptr);
    ASSERT_TRUE(got.ok()) << got.status().to_string();
    if (*got == 0) break;
    ASSERT_TRUE(matches_pattern(std::span(buf).first(*got), r.position() - *got));
    total += *got;
  }
  EXPECT_EQ(r.position(), p.committed());
  EXPECT_GT(total, kRing / 2);
}

// A reader joining a block ring while the producer moves on: the daemon claimed its slot at
// an oldest offset the producer had already decided to overwrite (it had not seen the slot).
// The reader, which has read nothing and asked for no offset, starts at the new oldest instead
// of failing; one that asked for the lost offset gets the overrun.
TEST_F(SegmentTest, AReaderJoiningABlockRingAsTheProducerMovesOnStartsAtTheNewOldest) {
  format(ring(kRing, /*block=*/true));
  auto p = producer();
  for (int i = 0; i < 40; ++i) append_pattern(p, 8192);  // no reader yet: 5 rings go by
  auto r = slotted_reader();  // claimed at 0, as if the claim raced the producer
  ASSERT_GT(r.oldest(), 0u);
  std::vector<std::byte> buf(4096);
  auto n = r.read(buf, in(1s), nullptr);
  ASSERT_TRUE(n.ok()) << n.status().to_string();
  EXPECT_EQ(r.position() - *n, r.oldest());
  EXPECT_TRUE(matches_pattern(std::span(buf).first(*n), r.position() - *n));
  auto asked = slotted_reader();
  ASSERT_TRUE(asked.seek(0, Whence::kStart).ok());
  EXPECT_EQ(asked.read(buf, in(1s), nullptr).status().code(), ErrorCode::kOverrun);
}

TEST_F(SegmentTest, AViewOverwrittenAfterItWasTakenIsReportedNotIntact) {
  format(ring(kRing));
  auto p = producer();
  auto r = reader();
  append_pattern(p, 4096);
  auto view = r.next(4096, in(1s), nullptr);
  ASSERT_TRUE(view.ok());
  EXPECT_TRUE(r.intact(0));
  for (int i = 0; i < 17; ++i) append_pattern(p, 4096);  // laps the view's bytes
  EXPECT_FALSE(r.intact(0)) << "the view was overwritten but still reads as intact";
  EXPECT_FALSE(matches_pattern(*view, 0));  // and it really was
}

TEST_F(SegmentTest, ARingRefusesAReservationLargerThanItself) {
  format(ring(kRing));
  auto p = producer();
  EXPECT_EQ(p.reserve(kRing + 1).status().code(), ErrorCode::kTooLarge);
  EXPECT_TRUE(p.reserve(kRing).ok());
}

TEST_F(SegmentTest, BlockingRingHoldsTheProducerUntilTheSlowestReaderMoves) {
  format(ring(kRing, /*block=*/true));
  auto p = producer();
  auto r = slotted_reader();
  append_pattern(p, kRing);  // fills the ring; nothing overwritten yet
  std::vector<std::byte> one(4096);
  Status timed_out = p.append(one, in(50ms), nullptr);
  EXPECT_EQ(timed_out.code(), ErrorCode::kTimeout) << timed_out.to_string();
  Cancellation cancel;
  std::thread canceller;
  {
    auto blocked = test::blocked_thread(
        [&] { EXPECT_EQ(p.append(one, kNoDeadline, &cancel).code(), ErrorCode::kInterrupted); });
    cancel.cancel();
    blocked.join();
  }
  // The reader consumes a quarter; the producer may then overwrite exactly that much.
  std::vector<std::byte> buf(kRing / 4);
  auto n = r.read(buf, in(1s), nullptr);
  ASSERT_TRUE(n.ok() && *n == buf.size());
  ASSERT_TRUE(matches_pattern(buf, 0));
  std::vector<std::byte> half(kRing / 2);
  auto blocked = test::blocked_thread([&] {
    // Needs the reader past kRing / 2: sleeps until the read below publishes that.
    EXPECT_TRUE(p.append(half, in(10s), nullptr).ok());
  });
  ASSERT_TRUE(r.read(buf, in(1s), nullptr).ok());
  // The reader is now at kRing / 2. It publishes lazily (in steps), at the latest before it
  // sleeps, which lets the producer commit, which wakes it.
  EXPECT_TRUE(r.wait_until(kRing + kRing / 2, in(10s), nullptr).ok());
  blocked.join();
  EXPECT_EQ(p.committed(), kRing + kRing / 2);
  EXPECT_LE(r.oldest(), r.position()) << "the producer declared bytes gone that a reader needs";
}

TEST_F(SegmentTest, ABlockingRingNoLongerWaitsForAReaderWhoseSlotIsReleased) {
  format(ring(kRing, /*block=*/true));
  auto p = producer();
  uint32_t slot = 0;
  auto r = slotted_reader(&slot);
  append_pattern(p, kRing);
  std::vector<std::byte> more(4096);
  auto blocked = test::blocked_thread([&] { EXPECT_TRUE(p.append(more, in(10s), nullptr).ok()); });
  // What the daemon does when the reader's process dies.
  release(slot);
  blocked.join();
  EXPECT_EQ(p.committed(), kRing + 4096);
}

TEST_F(SegmentTest, ABlockingRingWithoutReadersNeverWaits) {
  format(ring(kRing, /*block=*/true));
  auto p = producer();
  for (int i = 0; i < 64; ++i) append_pattern(p, 8192);
  EXPECT_EQ(p.committed(), 64u * 8192);
}

TEST_F(SegmentTest, ClosingTheStreamWakesAProducerWaitingForRoom) {
  format(ring(kRing, /*block=*/true));
  auto p = producer();
  auto r = slotted_reader();
  append_pattern(p, kRing);
  std::vector<std::byte> more(4096);
  auto blocked = test::blocked_thread(
      [&] { EXPECT_EQ(p.append(more, in(10s), nullptr).code(), ErrorCode::kCancelled); });
  end_stream(raw_header(), StreamState::kCancelled);  // a forced removal
  blocked.join();
}

// ---------------------------------------------------------------------------------------------
// Records

std::vector<std::byte> record_payload(uint64_t seed, size_t length) {
  std::vector<std::byte> out(length);
  test::fill_random(seed, 0, out.data(), out.size());
  return out;
}

TEST_F(SegmentTest, RecordsRoundTripWholeAndInOrderWithADistinctEnd) {
  SegmentParams params;
  params.records = true;
  format(params);
  auto p = producer();
  std::vector<size_t> sizes = {0, 1, 7, 8, 9, 64, 4095, 100000, 0, 3};
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(p.publish(record_payload(i, sizes[i])).ok());
  }
  // Zero-copy publishing: reserve more than needed, commit what was written.
  auto span = p.reserve_record(1000);
  ASSERT_TRUE(span.ok());
  std::memcpy(span->data(), "tail", 4);
  ASSERT_TRUE(p.commit_record(4).ok());
  ASSERT_TRUE(p.close().ok());

  auto r = reader();
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto record = r.next_record(in(1s), nullptr);
    ASSERT_TRUE(record.ok()) << record.status().to_string();
    ASSERT_TRUE(record->has_value()) << "record " << i << " missing";
    auto expected = record_payload(i, sizes[i]);
    ASSERT_EQ((*record)->data.size(), sizes[i]);
    EXPECT_TRUE(std::equal(expected.begin(), expected.end(), (*record)->data.begin()));
    EXPECT_EQ((*record)->offset % kCacheLine, 0u);  // frames are cache-line aligned
  }
  auto tail = r.next_record(in(1s), nullptr);
  ASSERT_TRUE(tail.ok() && tail->has_value());
  EXPECT_EQ(text_of((*tail)->data), "tail");
  auto done = r.next_record(in(1s), nullptr);
  ASSERT_TRUE(done.ok());
  EXPECT_FALSE(done->has_value());  // the end, distinct from the empty records above
}

TEST_F(SegmentTest, RecordsAndBytesAreNotMixed) {
  SegmentParams params;
  params.records = true;
  format(params);
  auto p = producer();
  EXPECT_EQ(p.append(bytes_of("raw")).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(p.commit_record(1).code(), ErrorCode::kInvalidArgument);  // nothing reserved
  SegmentTest::TearDown();
  SegmentTest::SetUp();
  format();
  auto bytes = producer();
  EXPECT_EQ(bytes.publish(bytes_of("rec")).code(), ErrorCode::kInvalidArgument);
  auto r = reader();
  EXPECT_EQ(r.next_record(in(1s), nullptr).status().code(), ErrorCode::kInvalidArgument);
}

TEST_F(SegmentTest, ARecordReaderBlocksUntilTheRecordIsPublished) {
  SegmentParams params;
  params.records = true;
  format(params);
  auto p = producer();
  auto r = reader();
  EXPECT_EQ(r.next_record(in(20ms), nullptr).status().code(), ErrorCode::kTimeout);
  std::optional<RecordView> got;
  auto blocked = test::blocked_thread([&] {
    auto record = r.next_record(in(10s), nullptr);
    ASSERT_TRUE(record.ok() && record->has_value());
    got = **record;
  });
  ASSERT_TRUE(p.publish(bytes_of("wake")).ok());
  blocked.join();
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(text_of(got->data), "wake");
}

TEST_F(SegmentTest, RecordsInADropOldestRingWrapAndAnOverrunReaderResumesOnAFrame) {
  format(ring(kRing, /*block=*/false, /*records=*/true));
  auto p = producer();
  auto r = reader();
  std::mt19937_64 rng(3);
  uint64_t published = 0;
  while (p.committed() < 6 * kRing) {
    size_t length = rng() % 3000;
    ASSERT_TRUE(p.publish(record_payload(published++, length)).ok());
  }
  ASSERT_TRUE(p.close().ok());
  auto first = r.next_record(in(1s), nullptr);
  ASSERT_FALSE(first.ok());
  ASSERT_EQ(first.status().code(), ErrorCode::kOverrun);
  // The oldest offset is a frame boundary: the reader resumes on a whole record.
  std::vector<std::pair<uint64_t, size_t>> frames;  // (offset, length) of every record
  rng.seed(3);
  for (uint64_t i = 0, offset = 0; i < published; ++i) {
    size_t length = rng() % 3000;
    frames.emplace_back(offset, length);
    offset += record_frame_size(length);
  }
  size_t index = 0;
  while (frames[index].first < first.status().offset()) ++index;
  ASSERT_EQ(frames[index].first, first.status().offset()) << "oldest is inside a record";
  ASSERT_TRUE(r.seek(static_cast<int64_t>(first.status().offset()), Whence::kStart).ok());
  for (; index < frames.size(); ++index) {
    auto record = r.next_record(in(1s), nullptr);
    ASSERT_TRUE(record.ok() && record->has_value()) << record.status().to_string();
    auto expected = record_payload(index, frames[index].second);
    ASSERT_EQ((*record)->data.size(), expected.size());
    ASSERT_EQ(std::memcmp((*record)->data.data(), expected.data(), expected.size()), 0);
    ASSERT_TRUE(r.intact((*record)->offset));
  }
  auto done = r.next_record(in(1s), nullptr);
  ASSERT_TRUE(done.ok());
  EXPECT_FALSE(done->has_value());
}

TEST_F(SegmentTest, RefusesACorruptRingHeader) {
  format(ring(kRing));
  raw_header().ring_capacity = kRing + 1;
  reseal();
  EXPECT_EQ(map_readonly().status().code(), ErrorCode::kCorrupt);
  raw_header().ring_capacity = kRing;
  reseal();
  ASSERT_TRUE(map_readonly().ok());
  raw_header().oldest_offset.store(10);  // beyond committed (0)
  EXPECT_EQ(map_readonly().status().code(), ErrorCode::kCorrupt);
  raw_header().oldest_offset.store(0);
  raw_header().flags = 0x80;
  reseal();
  EXPECT_EQ(map_readonly().status().code(), ErrorCode::kCorrupt);
}

}  // namespace
}  // namespace shmstream::shm
