// Limits with clear errors, through the CLI: too many readers, a stream's maximum size, and a
// full shared-memory file system. In each case what was committed before stays readable.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

std::string random_text(uint64_t seed, size_t bytes) {
  std::string out(bytes, '\0');
  fill_random(seed, 0, reinterpret_cast<std::byte*>(out.data()), bytes);
  return out;
}

TEST(Limits, TheReaderPastTheLimitGetsTooManyReadersAndTheOthersGoOn) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  Child writer = Child::spawn({bin_dir() + "/shmstream", "write", "few", "--max-readers", "2"},
                              true, false, daemon.env());
  ASSERT_TRUE(eventually([&] { return client.stat("few").ok(); }));
  std::vector<Child> cats;
  for (int i = 0; i < 2; ++i) {
    cats.push_back(
        Child::spawn({bin_dir() + "/shmstream", "cat", "few"}, false, true, daemon.env()));
  }
  ASSERT_TRUE(eventually([&] { return client.stat("few").value().readers == 2; }));
  auto [status, out] = run_cli(daemon, {"cat", "few"}, "", 30s, /*with_stderr=*/true);
  EXPECT_TRUE(exited_with(status, 1)) << status;
  EXPECT_NE(out.find("too many readers"), std::string::npos) << out;
  EXPECT_NE(out.find("all 2 reader slots are taken"), std::string::npos) << out;
  // The two readers were not disturbed: they get what is written next, and the end.
  ASSERT_EQ(::write(writer.stdin_fd(), "after\n", 6), 6);
  writer.close_stdin();
  EXPECT_EQ(writer.wait(10s), 0);
  for (auto& cat : cats) {
    EXPECT_EQ(read_all(cat.stdout_fd()), "after\n");
    EXPECT_EQ(cat.wait(10s), 0);
  }
}

TEST(Limits, AnUnboundedStreamStopsAtItsMaximumSizeKeepingWhatFits) {
  TestDaemon daemon;
  std::string input = random_text(3, 3 << 20);
  auto [status, out] =
      run_cli(daemon, {"write", "capped", "--max-bytes", "1048576"}, input, 30s, true);
  EXPECT_TRUE(exited_with(status, 1)) << status;
  EXPECT_NE(out.find("beyond its maximum of 1048576"), std::string::npos) << out;
  EXPECT_NE(out.find("aborted at 1048576 bytes"), std::string::npos) << out;
  auto [cs, data] = run_cli(daemon, {"cat", "capped"});
  // Everything that fitted is readable; the end is reported as the producer's failure.
  EXPECT_FALSE(exited_with(cs, 0));
  EXPECT_EQ(data.size(), size_t{1} << 20);
  EXPECT_TRUE(data == input.substr(0, 1 << 20)) << "the committed prefix differs";
  // Input that ends exactly at the maximum is a complete stream.
  auto [es, ignored] =
      run_cli(daemon, {"write", "exact", "--max-bytes", "65536"}, input.substr(0, 65536));
  EXPECT_TRUE(exited_with(es, 0)) << es;
  auto info = connect_to(daemon).stat("exact").value();
  EXPECT_EQ(info.state, StreamState::kClosed);
  EXPECT_EQ(info.bytes, 65536u);
}

// A segment directory on a tmpfs of its own, 16 MiB (needs root to mount; skipped otherwise).
class FullFileSystem : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "mounting a small tmpfs needs root";
    char tmpl[] = "/tmp/shmstream-small-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    if (mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=16m,mode=0700") != 0) {
      std::string why = std::strerror(errno);
      std::filesystem::remove(dir_);
      dir_.clear();
      GTEST_SKIP() << "cannot mount a tmpfs here: " << why;
    }
    daemon_ = std::make_unique<TestDaemon>(std::vector<std::string>{"--segment-dir", dir_});
  }
  void TearDown() override {
    daemon_.reset();
    if (!dir_.empty()) {
      EXPECT_EQ(umount(dir_.c_str()), 0) << std::strerror(errno);
      std::filesystem::remove(dir_);
    }
  }

  std::string dir_;
  std::unique_ptr<TestDaemon> daemon_;
};

TEST_F(FullFileSystem, TheProducerGetsNoSpaceAndEverythingCommittedStaysReadable) {
  std::string input = random_text(5, 64 << 20);
  auto [status, out] = run_cli(*daemon_, {"write", "big"}, input, 60s, true);
  EXPECT_TRUE(exited_with(status, 1)) << status;
  EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
  auto info = connect_to(*daemon_).stat("big").value();
  EXPECT_EQ(info.state, StreamState::kAborted);
  // Nearly all of the 16 MiB went to the stream before it ran out.
  EXPECT_GT(info.bytes, 12u << 20);
  EXPECT_LT(info.bytes, 16u << 20);
  auto [cs, data] = run_cli(*daemon_, {"cat", "big"});
  EXPECT_EQ(data.size(), info.bytes);
  EXPECT_TRUE(data == input.substr(0, info.bytes)) << "the committed prefix differs";
  // Once removed, the space is back: a new stream can be written whole.
  ASSERT_TRUE(connect_to(*daemon_).remove("big").ok());
  auto [again, ignored] = run_cli(*daemon_, {"write", "small"}, input.substr(0, 8 << 20));
  EXPECT_TRUE(exited_with(again, 0)) << again;
}

