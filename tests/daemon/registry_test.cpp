// Unit tests of the daemon's stream table, without RPC: names, counting, removal, adoption.
#include "daemon/registry.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "shm/naming.hpp"
#include "support/status_matchers.hpp"

namespace shmstream::daemon {
namespace {

using test::IsOk;
using test::StatusIs;

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/dev/shm/shmstream-registry-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    config_.segment_dir = tmpl;
    config_.instance = shm::instance_tag(tmpl);
    peer_ = Peer{getpid(), getuid(), getgid(), {}};
  }
  void TearDown() override { std::filesystem::remove_all(config_.segment_dir); }

  size_t files() const {
    size_t n = 0;
    for (auto& e : std::filesystem::directory_iterator(config_.segment_dir)) n += !e.is_directory();
    return n;
  }

  RegistryConfig config_;
  Peer peer_;
};

TEST_F(RegistryTest, RefusesBadNamesWithClearErrors) {
  Registry registry(config_);
  for (std::string bad : {std::string(), std::string(300, 'x'), std::string("a/b"),
                          std::string(".."), std::string("tab\there"), std::string("\x7f")}) {
    Status s = registry.create(bad, {}, peer_).status();
    EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("bad stream name"), std::string::npos) << s.message();
  }
  EXPECT_EQ(files(), 0u);
}

TEST_F(RegistryTest, CreateOpenCountAndDuplicates) {
  Registry registry(config_);
  auto producer_side = registry.create("s", {}, peer_);
  ASSERT_TRUE(producer_side.ok());
  EXPECT_EQ(registry.create("s", {}, peer_).status().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(registry.open("nope", "", peer_).status().code(), ErrorCode::kNotFound);
  auto reader_side = registry.open("s", "", peer_);
  ASSERT_TRUE(reader_side.ok());
  // The reader's segment fd is read-only; its own page is writable, and is its slot's; the
  // producer's reader table is read-only.
  EXPECT_EQ(fcntl(reader_side->fd.get(), F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_EQ(fcntl(reader_side->page_fd.get(), F_GETFL) & O_ACCMODE, O_RDWR);
  EXPECT_TRUE(shm::ReaderPageMap::map(reader_side->page_fd.get(), shm::Access::kReadWrite,
                                      producer_side->stream->id, reader_side->grant.slot, 0, "s")
                  .ok());
  EXPECT_EQ(fcntl(producer_side->stream->table_fd->get(), F_GETFL) & O_ACCMODE, O_RDONLY);
  EXPECT_EQ(ftruncate(producer_side->stream->table_fd->get(), 0), -1);  // cannot shrink it
  auto snap = registry.stat("s");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->readers, 1u);
  EXPECT_EQ(snap->producer_pid, static_cast<uint32_t>(getpid()));
  registry.reader_detached(reader_side->stream, reader_side->grant);
  snap = registry.stat("s");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->readers, 0u);
}

TEST_F(RegistryTest, ProducerThatGoesAwayWithoutClosingAbortsTheStream) {
  Registry registry(config_);
  auto created = registry.create("s", {}, peer_);
  ASSERT_TRUE(created.ok());
  const auto& stream = created->stream;
  registry.producer_detached(stream, /*closed_cleanly=*/false, stream->producer_epoch);
  auto snap = registry.stat("s");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->state, shm::StreamState::kAborted);
}

TEST_F(RegistryTest, RemovedStreamIsUnlinkedAtOnceAndDroppedWhenTheLastHolderLetsGo) {
  Registry registry(config_);
  auto created = registry.create("s", {}, peer_);
  ASSERT_TRUE(created.ok());
  std::shared_ptr<Stream> stream = created->stream;
  EXPECT_EQ(files(), 2u);  // the segment and its reader table
  auto reading = registry.open("s", "", peer_);
  ASSERT_TRUE(reading.ok());
  EXPECT_EQ(files(), 3u);  // and the reader's page
  ASSERT_TRUE(registry.remove("s", /*force=*/false, peer_).ok());
  EXPECT_EQ(files(), 0u);  // unlinked: nobody can open it by name, not even around the daemon
  EXPECT_EQ(registry.open("s", "", peer_).status().code(), ErrorCode::kNotFound);
  auto list = registry.list();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_TRUE(list[0].removing);
  EXPECT_EQ(list[0].state, shm::StreamState::kOpen);  // the producer may keep writing
  registry.reader_detached(reading->stream, reading->grant);
  EXPECT_EQ(registry.list().size(), 1u);  // the producer still holds it
  registry.producer_detached(stream, /*closed_cleanly=*/true, stream->producer_epoch);
  EXPECT_TRUE(registry.list().empty());
  // The name is free again, for a new segment.
  ASSERT_TRUE(registry.create("s", {}, peer_).ok());
}

