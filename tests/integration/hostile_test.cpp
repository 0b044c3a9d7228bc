// Hostile processes against the daemon and against honest readers: every attack a process can
// make through the files and descriptors it holds, and what each victim sees. The owner's
// attacks need no second user (an owner may always write its own segment file); the readers'
// attacks run as throwaway users (root only: skipped elsewhere, saying so): Alice writes an
// `everyone` stream, Carol reads it honestly, Bob reads it with hostile_reader, which abuses
// every descriptor the daemon hands a reader.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "shm/layout.hpp"
#include "shm/naming.hpp"
#include "shmstream/client.hpp"
#include "support/harness.hpp"
#include "support/status_matchers.hpp"
#include "support/users.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

// The path of stream `name`'s segment file in /dev/shm.
std::string segment_of(const TestDaemon& daemon, Client& client, const std::string& name) {
  auto info = client.stat(name);
  if (!info.ok()) return {};
  return std::string(shm::kDefaultSegmentDir) + "/" +
         shm::segment_file_name(shm::instance_tag(daemon.socket_path()), info->stream_id);
}

// After an attack: the daemon lives and serves someone else (a new stream, written and read).
void expect_daemon_serves(TestDaemon& daemon) {
  ASSERT_TRUE(daemon.alive());
  auto [status, out] = run_cli(daemon, {"write", "bystander"}, "still here\n");
  EXPECT_TRUE(exited_with(status, 0)) << status;
  auto [cat_status, text] = run_cli(daemon, {"cat", "bystander"});
  EXPECT_TRUE(exited_with(cat_status, 0)) << cat_status;
  EXPECT_EQ(text, "still here\n");
}

TEST(HostileOwner, ShrinkingTheSegmentBelowItsHeaderUnderAReadingCatIsAnErrorNotASignal) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  Child writer =
      Child::spawn({bin_dir() + "/shmstream", "write", "victim"}, true, false, daemon.env());
  ASSERT_TRUE(eventually([&] { return client.stat("victim").ok(); }));
  Child cat = Child::spawn({bin_dir() + "/shmstream", "cat", "victim"}, false, true, daemon.env());
  ASSERT_EQ(::write(writer.stdin_fd(), "first\n", 6), 6);
  ASSERT_TRUE(cat.wait_for_line("first", 10s));
  const std::string file = segment_of(daemon, client, "victim");
  ASSERT_FALSE(file.empty());
  ASSERT_EQ(truncate(file.c_str(), 100), 0);  // the owner's attack
  // The owner's own writer fails (its own doing), as an error: the stream ends, the cat wakes.
  (void)::write(writer.stdin_fd(), "second\n", 7);
  writer.close_stdin();
  int writer_status = writer.wait(10s);
  EXPECT_TRUE(WIFEXITED(writer_status)) << writer_status;
  int cat_status = cat.wait(10s);
  EXPECT_TRUE(exited_with(cat_status, 1)) << cat_status;  // not SIGBUS, not a hang, not 0
  // `ls` reads the damaged header: the daemon survives it, and says what it found.
  auto listed = client.list();
  ASSERT_THAT(listed, IsOk());
  bool found = false;
  for (const StreamInfo& info : *listed) {
    if (info.name != "victim") continue;
    found = true;
    EXPECT_EQ(std::string(state_label(info)), "corrupt");
    EXPECT_NE(info.damage.find("shorter than the 4096-byte header"), std::string::npos)
        << info.damage;
  }
  EXPECT_TRUE(found);
  expect_daemon_serves(daemon);
}

TEST(HostileOwner, TruncatingTheSegmentToNothingIsCorruptForAReaderAndHarmlessToTheDaemon) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  auto producer = client.create("victim");
  ASSERT_THAT(producer, IsOk());
  const std::string data(1 << 20, 'd');
  ASSERT_THAT(producer->append(std::as_bytes(std::span(data))), IsOk());
  auto reader = client.open("victim");
  ASSERT_THAT(reader, IsOk());
  auto view = reader->next(4096, 10s);
  ASSERT_THAT(view, IsOk());
  const std::string file = segment_of(daemon, client, "victim");
  ASSERT_FALSE(file.empty());
  ASSERT_EQ(truncate(file.c_str(), 0), 0);
  EXPECT_THAT(reader->next(1 << 20, 1s), StatusIs(ErrorCode::kCorrupt));
  EXPECT_EQ((*view)[100], std::byte{0});  // a view held across the attack reads zeros
  auto info = client.stat("victim");
  ASSERT_THAT(info, IsOk());
  EXPECT_FALSE(info->damage.empty());
  expect_daemon_serves(daemon);
  // The owner's producer is told, and removing the stream cleans up all the same.
  EXPECT_THAT(producer->append(std::as_bytes(std::span(data))), StatusIs(ErrorCode::kCorrupt));
  EXPECT_THAT(client.remove("victim", /*force=*/true), IsOk());
}