// A library user sees the same: kNoSpace from append, with the committed length intact.
TEST_F(FullFileSystem, AppendReturnsNoSpace) {
  auto client = connect_to(*daemon_);
  auto producer = client.create("lib").value();
  auto reader = client.open("lib").value();  // its page taken while there is room
  std::vector<std::byte> chunk(256 << 10, std::byte{1});
  Status last;
  uint64_t written = 0;
  while ((last = producer.append(chunk)).ok()) written += chunk.size();
  EXPECT_EQ(last.code(), ErrorCode::kNoSpace) << last.to_string();
  EXPECT_EQ(producer.committed(), written);
  EXPECT_TRUE(reader.wait_for(written, 1s).ok());
  EXPECT_TRUE(producer.close().ok());
}

// Creating a stream, and a stream's first reader, on a full file system: no_space (or served),
// never a daemon killed by a SIGBUS on a page it touched; the daemon serves on.
TEST_F(FullFileSystem, CreatingAndOpeningWhenFullIsNoSpaceAndTheDaemonServesOn) {
  auto client = connect_to(*daemon_);
  auto early = client.create("early").value();  // its reader table exists before the space runs out
  auto filler = client.create("filler").value();
  std::vector<std::byte> chunk(64 << 10, std::byte{2});
  Status last;
  while ((last = filler.append(chunk)).ok()) {
  }
  ASSERT_EQ(last.code(), ErrorCode::kNoSpace) << last.to_string();
  // Take the last pages too (the producer leaves what its next step did not fit).
  std::string rest = dir_ + "/rest";
  int fd = ::open(rest.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  while (::write(fd, chunk.data(), 4096) == 4096) {
  }
  ::close(fd);
  for (const char* name : {"late", "later"}) {
    auto late = client.create(name);
    EXPECT_EQ(late.status().code(), ErrorCode::kNoSpace) << late.status().to_string();
  }
  // A reader needs a page of its own: on a full file system, a clear no_space (never a SIGBUS
  // in the daemon), and the stream reads again once there is room.
  auto refused = client.open("early");
  EXPECT_EQ(refused.status().code(), ErrorCode::kNoSpace) << refused.status().to_string();
  // A daemon restarted while the file system is full adopts its streams (it allocates nothing
  // for them) and serves on.
  daemon_->crash_and_restart();
  auto restarted = connect_to(*daemon_);
  auto listed = restarted.list();
  ASSERT_TRUE(listed.ok()) << listed.status().to_string();  // the daemon lives and serves
  EXPECT_EQ(listed->size(), 2u);  // the refused creations left nothing behind
  std::filesystem::remove(rest);
  ASSERT_TRUE(filler.close().ok());
  ASSERT_TRUE(restarted.remove("filler").ok());
  EXPECT_TRUE(restarted.create("late").ok());  // space again: created
  auto reader = restarted.open("early");
  EXPECT_TRUE(reader.ok()) << reader.status().to_string();
}

// With a limit of 3 connections: the fourth is refused clearly and closed at once, the three go
// on, and once one leaves a new connection is served, though a flood of refused clients still
// holds its end (refused connections count toward no limit: they once did, and locked everyone
// out).
void expect_fourth_connection_refused(const TestDaemon& daemon) {
  std::vector<Client> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(connect_to(daemon));
    ASSERT_TRUE(clients.back().list().ok());
  }
  const std::string fds = "/proc/" + std::to_string(daemon.pid()) + "/fd";
  auto daemon_fds = [&] {
    return std::distance(std::filesystem::directory_iterator(fds),
                         std::filesystem::directory_iterator());
  };
  const auto before = daemon_fds();
  std::vector<Client> flood;
  for (int i = 0; i < 10; ++i) {
    flood.push_back(connect_to(daemon));
    auto refused = flood.back().list();
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), ErrorCode::kLimitExceeded) << refused.status().to_string();
    EXPECT_NE(refused.status().message().find("too many connections"), std::string::npos);
    EXPECT_EQ(flood.back().create("nope").status().code(), ErrorCode::kLimitExceeded);
  }
  // The daemon closed each refused connection at once: it holds no descriptor more.
  EXPECT_TRUE(eventually([&] { return daemon_fds() <= before; }))
      << daemon_fds() << " descriptors, " << before << " before the refused connections";
  auto producer = clients[0].create("s").value();
  EXPECT_TRUE(clients[1].open("s").ok());
  clients.pop_back();
  ASSERT_TRUE(eventually([&] { return connect_to(daemon).list().ok(); }));
  EXPECT_EQ(flood.size(), 10u);  // all still held by their clients
}

TEST(Limits, AUserOverTheirConnectionLimitIsRefusedClearlyAndOthersAreServed) {
  TestDaemon daemon({"--max-connections-per-user", "3"});
  expect_fourth_connection_refused(daemon);
}

TEST(Limits, ConnectionsOverTheDaemonsTotalLimitAreRefusedClearly) {
  TestDaemon daemon({"--max-connections", "3"});
  expect_fourth_connection_refused(daemon);
}

TEST(Limits, AUserOverTheirStreamLimitGetsLimitExceeded) {
  TestDaemon daemon({"--max-streams-per-user", "2"});
  auto client = connect_to(daemon);
  auto a = client.create("a").value();
  auto b = client.create("b").value();
  auto c = client.create("c");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), ErrorCode::kLimitExceeded) << c.status().to_string();
  EXPECT_NE(c.status().message().find("already has 2 streams"), std::string::npos);
  // A removed stream still held (here by its producer) still counts: removing and re-creating
  // once got 60 rings held under a limit of 5.
  ASSERT_TRUE(client.remove("a").ok());
  c = client.create("c");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), ErrorCode::kLimitExceeded) << c.status().to_string();
  EXPECT_NE(c.status().message().find("1 of them removed but still held"), std::string::npos)
      << c.status().message();
  // Let go of, it stops counting.
  ASSERT_TRUE(a.close().ok());
  EXPECT_TRUE(eventually([&] { return client.create("c").ok(); }));
}

}  // namespace
}  // namespace shmstream::test
