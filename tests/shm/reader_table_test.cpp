// Unit tests of the reader table and reader pages, in one process: slot claiming and release,
// pages written and read back without a mapping (as the daemon does), torn cursor commits,
// the producer's view of its readers (ReaderSet) and what a hostile reader can do to it
// through its own page, and validation of the mappings.
#include "shm/reader_table.hpp"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <string>

#include "shm/reader_set.hpp"
#include "support/status_matchers.hpp"

namespace shmstream::shm {
namespace {

using test::IsOk;
using test::StatusIs;

constexpr uint64_t kStreamId = 7;

class ReaderTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = memfd_create("reader_table_test", MFD_CLOEXEC);
    header_ = std::make_unique<SegmentHeader>();
    header_->space_wanted.store(kNobody);
  }
  void TearDown() override {
    close(fd_);
    for (auto& [n, fd] : pages_) close(fd);
  }

  ReaderTable make(uint32_t max_readers) {
    EXPECT_THAT(format_reader_table(fd_, kStreamId, max_readers), IsOk());
    return ReaderTable::map(fd_, kStreamId, Access::kReadWrite, "unit").value();
  }
  // As the daemon lets a reader in: a slot, then its page (numbered `number`).
  uint32_t admit(const ReaderTable& table, uint64_t start, uint64_t number) {
    uint32_t slot = claim_slot(table, SlotClaim{start, 0, 100, 1000, 0, {}}).value();
    int fd = memfd_create("page", MFD_CLOEXEC);
    EXPECT_THAT(format_reader_page(fd, kStreamId, slot, number, start, 0), IsOk());
    pages_[number] = fd;
    set_slot_reader(table, *header_, slot, 100, number, start, 0);
    return slot;
  }
  ReaderPageMap reader_side(uint32_t slot, uint64_t number) {
    return ReaderPageMap::map(pages_.at(number), Access::kReadWrite, kStreamId, slot, number,
                              "unit")
        .value();
  }
  ReaderSet producer_side() {
    int ro = open(("/proc/self/fd/" + std::to_string(fd_)).c_str(), O_RDONLY | O_CLOEXEC);
    auto table = ReaderTable::map(ro, kStreamId, Access::kReadOnly, "unit");
    close(ro);
    return ReaderSet(
        std::move(table).value(),
        [this](uint64_t n) { return pages_.count(n) != 0 ? dup(pages_.at(n)) : -1; }, kStreamId);
  }

  int fd_ = -1;
  std::unique_ptr<SegmentHeader> header_;
  std::map<uint64_t, int> pages_;
};

TEST_F(ReaderTableTest, SlotsAreClaimedUntilFullPublishedAndReusedWhenReleased) {
  ReaderTable table = make(3);
  uint32_t generation = load_generation(table.page());
  for (uint32_t i = 0; i < 3; ++i) {
    auto slot = claim_slot(table, SlotClaim{100 + i, 0, 4000 + i, 1000, 0, {}});
    ASSERT_THAT(slot, IsOk());
    EXPECT_EQ(*slot, i);
  }
  EXPECT_EQ(table.page().slots_bound.load(), 3u);
  EXPECT_EQ(load_generation(table.page()) - generation, 3u);  // each claim published
  auto full = claim_slot(table, SlotClaim{});
  EXPECT_THAT(full, StatusIs(ErrorCode::kTooManyReaders));
  EXPECT_NE(full.status().message().find("all 3 reader slots"), std::string::npos);
  release_slot(table, *header_, 1);
  auto again = claim_slot(table, SlotClaim{500, 0, 9, 1000, 0, {}});
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(*again, 1u);
  auto in_use = slots_in_use(table);
  ASSERT_EQ(in_use.size(), 3u);
  EXPECT_EQ(in_use[1].hold, 500u);
  EXPECT_EQ(in_use[1].pid, 9u);
}

TEST_F(ReaderTableTest, CursorNamesAreValidated) {
  ReaderTable table = make(2);
  for (std::string bad : {std::string("has space"), std::string("slash/"), std::string(65, 'x'),
                          std::string("nul\0x", 5)}) {
    EXPECT_THAT(claim_slot(table, SlotClaim{0, 0, 1, 1, 0, bad}),
                StatusIs(ErrorCode::kInvalidArgument));
  }
  auto ok = claim_slot(table, SlotClaim{0, 0, 1, 1, 0, "billing.v2@eu-1:x_y"});
  ASSERT_THAT(ok, IsOk());
  EXPECT_EQ(cursor_name(table.slot(*ok)), "billing.v2@eu-1:x_y");
}

TEST_F(ReaderTableTest, APageIsWrittenAndReadBackWithoutAMappingAndRefusedIfForeign) {
  ReaderTable table = make(2);
  uint32_t slot = admit(table, 4096, 77);
  auto state = read_reader_page(pages_[77], kStreamId, slot, 77);
  ASSERT_THAT(state, IsOk());
  EXPECT_EQ(state->position, 4096u);
  EXPECT_EQ(state->committed.position, 4096u);
  EXPECT_FALSE(state->evicted);
  // Another slot's, another stream's, another number's: refused, not believed.
  EXPECT_THAT(read_reader_page(pages_[77], kStreamId, slot + 1, 77), StatusIs(ErrorCode::kCorrupt));
  EXPECT_THAT(read_reader_page(pages_[77], kStreamId + 1, slot, 77), StatusIs(ErrorCode::kCorrupt));
  EXPECT_THAT(read_reader_page(pages_[77], kStreamId, slot, 78), StatusIs(ErrorCode::kCorrupt));
  // Truncated by its reader: a clear error for the daemon's pread, not a SIGBUS.
  ASSERT_EQ(ftruncate(pages_[77], 100), 0);
  EXPECT_THAT(read_reader_page(pages_[77], kStreamId, slot, 77), StatusIs(ErrorCode::kCorrupt));
  ASSERT_THAT(mark_page_evicted(pages_[77], kEvictedStall), IsOk());
}