TEST_F(RegistryTest, ForcedRemovalCancels) {
  Registry registry(config_);
  auto created = registry.create("s", {}, peer_);
  ASSERT_TRUE(created.ok());
  ASSERT_TRUE(registry.remove("s", /*force=*/true, peer_).ok());
  EXPECT_EQ(shm::load_state(created->stream->segment.header()), shm::StreamState::kCancelled);
  // Still held by its producer: a plain rm says it is already removed, a forced one cancels
  // again (what holds it), and a name never made is not found.
  EXPECT_EQ(registry.remove("s", false, peer_).code(), ErrorCode::kNotFound);
  EXPECT_TRUE(registry.remove("s", true, peer_).ok());
  EXPECT_EQ(registry.remove("never", true, peer_).code(), ErrorCode::kNotFound);
}

TEST_F(RegistryTest, RestartAdoptsSegmentsAbortsOrphansAndQuarantinesCorruptFiles) {
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_EQ(waitpid(dead, nullptr, 0), dead);  // a pid that no longer runs
  {
    Registry registry(config_);
    auto alive = registry.create("alive", {}, peer_);
    ASSERT_TRUE(alive.ok());
    auto orphan = registry.create("orphan", {}, Peer{dead, getuid(), getgid(), {}});
    ASSERT_TRUE(orphan.ok());
    registry.set_shutting_down();  // as on SIGTERM: producers keep their streams open
  }
  std::string junk =
      config_.segment_dir + "/" + shm::segment_file_prefix(config_.instance) + "junk";
  int fd = open(junk.c_str(), O_CREAT | O_WRONLY, 0600);
  ASSERT_EQ(write(fd, "garbage", 7), 7);
  close(fd);
  Registry restarted(config_);
  auto list = restarted.list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "alive");
  EXPECT_EQ(list[0].state, shm::StreamState::kOpen);
  EXPECT_EQ(list[1].name, "orphan");
  EXPECT_EQ(list[1].state, shm::StreamState::kAborted);
  // Not adopted, and not deleted either: moved aside, whole.
  EXPECT_FALSE(std::filesystem::exists(junk));
  std::string aside = config_.segment_dir + "/" + shm::kQuarantinePrefix +
                      shm::segment_file_prefix(config_.instance) + "junk.truncated";
  EXPECT_EQ(std::filesystem::file_size(aside), 7u);
  EXPECT_EQ(files(), 5u);  // two segments, two reader tables (kept, reused), the one aside
}

TEST_F(RegistryTest, NamedCursorsAreHeldByOneLiveReaderAndOutliveIt) {
  Registry registry(config_);
  ASSERT_THAT(registry.create("s", {}, peer_), IsOk());
  EXPECT_THAT(registry.open("s", "bad name", peer_), StatusIs(ErrorCode::kInvalidArgument));
  auto first = registry.open("s", "billing", peer_);
  ASSERT_THAT(first, IsOk());
  EXPECT_EQ(first->grant.cursor, "billing");
  // Held by a live process (this one): a second reader of the same cursor is refused.
  EXPECT_THAT(registry.open("s", "billing", peer_), StatusIs(ErrorCode::kBusy));
  EXPECT_THAT(registry.remove_cursor("s", "billing", peer_), StatusIs(ErrorCode::kBusy));
  registry.reader_detached(first->stream, first->grant);
  // The cursor stays, unheld, in the same slot.
  auto snap = registry.stat("s");
  ASSERT_THAT(snap, IsOk());
  ASSERT_EQ(snap->cursors.size(), 1u);
  EXPECT_EQ(snap->cursors[0].name, "billing");
  EXPECT_EQ(snap->cursors[0].reader_pid, 0u);
  auto second = registry.open("s", "billing", peer_);
  ASSERT_THAT(second, IsOk());
  EXPECT_EQ(second->grant.slot, first->grant.slot);
  EXPECT_GT(second->grant.generation, first->grant.generation);
  // The first holder's late goodbye does not release the second's hold.
  registry.reader_detached(first->stream, first->grant);
  EXPECT_EQ(registry.stat("s")->cursors[0].reader_pid, static_cast<uint32_t>(getpid()));
  registry.reader_detached(second->stream, second->grant);
  EXPECT_THAT(registry.remove_cursor("s", "billing", peer_), IsOk());
  EXPECT_TRUE(registry.stat("s")->cursors.empty());
  EXPECT_THAT(registry.remove_cursor("s", "billing", peer_), StatusIs(ErrorCode::kNotFound));
}

