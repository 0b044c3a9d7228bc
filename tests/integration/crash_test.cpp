// The daemon killed with SIGKILL while producers and readers are attached: they keep working
// through their mappings, reconnect by themselves to the restarted daemon and take their roles
// back; the new daemon lists every stream with its state; nothing is left in /dev/shm.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstring>
#include <string>
#include <vector>

#include "client/testing.hpp"
#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kSeed = 77;
constexpr size_t kChunk = 64 * 1024;

// Appends bytes [from, to) of the deterministic sequence.
void produce(Producer& producer, uint64_t from, uint64_t to) {
  std::vector<std::byte> buf(kChunk);
  for (uint64_t at = from; at < to; at += kChunk) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, to - at));
    fill_random(kSeed, at, buf.data(), n);
    ASSERT_TRUE(producer.append(std::span(buf.data(), n)).ok());
  }
}

// Reads exactly `length` bytes and returns their digest.
uint64_t consume(Reader& reader, uint64_t length) {
  Digest digest;
  std::vector<std::byte> buf(kChunk);
  while (digest.bytes() < length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, length - digest.bytes()));
    auto n = reader.read(std::span(buf.data(), want), 10s);
    EXPECT_TRUE(n.ok()) << n.status().to_string();
    if (!n.ok() || *n == 0) break;
    digest.update(buf.data(), *n);
  }
  return digest.value();
}

