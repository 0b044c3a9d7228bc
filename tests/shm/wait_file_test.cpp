// Unit tests of the wait file, in one process: slot claiming and release, named cursors' torn
// commits and hold settling, adoption after a daemon restart, and validation of the mapping.
#include "shm/wait_file.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "support/status_matchers.hpp"

namespace shmstream::shm {
namespace {

using test::IsOk;
using test::StatusIs;

constexpr uint64_t kStreamId = 7;

class WaitFileTest : public ::testing::Test {
 protected:
  void SetUp() override { fd_ = memfd_create("wait_file_test", MFD_CLOEXEC); }
  void TearDown() override { close(fd_); }

  WaitFile make(uint32_t max_readers) {
    EXPECT_THAT(format_wait_file(fd_, kStreamId, max_readers), IsOk());
    return WaitFile::map(fd_, kStreamId, "unit").value();
  }

  int fd_ = -1;
};

// A pid that no longer runs.
uint32_t dead_pid() {
  pid_t child = fork();
  if (child == 0) _exit(0);
  EXPECT_EQ(waitpid(child, nullptr, 0), child);
  return static_cast<uint32_t>(child);
}

TEST_F(WaitFileTest, SlotsAreClaimedUntilFullAndReusedWhenReleased) {
  WaitFile wait = make(3);
  EXPECT_EQ(wait.max_readers(), 3u);
  for (uint32_t i = 0; i < 3; ++i) {
    auto slot = claim_reader_slot(wait, 100 + i, 4000 + i, 1000);
    ASSERT_THAT(slot, IsOk());
    EXPECT_EQ(*slot, i);
    EXPECT_TRUE(slot_in_use(wait.slot(i)));
    EXPECT_EQ(load_slot_position(wait.slot(i)), 100 + i);
    EXPECT_EQ(load_slot_pid(wait.slot(i)), 4000 + i);
  }
  EXPECT_EQ(wait.page().slots_in_use_hint.load(), 3u);
  auto full = claim_reader_slot(wait, 0, 1, 1000);
  EXPECT_THAT(full, StatusIs(ErrorCode::kTooManyReaders));
  EXPECT_NE(full.status().message().find("all 3 reader slots"), std::string::npos);

  release_reader_slot(wait, 1);
  EXPECT_FALSE(slot_in_use(wait.slot(1)));
  auto again = claim_reader_slot(wait, 500, 9, 1000);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(*again, 1u);  // the freed slot, not a new one
  std::vector<SlotInfo> in_use = slots_in_use(wait);
  ASSERT_EQ(in_use.size(), 3u);
  EXPECT_EQ(in_use[1].position, 500u);
  EXPECT_EQ(in_use[1].pid, 9u);
  // Out-of-range indices are ignored, not written.
  release_reader_slot(wait, 3);
  release_reader_slot(wait, 1000000);
  EXPECT_EQ(slots_in_use(wait).size(), 3u);
}

TEST_F(WaitFileTest, CursorNamesAreValidated) {
  WaitFile wait = make(2);
  for (std::string bad : {std::string(65, 'a'), std::string("has space"), std::string("a/b"),
                          std::string("tab\t"), std::string("\xff")}) {
    EXPECT_THAT(validate_cursor_name(bad), StatusIs(ErrorCode::kInvalidArgument)) << bad;
    EXPECT_THAT(claim_reader_slot(wait, 0, 1, 1000, bad), StatusIs(ErrorCode::kInvalidArgument));
  }
  EXPECT_THAT(validate_cursor_name("bridge:key-1.a_b@host"), IsOk());
  EXPECT_TRUE(slots_in_use(wait).empty());  // nothing was claimed by the refusals
}

TEST_F(WaitFileTest, ATornCursorCommitLeavesTheLastWholeEntryCurrent) {
  WaitFile wait = make(2);
  uint32_t index = claim_reader_slot(wait, 64, 1, 1000, "billing").value();
  ReaderSlot& slot = wait.slot(index);
  EXPECT_EQ(cursor_name(slot), "billing");
  EXPECT_EQ(cursor_committed(slot).position, 64u);
  EXPECT_EQ(cursor_committed(slot).token, 0u);
  // A committer that died after writing half of the next entry, before bumping commit_seq.
  uint32_t seq = slot.commit_seq.load();
  slot.committed[(seq + 1) & 1].position.store(9000);
  EXPECT_EQ(cursor_committed(slot).position, 64u);
  EXPECT_EQ(cursor_committed(slot).token, 0u);
  // The whole commit: the entry, then the sequence.
  slot.committed[(seq + 1) & 1].token.store(77);
  slot.commit_seq.store(seq + 1);
  EXPECT_EQ(cursor_committed(slot).position, 9000u);
  EXPECT_EQ(cursor_committed(slot).token, 77u);
}

TEST_F(WaitFileTest, UnheldCursorHoldsExactlyItsCommittedPositionAndWakesAWaitingProducer) {
  WaitFile wait = make(2);
  uint32_t index = claim_reader_slot(wait, 0, 1234, 1000, "c").value();
  ReaderSlot& slot = wait.slot(index);
  uint32_t seq = slot.commit_seq.load();
  slot.committed[(seq + 1) & 1].position.store(4096);
  slot.commit_seq.store(seq + 1);
  slot.position.store(100);  // a lazily published hold, behind the commit
  // A producer waits for every slot to reach 4096.
  wait.page().space_wanted.store(4096);
  uint32_t word = wait.page().space_word.load();
  hold_cursor(wait, index, 0);
  EXPECT_EQ(load_slot_position(slot), 4096u);
  EXPECT_EQ(load_slot_pid(slot), 0u);
  EXPECT_TRUE(slot_in_use(slot));                  // the cursor stays
  EXPECT_NE(wait.page().space_word.load(), word);  // woken
  // A reader takes it again: its pid, and the hold settled at the commit.
  slot.position.store(5);
  hold_cursor(wait, index, 4321);
  EXPECT_EQ(load_slot_pid(slot), 4321u);
  EXPECT_EQ(load_slot_position(slot), 4096u);
}

TEST_F(WaitFileTest, AdoptionKeepsLiveReadersAndCursorsAndFreesTheRest) {
  WaitFile wait = make(8);
  const auto me = static_cast<uint32_t>(getpid());
  const uint32_t gone = dead_pid();
  uint32_t live_reader = claim_reader_slot(wait, 0, me, 1000).value();
  uint32_t dead_reader = claim_reader_slot(wait, 0, gone, 1000).value();
  uint32_t held_cursor = claim_reader_slot(wait, 10, me, 1000, "held").value();
  uint32_t idle_cursor = claim_reader_slot(wait, 20, gone, 2000, "idle").value();
  uint32_t duplicate = claim_reader_slot(wait, 30, me, 1000, "held").value();  // a forged twin
  auto alive = [&](uint32_t pid) { return pid == me; };

  auto kept = adopt_reader_slots(wait, /*this_boot=*/true, alive);
  auto find = [&](uint32_t index) {
    return std::find_if(kept.begin(), kept.end(), [&](const auto& k) { return k.index == index; });
  };
  ASSERT_EQ(kept.size(), 3u);
  ASSERT_NE(find(live_reader), kept.end());
  EXPECT_EQ(find(live_reader)->pid, me);
  EXPECT_TRUE(find(live_reader)->cursor.empty());
  ASSERT_NE(find(held_cursor), kept.end());
  EXPECT_EQ(find(held_cursor)->pid, me);
  EXPECT_EQ(find(held_cursor)->cursor, "held");
  ASSERT_NE(find(idle_cursor), kept.end());
  EXPECT_EQ(find(idle_cursor)->pid, 0u);     // its reader is gone: unheld
  EXPECT_EQ(find(idle_cursor)->uid, 2000u);  // still its maker's
  EXPECT_EQ(load_slot_pid(wait.slot(idle_cursor)), 0u);
  EXPECT_EQ(load_slot_position(wait.slot(idle_cursor)), 20u);  // settled at its commit
  EXPECT_FALSE(slot_in_use(wait.slot(dead_reader)));
  EXPECT_FALSE(slot_in_use(wait.slot(duplicate)));

  // After a reboot no pid means anything: readers go, cursors stay, unheld.
  auto rebooted = adopt_reader_slots(wait, /*this_boot=*/false, alive);
  ASSERT_EQ(rebooted.size(), 2u);
  for (const auto& k : rebooted) {
    EXPECT_FALSE(k.cursor.empty());
    EXPECT_EQ(k.pid, 0u);
  }
  EXPECT_FALSE(slot_in_use(wait.slot(live_reader)));
}

TEST_F(WaitFileTest, MappingRefusesAForeignTruncatedOrMisSizedFile) {
  make(4);
  EXPECT_THAT(WaitFile::map(fd_, kStreamId + 1, "unit"), StatusIs(ErrorCode::kCorrupt));
  ASSERT_EQ(ftruncate(fd_, wait_file_size(4) + kReaderSlotSize), 0);  // one slot too many
  EXPECT_THAT(WaitFile::map(fd_, kStreamId, "unit"), StatusIs(ErrorCode::kCorrupt));
  ASSERT_EQ(ftruncate(fd_, 100), 0);
  auto truncated = WaitFile::map(fd_, kStreamId, "unit");
  EXPECT_THAT(truncated, StatusIs(ErrorCode::kCorrupt));
  EXPECT_NE(truncated.status().message().find("truncated"), std::string::npos);
  EXPECT_THAT(format_wait_file(fd_, kStreamId, 0), StatusIs(ErrorCode::kInvalidArgument));
  EXPECT_THAT(format_wait_file(fd_, kStreamId, kMaxReadersLimit + 1),
              StatusIs(ErrorCode::kInvalidArgument));
}

}  // namespace
}  // namespace shmstream::shm