// Made-up users (root gives the files to a uid that need not exist): the owner's `everyone`
// stream, a consumer's cursor, and a third user who tries to steal or remove it, then to take
// every slot.
TEST_F(RegistryTest, CursorsBelongToTheirMakerAndNoOtherUserTakesEverySlot) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: the stream belongs to a made-up user";
  Registry registry(config_);
  const Peer owner{getpid(), 50001, 50001, {}};
  const Peer consumer{getpid(), 50002, 50002, {}};
  const Peer thief{getpid(), 50003, 50003, {}};
  CreateParams params;
  params.mode = Mode::kEveryone;
  params.max_readers = 4;
  auto produced = registry.create("s", params, owner);
  ASSERT_THAT(produced, IsOk());
  auto billing = registry.open("s", "billing", consumer);
  ASSERT_THAT(billing, IsOk());
  registry.reader_detached(billing->stream, billing->grant);  // idle: nobody holds it
  EXPECT_THAT(registry.open("s", "billing", thief), StatusIs(ErrorCode::kPermissionDenied));
  EXPECT_THAT(registry.remove_cursor("s", "billing", thief),
              StatusIs(ErrorCode::kPermissionDenied));
  // The consumer's share is half the slots: its idle cursor and one reader.
  auto second = registry.open("s", "", consumer);
  ASSERT_THAT(second, IsOk());
  EXPECT_THAT(registry.open("s", "more", consumer), StatusIs(ErrorCode::kTooManyReaders));
  // The owner still reads, and may forget the consumer's cursor.
  auto own = registry.open("s", "", owner);
  EXPECT_THAT(own, IsOk());
  EXPECT_THAT(registry.remove_cursor("s", "billing", owner), IsOk());
  auto back = registry.open("s", "", consumer);  // its share has room again
  EXPECT_THAT(back, IsOk());
  for (auto* access : {&second, &own, &back}) {
    if (access->ok()) registry.reader_detached((*access)->stream, (*access)->grant);
  }
  registry.producer_detached(produced->stream, /*closed_cleanly=*/true,
                             produced->stream->producer_epoch);
}

// The attack on --max-bytes-per-user: make streams while holding little (each may then grow to
// the quota), remove them (their producers stay attached, and write on), and grow them all. The
// periodic check counts and aborts removed streams as it does live ones (it looked only at live
// ones: two removed streams held 12 MiB under an 8 MiB quota, unchecked).
TEST_F(RegistryTest, RemovingItsStreamsDoesNotLiftAUsersMemoryQuota) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: the streams belong to a made-up user";
  config_.max_bytes_per_user = 8 << 20;
  Registry registry(config_);
  const Peer alice{getpid(), 50001, 50001, {}};
  auto a = registry.create("a", {}, alice);
  ASSERT_THAT(a, IsOk());
  auto b = registry.create("b", {}, alice);
  ASSERT_THAT(b, IsOk());
  for (const char* name : {"a", "b"}) ASSERT_THAT(registry.remove(name, false, alice), IsOk());
  for (auto* access : {&a, &b}) {
    ASSERT_EQ(fallocate((*access)->stream->segment.fd(), 0, 0, 6 << 20), 0);  // its producer writes
  }
  EXPECT_EQ(registry.memory_held_by(alice.uid), uint64_t{12} << 20);
  EXPECT_EQ(registry.enforce_byte_quotas(), 2u);
  for (const char* name : {"a", "b"}) {
    auto info = registry.stat(name);
    ASSERT_THAT(info, IsOk());
    EXPECT_TRUE(info->removing);
    EXPECT_EQ(info->state, shm::StreamState::kAborted);
  }
  for (auto* access : {&a, &b}) {
    registry.producer_detached((*access)->stream, false, (*access)->stream->producer_epoch);
  }
  EXPECT_TRUE(registry.list().empty());
}