const StreamInfo* find(const std::vector<StreamInfo>& list, const std::string& name) {
  for (const auto& s : list) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

TEST(DaemonCrash, AttachedClientsKeepWorkingReconnectAndTheNewDaemonListsEveryStream) {
  TestDaemon daemon;
  auto client = connect_to(daemon);  // autostart off: it must find the restarted daemon itself
  constexpr uint64_t kHalf = 4 << 20;

  // "live": a producer and a reader of ours, attached across the crash.
  auto producer = client.create("live").value();
  auto reader = client.open("live").value();
  produce(producer, 0, kHalf);
  // "done": closed before the crash. "orphan": its producer process dies while no daemon runs.
  {
    auto done = client.create("done").value();
    ASSERT_TRUE(done.append("finished").ok());
    ASSERT_TRUE(done.close().ok());
  }
  Child orphan = Child::spawn(
      {bin_dir() + "/producer_helper", daemon.socket_path(), "orphan", "4096", "1", "4096", "hold"},
      true, true);
  ASSERT_TRUE(orphan.wait_for_line("created", 30s));
  ASSERT_EQ(write(orphan.stdin_fd(), "go\n", 3), 3);
  ASSERT_TRUE(orphan.wait_for_line("written", 30s));
  auto before = client.list().value();
  ASSERT_EQ(before.size(), 3u);

  // The daemon dies; the orphan's producer dies while none runs.
  daemon.kill_without_restart();
  orphan.kill(SIGKILL);
  orphan.wait(10s);

  // With no daemon at all, the attached producer and reader go on through shared memory.
  produce(producer, kHalf, 2 * kHalf);
  EXPECT_EQ(consume(reader, 2 * kHalf), digest_of_random(kSeed, 2 * kHalf));
  EXPECT_EQ(client.list().status().code(), ErrorCode::kUnavailable);

  daemon.start_again();
  // The client reconnects by itself, and the new daemon lists every stream with its state.
  ASSERT_TRUE(eventually([&] { return client.list().ok(); }, 15s));
  auto after = client.list().value();
  ASSERT_EQ(after.size(), 3u);
  ASSERT_NE(find(after, "live"), nullptr);
  EXPECT_EQ(find(after, "live")->state, StreamState::kOpen);
  EXPECT_EQ(find(after, "live")->bytes, 2 * kHalf);
  EXPECT_EQ(find(after, "done")->state, StreamState::kClosed);
  EXPECT_EQ(find(after, "done")->bytes, 8u);
  EXPECT_EQ(find(after, "orphan")->state, StreamState::kAborted);
  EXPECT_EQ(find(after, "orphan")->bytes, 4096u);
  // Our reader took its slot back (it counts again), and our producer its role.
  ASSERT_TRUE(eventually([&] { return client.stat("live").value().readers == 1; }));

  // The committed data of the dead producer stays readable by a late joiner.
  {
    auto late = client.open("orphan").value();
    EXPECT_EQ(consume(late, 4096), digest_of_random(1, 4096));
    std::byte b[1];
    EXPECT_EQ(late.read(b, 1s).status().code(), ErrorCode::kProducerDied);
  }

  // The reader reads on, then lets go: the daemon uncounts it (it knows the reader again).
  produce(producer, 2 * kHalf, 2 * kHalf + kChunk);
  Digest tail;
  {
    std::vector<std::byte> buf(kChunk);
    fill_random(kSeed, 2 * kHalf, buf.data(), kChunk);
    tail.update(buf.data(), kChunk);
  }
  EXPECT_EQ(consume(reader, kChunk), tail.value());
  { Reader gone = std::move(reader); }
  ASSERT_TRUE(eventually([&] { return client.stat("live").value().readers == 0; }));
  // The producer took its role back: a removed stream stays held ("removing") until it closes.
  ASSERT_TRUE(client.remove("live").ok());
  auto removing = client.list().value();
  ASSERT_NE(find(removing, "live"), nullptr);
  EXPECT_TRUE(find(removing, "live")->removing);
  {
    Producer closing = std::move(producer);
    ASSERT_TRUE(closing.close().ok());
  }
  EXPECT_TRUE(eventually([&] { return find(client.list().value(), "live") == nullptr; }));

  // Removing everything leaves nothing in /dev/shm.
  for (const char* name : {"done", "orphan"}) ASSERT_TRUE(client.remove(name).ok());
  EXPECT_TRUE(eventually([&] { return daemon.segment_files().empty(); }));
}

// A reader whose process exits while no daemon runs does not keep its slot: the new daemon
// frees it at once (its pid is dead), and a block ring's producer is not held back by it.
TEST(DaemonCrash, AReaderThatDiesWhileNoDaemonRunsFreesItsSlot) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  CreateOptions ring;
  ring.retention = Retention::kBlock;
  ring.ring_capacity = 64 * 1024;
  auto producer = client.create("ring", ring).value();
  // No autostart: it would start a daemon itself once this one dies (as clients do).
  Child cat = Child::spawn({bin_dir() + "/shmstream", "--no-autostart", "cat", "ring"}, false, true,
                           daemon.env());
  ASSERT_TRUE(eventually([&] { return client.stat("ring").value().readers == 1; }));
  daemon.kill_without_restart();
  cat.kill(SIGKILL);
  cat.wait(10s);
  daemon.start_again();
  ASSERT_TRUE(eventually([&] { return client.list().ok(); }, 15s));
  EXPECT_EQ(client.stat("ring").value().readers, 0u);
  // Four rings' worth goes through: nobody holds the producer back.
  std::vector<std::byte> buf(64 * 1024);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(producer.append(buf, 5s).ok()) << i;
  ASSERT_TRUE(producer.close().ok());
  ASSERT_TRUE(client.remove("ring").ok());
}

