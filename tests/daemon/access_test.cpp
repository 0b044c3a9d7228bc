// Unit tests of the access rules: who may read, remove and resume a stream. Pure functions of
// made-up uids and gids, so no root and no second user are needed (the permission tests in
// integration/ check the same rules end to end, as real users).
#include "daemon/access.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "support/status_matchers.hpp"

namespace shmstream::daemon {
namespace {

using test::IsOk;
using test::StatusIs;

constexpr uid_t kDaemonUid = 990;  // the user a per-user daemon runs as
constexpr uid_t kAlice = 1001;
constexpr uid_t kBob = 1002;
constexpr gid_t kTeam = 2000;
constexpr gid_t kOther = 2001;

Peer peer(uid_t uid, gid_t gid, std::vector<gid_t> groups = {}) {
  return Peer{4242, uid, gid, std::move(groups)};
}

TEST(Access, FileModesMatchStreamModesBothWays) {
  for (Mode mode : {Mode::kOwner, Mode::kGroup, Mode::kEveryone}) {
    EXPECT_EQ(mode_of_file(file_mode(mode)), mode);
  }
  EXPECT_EQ(file_mode(Mode::kOwner), 0600u);
  EXPECT_EQ(file_mode(Mode::kGroup), 0640u);
  EXPECT_EQ(file_mode(Mode::kEveryone), 0644u);
}

TEST(Access, OwnerOnlyStreamsAreReadByTheirOwnerRootAndTheDaemonsUser) {
  Owner owner{kAlice, kTeam, Mode::kOwner};
  EXPECT_THAT(may_read("s", owner, peer(kAlice, kTeam), kDaemonUid), IsOk());
  EXPECT_THAT(may_read("s", owner, peer(0, 0), kDaemonUid), IsOk());
  EXPECT_THAT(may_read("s", owner, peer(kDaemonUid, 0), kDaemonUid), IsOk());
  Status denied = may_read("s", owner, peer(kBob, kTeam, {kTeam}), kDaemonUid);
  EXPECT_THAT(denied, StatusIs(ErrorCode::kPermissionDenied));
  // The message names the stream, the owner and the refused user.
  EXPECT_NE(denied.message().find("stream \"s\""), std::string::npos) << denied.message();
  EXPECT_NE(denied.message().find("owner uid 1001"), std::string::npos) << denied.message();
  EXPECT_NE(denied.message().find("you are uid 1002"), std::string::npos) << denied.message();
}

TEST(Access, GroupStreamsAreReadByThePrimaryOrASupplementaryGroup) {
  Owner owner{kAlice, kTeam, Mode::kGroup};
  EXPECT_THAT(may_read("s", owner, peer(kBob, kTeam), kDaemonUid), IsOk());
  EXPECT_THAT(may_read("s", owner, peer(kBob, kOther, {7, kTeam}), kDaemonUid), IsOk());
  Status denied = may_read("s", owner, peer(kBob, kOther, {7}), kDaemonUid);
  EXPECT_THAT(denied, StatusIs(ErrorCode::kPermissionDenied));
  EXPECT_NE(denied.message().find("owner's group"), std::string::npos) << denied.message();
}

TEST(Access, EveryoneReadsButOnlyTheOwnerOrPrivilegedMayRemoveOrResume) {
  Owner owner{kAlice, kTeam, Mode::kEveryone};
  EXPECT_THAT(may_read("s", owner, peer(kBob, kOther), kDaemonUid), IsOk());
  for (const char* action : {"remove", "resume"}) {
    EXPECT_THAT(may_own("s", owner, peer(kAlice, kOther), kDaemonUid, action), IsOk());
    EXPECT_THAT(may_own("s", owner, peer(0, 0), kDaemonUid, action), IsOk());
    EXPECT_THAT(may_own("s", owner, peer(kDaemonUid, 0), kDaemonUid, action), IsOk());
    Status denied = may_own("s", owner, peer(kBob, kTeam, {kTeam}), kDaemonUid, action);
    EXPECT_THAT(denied, StatusIs(ErrorCode::kPermissionDenied));
    EXPECT_NE(denied.message().find(std::string("may ") + action + " it"), std::string::npos)
        << denied.message();
  }
}

TEST(Access, OnlyRootAndTheDaemonsOwnUserArePrivileged) {
  EXPECT_TRUE(privileged(peer(0, 0), kDaemonUid));
  EXPECT_TRUE(privileged(peer(kDaemonUid, 1), kDaemonUid));
  EXPECT_FALSE(privileged(peer(kAlice, 0), kDaemonUid));
  // A system daemon runs as root: only root is privileged.
  EXPECT_FALSE(privileged(peer(kAlice, 0), 0));
}

TEST(Access, ANamedCursorIsReadOnlyByItsMakerAndRemovedAlsoByTheStreamsOwner) {
  Owner owner{kAlice, kTeam, Mode::kEveryone};
  constexpr uid_t kCarol = 1003;
  // Bob made the cursor on Alice's stream.
  EXPECT_THAT(may_use_cursor("s", "billing", kBob, owner, peer(kBob, kOther), kDaemonUid, false),
              IsOk());
  auto stolen =
      may_use_cursor("s", "billing", kBob, owner, peer(kCarol, kOther), kDaemonUid, false);
  EXPECT_THAT(stolen, StatusIs(ErrorCode::kPermissionDenied));
  EXPECT_NE(stolen.message().find("belongs to uid 1002"), std::string::npos) << stolen.message();
  // Alice owns the stream: she may forget Bob's cursor, not read as it.
  EXPECT_THAT(may_use_cursor("s", "billing", kBob, owner, peer(kAlice, kTeam), kDaemonUid, false),
              StatusIs(ErrorCode::kPermissionDenied));
  EXPECT_THAT(may_use_cursor("s", "billing", kBob, owner, peer(kAlice, kTeam), kDaemonUid, true),
              IsOk());
  EXPECT_THAT(may_use_cursor("s", "billing", kBob, owner, peer(kCarol, kOther), kDaemonUid, true),
              StatusIs(ErrorCode::kPermissionDenied));
  for (bool removing : {false, true}) {
    EXPECT_THAT(may_use_cursor("s", "billing", kBob, owner, peer(0, 0), kDaemonUid, removing),
                IsOk());
  }
}

TEST(Access, NoOtherUserMayTakeEverySlotOfSomeonesStream) {
  Owner owner{kAlice, kTeam, Mode::kEveryone};
  EXPECT_EQ(slot_share(64), 32u);
  EXPECT_EQ(slot_share(1), 1u);
  EXPECT_THAT(may_take_slot("s", owner, peer(kBob, kOther), kDaemonUid, 31, 64), IsOk());
  auto full = may_take_slot("s", owner, peer(kBob, kOther), kDaemonUid, 32, 64);
  EXPECT_THAT(full, StatusIs(ErrorCode::kTooManyReaders));
  EXPECT_NE(full.message().find("uid 1002 already holds 32 of its 64"), std::string::npos)
      << full.message();
  // The owner and privileged users are not limited (the slot count itself still is).
  EXPECT_THAT(may_take_slot("s", owner, peer(kAlice, kTeam), kDaemonUid, 63, 64), IsOk());
  EXPECT_THAT(may_take_slot("s", owner, peer(0, 0), kDaemonUid, 63, 64), IsOk());
}

}  // namespace
}  // namespace shmstream::daemon