// The owner lies in every field its producer writes: a length past the file, a garbage state,
// an oldest offset and a file size from nowhere, a stall that never was. Its reader ends with
// an error (not a signal, not a hang, not bytes that were never written); the daemon lists it
// and serves someone else.
TEST(HostileOwner, LiesInEveryHeaderFieldCostItsReadersOnlyAnError) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  auto producer = client.create("victim");
  ASSERT_THAT(producer, IsOk());
  ASSERT_THAT(producer->append("honest\n"), IsOk());
  Child cat = Child::spawn({bin_dir() + "/shmstream", "cat", "victim"}, false, true, daemon.env());
  ASSERT_TRUE(cat.wait_for_line("honest", 10s));
  const std::string file = segment_of(daemon, client, "victim");
  int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  auto put = [&](size_t offset, uint64_t value) {
    ASSERT_EQ(pwrite(fd, &value, sizeof(value), static_cast<off_t>(offset)), 8);
  };
  put(offsetof(shm::SegmentHeader, oldest_offset), ~uint64_t{0} / 3);
  put(offsetof(shm::SegmentHeader, data_file_size), ~uint64_t{0});
  put(offsetof(shm::SegmentHeader, stalled_since_ns), 1);
  put(offsetof(shm::SegmentHeader, space_wanted), 12345);
  put(offsetof(shm::SegmentHeader, committed_length), 100'000'000);  // past the file
  ASSERT_THAT(producer->close(), IsOk());  // the end wakes the cat, which meets the lies
  int status = cat.wait(10s);
  EXPECT_TRUE(exited_with(status, 1)) << status;
  auto listed = client.list();
  ASSERT_THAT(listed, IsOk());  // the daemon read every lie and lives
  put(offsetof(shm::SegmentHeader, state), 77);
  EXPECT_THAT(client.stat("victim"), IsOk());
  ::close(fd);
  expect_daemon_serves(daemon);
  EXPECT_THAT(client.remove("victim", /*force=*/true), IsOk());
}

// Restart consistency: a daemon restarted under a live producer adopts the same reader table,
// so a reader that opens afterwards is one the producer wakes and, in a block ring, waits for.
TEST(RestartConsistency, ALiveProducerWakesAndWaitsForAReaderThatCameAfterARestart) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  CreateOptions options;
  options.retention = Retention::kBlock;
  options.ring_capacity = 64 << 10;
  auto producer = client.create("s", options);
  ASSERT_THAT(producer, IsOk());
  daemon.crash_and_restart();
  auto late = connect_to(daemon);
  auto reader = late.open("s");
  ASSERT_THAT(reader, IsOk());
  Status woken;
  auto blocked = blocked_thread([&] { woken = reader->wait_for(1, 10s); });
  ASSERT_THAT(producer->append("x"), IsOk());
  blocked.join();
  EXPECT_THAT(woken, IsOk());  // woken by the producer that never saw this daemon's open
  const std::vector<std::byte> ring(64 << 10);
  // The reader is still at 0: the producer waits for it, ...
  EXPECT_THAT(producer->append(ring, 300ms), StatusIs(ErrorCode::kTimeout));
  // ... and goes on once it reads.
  std::vector<std::byte> buf(1);
  ASSERT_THAT(reader->read(buf, 1s), IsOk());
  EXPECT_THAT(producer->append(std::span(ring).first(1), 5s), IsOk());
  ASSERT_THAT(producer->close(), IsOk());
}

// A reader table found unusable at a restart (only root could damage it) is not silently
// replaced under the live producer, which keeps the old one: new readers are refused, clearly.
TEST(RestartConsistency, AnUnusableTableUnderALiveProducerRefusesNewReadersClearly) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  auto producer = client.create("s");
  ASSERT_THAT(producer, IsOk());
  ASSERT_THAT(producer->append("kept"), IsOk());
  const std::string table = segment_of(daemon, client, "s") + ".t";
  daemon.kill_without_restart();
  ASSERT_EQ(truncate(table.c_str(), 100), 0);
  daemon.start_again();
  auto late = connect_to(daemon);
  auto reader = late.open("s");
  EXPECT_THAT(reader, StatusIs(ErrorCode::kCorrupt));
  EXPECT_NE(reader.status().message().find("reader table is unusable"), std::string::npos)
      << reader.status().message();
  auto info = late.stat("s");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(std::string(state_label(*info)), "corrupt");
  EXPECT_EQ(info->bytes, 4u);  // nothing deleted on doubt
  ASSERT_THAT(producer->close(), IsOk());
}