// The daemon dies after it granted an open (or a create) and before the client remembered the
// grant for reattachment: the client's reconnection has already taken back what it knew, without
// this one. The client still takes it back from the new daemon; otherwise the daemon lets the
// reader's slot go after its grace, and a block ring's producer overwrites what the reader has
// yet to read (the soak found this under ASan).
TEST(DaemonCrash, AGrantRepliedJustBeforeTheDaemonDiedIsStillTakenBack) {
  // Each new daemon frees unclaimed slots of the last one's readers after 2 s.
  TestDaemon daemon({"--reattach-grace-ms", "2000"});
  auto client = connect_to(daemon);
  auto other = connect_to(daemon);  // the client whose grants race the crash
  CreateOptions ring;
  ring.retention = Retention::kBlock;
  ring.ring_capacity = 64 * 1024;
  auto producer = client.create("ring", ring).value();
  int crashes = 0;
  testing::set_after_grant([&] {
    ++crashes;
    daemon.crash_and_restart();
    // Our reconnection, with its reattachment, is done once a request goes through again.
    EXPECT_TRUE(eventually([&] { return other.list().ok(); }, 15s));
  });
  auto reader = other.open("ring");
  ASSERT_EQ(crashes, 1);
  ASSERT_TRUE(reader.ok()) << reader.status().to_string();
  ASSERT_TRUE(eventually([&] { return client.list().ok(); }, 15s));
  // The new daemon counts the reader again: it took its slot back.
  EXPECT_TRUE(eventually(
      [&] {
        auto info = client.stat("ring");
        return info.ok() && info->readers == 1;
      },
      5s));
  // And the producer holds back for it: a ring's worth fits, one byte more waits, past the
  // grace (which would have freed the slot of a reader that never came back).
  std::vector<std::byte> buf(64 * 1024);
  fill_random(kSeed, 0, buf.data(), buf.size());
  ASSERT_TRUE(producer.append(buf, 5s).ok());
  const std::byte one[1] = {};
  EXPECT_EQ(producer.append(one, 2500ms).code(), ErrorCode::kTimeout);
  EXPECT_EQ(client.stat("ring").value().readers, 1u);
  std::vector<std::byte> got(buf.size());
  auto n = reader->read(got, 5s);
  ASSERT_TRUE(n.ok()) << n.status().to_string();
  EXPECT_EQ(std::memcmp(got.data(), buf.data(), *n), 0);
  // A producer granted just before a crash takes its role back too: a removal waits for its close.
  auto late = other.create("late");
  testing::set_after_grant(nullptr);
  ASSERT_EQ(crashes, 2);
  ASSERT_TRUE(late.ok()) << late.status().to_string();
  // The grant's reattachment is queued on `other`'s connection ahead of this request, and the
  // daemon answers one connection's requests in order: once it answers, the role is back. Then
  // the remover's own connection must be back too.
  ASSERT_TRUE(eventually([&] { return other.list().ok(); }, 15s));
  ASSERT_TRUE(eventually([&] { return client.list().ok(); }, 15s));
  ASSERT_TRUE(client.remove("late").ok());
  EXPECT_TRUE(
      eventually([&] { return client.stat("late").ok() && client.stat("late")->removing; }));
  ASSERT_TRUE(late->close().ok());
  EXPECT_TRUE(eventually([&] { return !client.stat("late").ok(); }));
}

// The clients of stream "late", in their own processes, stopped (SIGSTOP) across a daemon crash
// so that they cannot reattach before the test removes the stream: a producer that wrote 4096
// bytes and holds the stream open, and a `shmstream cat` that has read them.
// SIGSTOPs `child` and returns once it is stopped (WNOWAIT: still to be reaped).
void stop_for_sure(Child& child) {
  child.kill(SIGSTOP);
  siginfo_t info{};
  EXPECT_EQ(waitid(P_PID, static_cast<id_t>(child.pid()), &info, WSTOPPED | WNOWAIT), 0);
}

struct StoppedClients {
  Child producer;
  Child cat;
};

// Reads `n` bytes from `fd`, waiting at most `timeout` for each piece: fewer if it runs out.
std::string read_exactly(int fd, size_t n, std::chrono::milliseconds timeout) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) != 1) break;
    ssize_t r = read(fd, out.data() + got, n - got);
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

StoppedClients crash_with_clients_stopped(TestDaemon& daemon, Client& client) {
  StoppedClients out;
  out.producer = Child::spawn(
      {bin_dir() + "/producer_helper", daemon.socket_path(), "late", "4096", "9", "4096", "hold"},
      true, true);
  EXPECT_TRUE(out.producer.wait_for_line("created", 30s));
  EXPECT_EQ(write(out.producer.stdin_fd(), "go\n", 3), 3);
  EXPECT_TRUE(out.producer.wait_for_line("written", 30s));
  out.cat = Child::spawn({bin_dir() + "/shmstream", "--no-autostart", "cat", "late"}, false, true,
                         daemon.env());
  // Past its start (which asks the daemon more than the open): it has passed the bytes on.
  std::string passed = read_exactly(out.cat.stdout_fd(), 4096, 30s);
  EXPECT_EQ(passed.size(), 4096u);
  Digest digest;
  digest.update(passed.data(), passed.size());
  EXPECT_EQ(digest.value(), digest_of_random(9, 4096));
  stop_for_sure(out.producer);  // before the daemon dies
  stop_for_sure(out.cat);
  daemon.kill_without_restart();
  daemon.start_again();
  EXPECT_TRUE(eventually([&] { return client.list().ok(); }, 15s));
  return out;
}