TEST_F(RegistryTest, AStreamWithAGraceAwaitsASuccessorOnlyItsOwnerMayResume) {
  Registry registry(config_);
  CreateParams params;
  params.resume_grace_ms = 60'000;
  auto created = registry.create("s", params, peer_);
  ASSERT_THAT(created, IsOk());
  const auto& stream = created->stream;
  uint64_t first_epoch = stream->producer_epoch;
  // Its producer is alive: nothing to resume yet.
  EXPECT_THAT(registry.resume("s", peer_), StatusIs(ErrorCode::kBusy));
  EXPECT_TRUE(registry.producer_exited(stream, getpid()));  // starts the grace
  EXPECT_EQ(registry.awaiting_streams().size(), 1u);
  Peer stranger{getpid(), getuid() + 1, getgid(), {}};
  EXPECT_THAT(registry.resume("s", stranger), StatusIs(ErrorCode::kPermissionDenied));
  auto resumed = registry.resume("s", peer_);
  ASSERT_THAT(resumed, IsOk());
  EXPECT_GT(stream->producer_epoch, first_epoch);
  EXPECT_GE(resumed->fd.get(), 0);
  // The predecessor's late news touches neither the successor nor the stream.
  registry.producer_detached(stream, /*closed_cleanly=*/false, first_epoch);
  registry.successor_overdue(stream, first_epoch);
  EXPECT_EQ(registry.stat("s")->state, shm::StreamState::kOpen);
  EXPECT_TRUE(registry.awaiting_streams().empty());
  // Without a grace there is nothing to resume.
  ASSERT_THAT(registry.create("plain", {}, peer_), IsOk());
  EXPECT_THAT(registry.resume("plain", peer_), StatusIs(ErrorCode::kInvalidArgument));
}

TEST_F(RegistryTest, AfterARestartLiveReadersMayReattachTheirSlotsAndOthersAreFreed) {
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  ASSERT_EQ(waitpid(dead, nullptr, 0), dead);
  uint32_t live_slot = 0;
  {
    Registry registry(config_);
    ASSERT_THAT(registry.create("s", {}, peer_), IsOk());
    auto live = registry.open("s", "", peer_);
    ASSERT_THAT(live, IsOk());
    live_slot = live->grant.slot;
    ASSERT_THAT(registry.open("s", "", Peer{dead, getuid(), getgid(), {}}), IsOk());
    registry.set_shutting_down();
  }
  Registry restarted(config_);
  auto orphans = restarted.orphan_readers();
  ASSERT_EQ(orphans.size(), 1u);  // the dead reader's slot was freed at adoption
  EXPECT_EQ(orphans[0].slot, live_slot);
  EXPECT_EQ(orphans[0].pid, getpid());
  const uint64_t id = orphans[0].stream->id;
  Peer impostor{getpid() + 1, getuid(), getgid(), {}};
  EXPECT_THAT(restarted.reattach_reader("s", id, live_slot, impostor),
              StatusIs(ErrorCode::kPermissionDenied));
  EXPECT_THAT(restarted.reattach_reader("s", id + 1, live_slot, peer_),
              StatusIs(ErrorCode::kNotFound));
  auto back = restarted.reattach_reader("s", id, live_slot, peer_);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(back->grant.slot, live_slot);
  EXPECT_EQ(restarted.stat("s")->readers, 1u);
  EXPECT_TRUE(restarted.orphan_readers().empty());
  // Taken once: a second reattach of the same slot is refused.
  EXPECT_THAT(restarted.reattach_reader("s", id, live_slot, peer_),
              StatusIs(ErrorCode::kPermissionDenied));
}