class HostileReader : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_SKIP() << "needs root: it creates throwaway users (the hostile reader must not be "
                      "the stream's owner)";
    }
    if (std::system("command -v useradd >/dev/null && command -v setpriv >/dev/null") != 0) {
      GTEST_SKIP() << "needs useradd and setpriv (packages passwd and util-linux)";
    }
    alice_ = std::make_unique<TempUser>("ha");
    bob_ = std::make_unique<TempUser>("hb");
    carol_ = std::make_unique<TempUser>("hc");
    ASSERT_TRUE(alice_->ok() && bob_->ok() && carol_->ok()) << "useradd failed";
    daemon_ = std::make_unique<TestDaemon>(std::vector<std::string>{"--socket-mode", "0666"});
    std::filesystem::permissions(daemon_->dir(), std::filesystem::perms(0711));
    bin_ = daemon_->dir() + "/bin";
    std::filesystem::create_directory(bin_);
    std::filesystem::permissions(bin_, std::filesystem::perms(0755));
    for (const char* program : {"shmstream", "hostile_reader"}) {
      std::filesystem::copy_file(bin_dir() + "/" + program, bin_ + "/" + program);
    }
  }
  void TearDown() override {
    if (daemon_) {
      auto client = connect_to(*daemon_);
      if (auto streams = client.list(); streams.ok()) {
        for (const auto& s : *streams) (void)client.remove(s.name, true);
      }
    }
    daemon_.reset();
    carol_.reset();
    bob_.reset();
    alice_.reset();
  }

  // Runs `args` (a program in bin_, then its arguments) as `user`.
  Child spawn_as(const TempUser& user, std::vector<std::string> args, bool pipe_stdin,
                 bool pipe_stdout) {
    std::vector<std::string> argv = {"/usr/bin/setpriv",
                                     "--reuid=" + std::to_string(user.uid()),
                                     "--regid=" + std::to_string(user.gid()),
                                     "--init-groups",
                                     "--",
                                     bin_ + "/" + args[0]};
    if (args[0] == "shmstream") {
      argv.insert(argv.end(), {"--no-autostart", "--socket", daemon_->socket_path()});
    }
    argv.insert(argv.end(), args.begin() + 1, args.end());
    return Child::spawn(argv, pipe_stdin, pipe_stdout);
  }

  struct Outcome {
    int writer = -1;            // Alice's `write`: its wait status
    int reader = -1;            // Carol's `cat`: its wait status
    bool exact = false;         // Carol got every byte Alice wrote, in order
    int attacker = -1;          // Bob's hostile_reader: its wait status
    std::string attacker_said;  // its findings
  };

  // Alice writes 4 MiB of random bytes to stream "s" (`write_args` more), Carol reads it with
  // `cat`, and Bob runs `attack` against it meanwhile.
  // An attack of `attack_ms` longer than the writing is cut short once the writing is done.
  Outcome run_attack(const std::string& attack, std::vector<std::string> write_args = {},
                     int attack_ms = 1500) {
    Outcome out;
    auto client = connect_to(*daemon_);
    std::vector<std::string> write = {"shmstream", "write", "s", "--mode", "everyone"};
    write.insert(write.end(), write_args.begin(), write_args.end());
    Child writer = spawn_as(*alice_, write, true, false);
    EXPECT_TRUE(eventually([&] { return client.stat("s").ok(); }));
    Child cat = spawn_as(*carol_, {"shmstream", "cat", "s"}, false, true);
    EXPECT_TRUE(eventually([&] {
      auto info = client.stat("s");
      return info.ok() && info->readers == 1;
    }));
    Child bob = spawn_as(
        *bob_, {"hostile_reader", daemon_->socket_path(), "s", attack, std::to_string(attack_ms)},
        false, true);
    EXPECT_TRUE(eventually([&] {
      auto info = client.stat("s");
      return info.ok() && info->readers >= 2;
    }));
    constexpr uint64_t kBytes = 4 << 20;
    Digest got;
    std::thread drain([&] {
      std::vector<char> buf(1 << 16);
      for (ssize_t n; (n = ::read(cat.stdout_fd(), buf.data(), buf.size())) > 0;) {
        got.update(buf.data(), static_cast<size_t>(n));
      }
    });
    std::vector<std::byte> chunk(64 << 10);
    for (uint64_t at = 0; at < kBytes; at += chunk.size()) {
      fill_random(7, at, chunk.data(), chunk.size());
      if (::write(writer.stdin_fd(), chunk.data(), chunk.size()) !=
          static_cast<ssize_t>(chunk.size())) {
        break;
      }
    }
    writer.close_stdin();
    out.writer = writer.wait(30s);
    out.reader = cat.wait(30s);
    drain.join();
    out.exact = got.bytes() == kBytes && got.value() == digest_of_random(7, kBytes);
    if (attack_ms > 5000) bob.kill(SIGKILL);
    out.attacker_said = read_all(bob.stdout_fd());
    out.attacker = bob.wait(30s);
    // The daemon lives, and serves a third user a stream of its own.
    EXPECT_TRUE(daemon_->alive());
    Child bystander = spawn_as(*carol_, {"shmstream", "write", "own"}, true, false);
    EXPECT_EQ(::write(bystander.stdin_fd(), "mine\n", 5), 5);
    bystander.close_stdin();
    EXPECT_TRUE(exited_with(bystander.wait(30s), 0));
    Child mine = spawn_as(*carol_, {"shmstream", "cat", "own"}, false, true);
    EXPECT_EQ(read_all(mine.stdout_fd()), "mine\n");
    EXPECT_TRUE(exited_with(mine.wait(30s), 0));
    EXPECT_THAT(client.remove("own"), IsOk());
    EXPECT_THAT(client.remove("s", /*force=*/true), IsOk());
    return out;
  }

  // What every attack on Alice's stream must leave: her writer and Carol's reader unharmed,
  // Carol's bytes exact, Bob not killed by a signal.
  void expect_unharmed(const Outcome& o) {
    EXPECT_TRUE(exited_with(o.writer, 0)) << "writer status " << o.writer;
    EXPECT_TRUE(exited_with(o.reader, 0)) << "reader status " << o.reader;
    EXPECT_TRUE(o.exact) << "the honest reader did not get the bytes written";
    EXPECT_TRUE(WIFEXITED(o.attacker)) << "attacker status " << o.attacker;
  }

  std::unique_ptr<TempUser> alice_, bob_, carol_;
  std::unique_ptr<TestDaemon> daemon_;
  std::string bin_;
};

