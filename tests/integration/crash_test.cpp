// The daemon killed with SIGKILL while producers and readers are attached: they keep working
// through their mappings, reconnect by themselves to the restarted daemon and take their roles
// back; the new daemon lists every stream with its state; nothing is left in /dev/shm.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstring>
#include <string>
#include <vector>

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

}  // namespace
}  // namespace shmstream::test