TEST_F(RegistryTest, AnAdoptedReaderThatExitsBeforeReattachingLetsGoOfItsSlot) {
  {
    Registry registry(config_);
    CreateParams params;
    params.max_readers = 1;
    ASSERT_THAT(registry.create("s", params, peer_), IsOk());
    ASSERT_THAT(registry.open("s", "", peer_), IsOk());
    registry.set_shutting_down();
  }
  Registry restarted(config_);
  auto orphans = restarted.orphan_readers();
  ASSERT_EQ(orphans.size(), 1u);
  // The only slot is kept for its reader: a newcomer is refused until it goes.
  EXPECT_THAT(restarted.open("s", "", peer_), StatusIs(ErrorCode::kTooManyReaders));
  restarted.orphan_reader_exited(orphans[0].stream, orphans[0].slot, orphans[0].pid);
  EXPECT_TRUE(restarted.orphan_readers().empty());
  EXPECT_THAT(restarted.open("s", "", peer_), IsOk());
}

// A stream adopted after a restart and removed before its clients reattached (their processes
// live): it is held, as "removing", for them to take back, and released once the last of them
// lets go, whichever way: reattaching and closing, ending it through its mapping, exiting.
TEST_F(RegistryTest, ARemovalBeforeTheClientsReattachIsHeldUntilTheyLetGo) {
  {
    Registry registry(config_);
    for (const char* name : {"a", "b", "c"}) {
      ASSERT_THAT(registry.create(name, {}, peer_), IsOk());
      ASSERT_THAT(registry.open(name, "", peer_), IsOk());
    }
    registry.set_shutting_down();
  }
  Registry restarted(config_);
  std::map<std::string, Registry::Orphan> orphans;
  for (auto& orphan : restarted.orphan_readers()) orphans.emplace(orphan.stream->name, orphan);
  ASSERT_EQ(orphans.size(), 3u);
  for (const char* name : {"a", "b", "c"})
    ASSERT_THAT(restarted.remove(name, false, peer_), IsOk());
  EXPECT_EQ(files(), 0u);  // unlinked at once, as any removal
  for (const char* name : {"a", "b", "c"}) {
    auto held = restarted.stat(name);
    ASSERT_THAT(held, IsOk());
    EXPECT_TRUE(held->removing);
    EXPECT_EQ(held->state, shm::StreamState::kOpen);
  }
  // "a": both reattach, then let go as attached clients do.
  const auto& a = orphans.at("a");
  auto producer = restarted.reattach_producer("a", a.stream->id, peer_);
  ASSERT_THAT(producer, IsOk());
  auto reader = restarted.reattach_reader("a", a.stream->id, a.slot, peer_);
  ASSERT_THAT(reader, IsOk());
  shm::end_stream(a.stream->segment.mutable_header(), shm::StreamState::kClosed);
  restarted.producer_detached(a.stream, /*closed_cleanly=*/true, a.stream->producer_epoch);
  EXPECT_TRUE(restarted.stat("a")->removing);  // its reader still holds it
  restarted.reader_detached(a.stream, reader->grant);
  EXPECT_THAT(restarted.stat("a"), StatusIs(ErrorCode::kNotFound));
  // "b": the producer closes through its mapping without reattaching; the reader exits.
  const auto& b = orphans.at("b");
  shm::end_stream(b.stream->segment.mutable_header(), shm::StreamState::kClosed);
  restarted.orphan_reader_exited(b.stream, b.slot, b.pid);
  EXPECT_TRUE(restarted.stat("b")->removing);  // the daemon has not looked at the state yet
  restarted.release_ended_unclaimed();
  EXPECT_THAT(restarted.stat("b"), StatusIs(ErrorCode::kNotFound));
  // "c": the producer's process exits (the stream is aborted, as a dead producer's), and the
  // reader outlasts the grace.
  const auto& c = orphans.at("c");
  EXPECT_FALSE(restarted.producer_exited(c.stream, getpid()));
  EXPECT_EQ(restarted.stat("c")->state, shm::StreamState::kAborted);
  EXPECT_TRUE(restarted.stat("c")->removing);
  restarted.expire_orphans();
  EXPECT_THAT(restarted.stat("c"), StatusIs(ErrorCode::kNotFound));
}

}  // namespace
}  // namespace shmstream::daemon