// Removed after a restart, before its producer and reader reattached: the stream is held for
// them, as it would be had they been attached. They take it back, the reader reads to the
// producer's close, and only then is the stream released.
TEST(DaemonCrash, ARemovalBeforeTheClientsReattachWaitsForThem) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  StoppedClients stopped = crash_with_clients_stopped(daemon, client);
  ASSERT_TRUE(client.remove("late").ok());
  auto held = client.stat("late");
  ASSERT_TRUE(held.ok()) << held.status().to_string();
  EXPECT_TRUE(held->removing);
  stopped.producer.kill(SIGCONT);
  stopped.cat.kill(SIGCONT);
  // The reader's slot was kept: it counts again once taken back.
  EXPECT_TRUE(eventually([&] { return client.stat("late").value().readers == 1; }, 15s));
  stopped.producer.close_stdin();
  EXPECT_TRUE(stopped.producer.wait_for_line("closed", 30s));
  int status = stopped.producer.wait(10s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // The reader sees the clean end, after the bytes it had passed on.
  status = stopped.cat.wait(10s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(read_all(stopped.cat.stdout_fd()), "");
  EXPECT_TRUE(eventually([&] { return !client.stat("late").ok(); }));
  EXPECT_TRUE(eventually([&] { return daemon.segment_files().empty(); }));
}

// The attack on the removal above: the producer dies before it reattaches. The daemon still
// watches it and aborts the stream, so its reader ends with an error instead of waiting forever
// on a stream nobody would end.
TEST(DaemonCrash, AProducerThatDiesBeforeReattachingEndsItsRemovedStream) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  StoppedClients stopped = crash_with_clients_stopped(daemon, client);
  ASSERT_TRUE(client.remove("late").ok());
  stopped.producer.kill(SIGKILL);
  stopped.producer.wait(10s);
  EXPECT_TRUE(eventually([&] {
    auto info = client.stat("late");
    return info.ok() && info->state == StreamState::kAborted;
  }));
  stopped.cat.kill(SIGCONT);
  int status = stopped.cat.wait(10s);
  ASSERT_NE(status, -1) << "the reader of a removed stream whose producer died still waits";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_EQ(read_all(stopped.cat.stdout_fd()), "");
  EXPECT_TRUE(eventually([&] { return !client.stat("late").ok(); }));
}

// A reader whose process comes back only after the restarted daemon's reattachment grace: its
// slot was freed, so no producer wakes it any more. It is told (its read fails saying why) at
// once, rather than sleeping on unseen while the stream goes on.
TEST(DaemonCrash, AReaderBackAfterTheGraceIsToldItWasLetGo) {
  TestDaemon daemon({"--reattach-grace-ms", "300"});
  auto client = connect_to(daemon);
  auto producer = client.create("s").value();
  produce(producer, 0, 4096);
  // Its stderr comes through its stdout pipe, after the bytes.
  Child cat = Child::spawn(
      {"/bin/sh", "-c", "exec \"$0\" --no-autostart cat s 2>&1", bin_dir() + "/shmstream"}, false,
      true, daemon.env());
  ASSERT_EQ(read_exactly(cat.stdout_fd(), 4096, 30s).size(), 4096u);
  stop_for_sure(cat);
  daemon.kill_without_restart();
  daemon.start_again();
  ASSERT_TRUE(eventually([&] { return client.list().ok(); }, 15s));
  // The grace runs out: the slot kept for it is freed.
  ASSERT_TRUE(eventually([&] { return client.stat("s").value().attached.empty(); }, 15s));
  cat.kill(SIGCONT);
  // Nothing new is written: only being told can end its wait.
  int status = cat.wait(10s);
  ASSERT_NE(status, -1) << "a reader let go after the grace still sleeps";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  EXPECT_THAT(read_all(cat.stdout_fd()), ::testing::HasSubstr("let go by the restarted daemon"));
  ASSERT_TRUE(producer.close().ok());
  ASSERT_TRUE(client.remove("s").ok());
}

}  // namespace
}  // namespace shmstream::test
