// Unit tests of the daemon's stream table, without RPC: names, counting, removal, adoption.
#include "daemon/registry.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "shm/naming.hpp"

namespace shmstream::daemon {
namespace {

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
  // The reader's segment fd is read-only; the wait page beside it is writable.
  EXPECT_EQ(fcntl(reader_side->fd.get(), F_GETFL) & O_ACCMODE, O_RDONLY);
  kj::AutoCloseFd wait(
      open((config_.segment_dir + "/" + producer_side->stream->wait_file_name()).c_str(), O_RDWR));
  EXPECT_TRUE(shm::WaitFile::map(wait.get(), producer_side->stream->id, "s").ok());
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
  EXPECT_EQ(files(), 2u);  // the segment and its wait page
  auto reading = registry.open("s", "", peer_);
  ASSERT_TRUE(reading.ok());
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
  EXPECT_EQ(registry.remove("s", true, peer_).code(), ErrorCode::kNotFound);
}

TEST_F(RegistryTest, RestartAdoptsSegmentsAbortsOrphansAndUnlinksCorruptFiles) {
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
  EXPECT_FALSE(std::filesystem::exists(junk));
  EXPECT_EQ(files(), 4u);  // two segments, two wait pages: kept and reused
}

}  // namespace
}  // namespace shmstream::daemon