TEST_F(HostileReader, TruncatingItsPageHarmsNobodyElse) {
  for (const char* retention : {"unbounded", "block"}) {
    SCOPED_TRACE(retention);
    std::vector<std::string> args = {"--retention", retention};
    if (std::string(retention) == "block") args.insert(args.end(), {"--capacity", "256K"});
    Outcome o = run_attack("truncate", args);
    expect_unharmed(o);
    EXPECT_NE(o.attacker_said.find("truncate own page: REACHED"), std::string::npos)
        << o.attacker_said;  // it may: the page is its own
  }
}

TEST_F(HostileReader, GrowingItsPageHarmsNobody) { expect_unharmed(run_attack("grow")); }

TEST_F(HostileReader, ScribblingEveryFieldOfItsPageHarmsNobodyElse) {
  for (const char* retention : {"unbounded", "block"}) {
    SCOPED_TRACE(retention);
    std::vector<std::string> args = {"--retention", retention};
    if (std::string(retention) == "block") {
      args.insert(args.end(), {"--capacity", "256K", "--stall-limit", "0.3"});
    }
    expect_unharmed(run_attack("scribble", args));
  }
}

TEST_F(HostileReader, AWakeUpStormCostsOnlyWakeUps) {
  expect_unharmed(run_attack("storm", {"--retention", "block", "--capacity", "256K"}));
}

TEST_F(HostileReader, HoldingABlockRingPastItsStallLimitGetsTheHolderEvicted) {
  // Bob would hold the ring for a minute; the writer is done long before: he was evicted.
  const auto start = std::chrono::steady_clock::now();
  Outcome o = run_attack(
      "hold", {"--retention", "block", "--capacity", "256K", "--stall-limit", "0.3"}, 60000);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 20s);
  EXPECT_TRUE(exited_with(o.writer, 0)) << "writer status " << o.writer;
  EXPECT_TRUE(exited_with(o.reader, 0)) << "reader status " << o.reader;
  EXPECT_TRUE(o.exact);
}

TEST_F(HostileReader, NothingButItsOwnPageIsWithinReach) {
  Outcome o = run_attack("escape");
  expect_unharmed(o);
  EXPECT_TRUE(exited_with(o.attacker, 0)) << o.attacker_said;  // 3: something was reached
  EXPECT_EQ(o.attacker_said.find("REACHED"), std::string::npos) << o.attacker_said;
  EXPECT_NE(o.attacker_said.find("open "), std::string::npos) << o.attacker_said;  // it tried
}

TEST_F(HostileReader, TakingEverySlotIsRefusedAtItsShare) {
  Outcome o = run_attack("exhaust");
  expect_unharmed(o);
  EXPECT_NE(o.attacker_said.find("the most one user other than its owner may"), std::string::npos)
      << o.attacker_said;
}

}  // namespace
}  // namespace shmstream::test