TEST_F(ReaderTableTest, ATornCursorCommitLeavesTheLastWholeEntryCurrent) {
  ReaderTable table = make(2);
  uint32_t slot = admit(table, 64, 5);
  ReaderPageMap page = reader_side(slot, 5);
  EXPECT_EQ(page_committed(page.page()).position, 64u);
  // A reader killed while writing the next entry (entry written, sequence not yet bumped).
  page.page().committed[1].position.store(999);
  page.page().committed[1].token.store(42);
  EXPECT_EQ(page_committed(page.page()).position, 64u);
  page.page().commit_seq.store(1);
  EXPECT_EQ(page_committed(page.page()).position, 999u);
  EXPECT_EQ(page_committed(page.page()).token, 42u);
}

TEST_F(ReaderTableTest, FreeingASlotWakesAProducerWaitingForRoom) {
  ReaderTable table = make(2);
  uint32_t slot = admit(table, 0, 3);
  header_->space_wanted.store(4096);
  uint32_t word = header_->space_word.load();
  release_slot(table, *header_, slot);
  EXPECT_NE(header_->space_word.load(), word);  // woken
  header_->space_wanted.store(kNobody);
  word = header_->space_word.load();
  uint32_t other = admit(table, 0, 4);
  release_slot(table, *header_, other);
  EXPECT_EQ(header_->space_word.load(), word);  // nobody waited: no wake-up
}

// The producer's view: positions and wake requests come from each reader's own page; the
// table says which pages count. A reader lying in its page moves only itself.
TEST_F(ReaderTableTest, TheProducerSeesEachReaderThroughItsOwnPageOnly) {
  ReaderTable table = make(4);
  uint32_t honest = admit(table, 1000, 1);
  uint32_t liar = admit(table, 1000, 2);
  ReaderSet readers = producer_side();
  EXPECT_EQ(readers.slowest(), 1000u);
  EXPECT_FALSE(readers.anyone_wants(5000, 0));
  ReaderPageMap honest_page = reader_side(honest, 1);
  ReaderPageMap liar_page = reader_side(liar, 2);
  honest_page.page().position.store(3000);
  // The liar claims to be far ahead: it stops holding the ring (its own loss), nobody else's.
  liar_page.page().position.store(~uint64_t{0} - 1);
  EXPECT_EQ(readers.slowest(), 3000u);
  // The liar asks to be woken at every commit: the producer wakes (everyone) more often...
  liar_page.page().wake[kWakeOwn].seen_word.store(0);
  liar_page.page().wake[kWakeOwn].wanted.store(0);
  EXPECT_TRUE(readers.anyone_wants(1, 0));
  // ... but only while its registration is current: once woken (the word moved), no more.
  EXPECT_FALSE(readers.anyone_wants(1, 1));
  // A reader that truncates its page: the producer's mapping of it faults, is recovered, and
  // the page counts for nothing (it neither holds the ring nor asks to be woken).
  honest_page.page().position.store(2000);
  EXPECT_EQ(readers.slowest(), 2000u);
  ASSERT_EQ(ftruncate(pages_[2], 0), 0);
  EXPECT_EQ(readers.slowest(), 2000u);
  EXPECT_FALSE(readers.anyone_wants(1, 5));
  // The daemon frees a slot: the producer stops counting it at its next look.
  release_slot(table, *header_, honest);
  EXPECT_EQ(readers.slowest(), kNobody);
}

TEST_F(ReaderTableTest, ACursorNobodyHoldsHoldsWhatTheTableSays) {
  ReaderTable table = make(2);
  uint32_t slot = claim_slot(table, SlotClaim{640, 9, 0, 1000, 0, "billing"}).value();
  ReaderSet readers = producer_side();
  EXPECT_EQ(readers.slowest(), 640u);
  header_->space_wanted.store(1000);
  uint32_t word = header_->space_word.load();
  set_slot_reader(table, *header_, slot, 0, 0, 1200, 9);  // the daemon settles a let-go
  EXPECT_NE(header_->space_word.load(), word);
  EXPECT_EQ(readers.slowest(), 1200u);
}

TEST_F(ReaderTableTest, MappingRefusesAForeignTruncatedOrMisSizedTable) {
  make(4);
  EXPECT_THAT(ReaderTable::map(fd_, kStreamId + 1, Access::kReadOnly, "unit"),
              StatusIs(ErrorCode::kCorrupt));
  ASSERT_EQ(ftruncate(fd_, table_file_size(4) + kTableSlotSize), 0);  // one slot too many
  EXPECT_THAT(ReaderTable::map(fd_, kStreamId, Access::kReadOnly, "unit"),
              StatusIs(ErrorCode::kCorrupt));
  ASSERT_EQ(ftruncate(fd_, 100), 0);
  EXPECT_THAT(ReaderTable::map(fd_, kStreamId, Access::kReadOnly, "unit"),
              StatusIs(ErrorCode::kCorrupt));
  EXPECT_THAT(format_reader_table(fd_, kStreamId, 0), StatusIs(ErrorCode::kInvalidArgument));
  EXPECT_THAT(format_reader_table(fd_, kStreamId, kMaxReadersLimit + 1),
              StatusIs(ErrorCode::kInvalidArgument));
}

}  // namespace
}  // namespace shmstream::shm
