// Stall limits: nobody holds a `block` ring's producer by accident. A reader (or a cursor nobody
// holds) that keeps the producer waiting longer than the stream's stall limit is evicted; the
// producer goes on; the evicted one's next read (or open) says so. Meanwhile `stat` names who
// the producer waits for.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"
#include "support/status_matchers.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kRing = 64 << 10;

CreateOptions block_ring(std::chrono::milliseconds stall_limit) {
  CreateOptions options;
  options.retention = Retention::kBlock;
  options.ring_capacity = kRing;
  options.stall_limit = stall_limit;
  return options;
}

TEST(StallLimit, AStuckReaderIsEvictedTheProducerGoesOnAndStatNamedIt) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  auto producer = client.create("s", block_ring(400ms));
  ASSERT_THAT(producer, IsOk());
  auto stuck = client.open("s");  // never reads: it holds offset 0
  ASSERT_THAT(stuck, IsOk());
  const std::vector<std::byte> chunk(kRing / 2);
  ASSERT_THAT(producer->append(chunk), IsOk());
  ASSERT_THAT(producer->append(chunk), IsOk());  // the ring is full
  std::atomic<bool> appended{false};
  std::thread writer([&] {
    EXPECT_THAT(producer->append(chunk, 20s), IsOk());  // waits, until the eviction
    appended = true;
  });
  // While it waits, stat says for what and for whom.
  bool named = eventually([&] {
    auto info = client.stat("s");
    return info.ok() && info->producer_waits_for == kRing / 2 &&
           stall_text(*info).find("reader pid " + std::to_string(getpid())) != std::string::npos;
  });
  EXPECT_TRUE(named);
  writer.join();
  EXPECT_TRUE(appended);
  // The evicted reader is told, clearly, and holds nothing back any more.
  auto next = stuck->next(1 << 20, 1s);
  EXPECT_THAT(next, StatusIs(ErrorCode::kOverrun));
  EXPECT_NE(next.status().message().find("evicted"), std::string::npos) << next.status().message();
  ASSERT_THAT(producer->append(chunk, 5s), IsOk());
  auto info = client.stat("s");
  ASSERT_THAT(info, IsOk());
  EXPECT_EQ(info->producer_waits_for, UINT64_MAX);
  EXPECT_EQ(info->stall_limit, 400ms);
  // A reader that keeps up is never evicted.
  auto fresh = client.open("s");
  ASSERT_THAT(fresh, IsOk());
  ASSERT_THAT(fresh->seek(0, Whence::kEnd), IsOk());
  ASSERT_THAT(producer->append(chunk), IsOk());
  auto got = fresh->next(1 << 20, 5s);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->size(), chunk.size());
  ASSERT_THAT(producer->close(), IsOk());
}

TEST(StallLimit, AnIdleCursorIsEvictedAndItsNextOpenSaysSoUntilRemoved) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  auto producer = client.create("s", block_ring(300ms));
  ASSERT_THAT(producer, IsOk());
  {
    OpenOptions options;
    options.cursor = "idle";
    auto cursor = client.open("s", options);
    ASSERT_THAT(cursor, IsOk());
  }  // let go: it holds its commit (0) with no reader
  const std::vector<std::byte> chunk(kRing / 2);
  for (int i = 0; i < 3; ++i) ASSERT_THAT(producer->append(chunk, 20s), IsOk());
  OpenOptions options;
  options.cursor = "idle";
  auto again = client.open("s", options);
  EXPECT_THAT(again, StatusIs(ErrorCode::kOverrun));
  EXPECT_NE(again.status().message().find("was evicted"), std::string::npos)
      << again.status().message();
  ASSERT_THAT(client.remove_cursor("s", "idle"), IsOk());
  EXPECT_THAT(client.open("s", options), IsOk());  // a new cursor of that name
  ASSERT_THAT(producer->close(), IsOk());
}

// A `block` ring with the given stall limit, full, and a reader that never reads: it holds
// offset 0, so the producer's next append waits for it.
struct FullRing {
  explicit FullRing(std::chrono::milliseconds stall_limit)
      : client(connect_to(daemon)),
        producer(client.create("s", block_ring(stall_limit)).value()),
        stuck(client.open("s").value()) {
    EXPECT_THAT(producer.append(chunk), IsOk());
    EXPECT_THAT(producer.append(chunk), IsOk());
  }
  TestDaemon daemon;
  Client client;
  Producer producer;
  Reader stuck;
  const std::vector<std::byte> chunk = std::vector<std::byte>(kRing / 2);
};

// Removing the stream changes nothing for its producer: still attached, it goes on writing, and
// a reader that holds it back past the limit is evicted as before (it was not, once removed).
TEST(StallLimit, AStuckReaderOfARemovedStreamIsEvictedToo) {
  FullRing ring(300ms);
  ASSERT_THAT(ring.client.remove("s"), IsOk());
  ASSERT_TRUE(ring.client.stat("s").value().removing);
  EXPECT_THAT(ring.producer.append(ring.chunk, 10s), IsOk());  // waits, until the eviction
  EXPECT_THAT(ring.stuck.next(1 << 20, 1s), StatusIs(ErrorCode::kOverrun));
  ASSERT_THAT(ring.producer.close(), IsOk());
}

TEST(StallLimit, WithoutALimitTheProducerWaitsAsLongAsItIsTold) {
  FullRing ring(0ms);
  EXPECT_THAT(ring.producer.append(ring.chunk, 600ms), StatusIs(ErrorCode::kTimeout));
  auto next = ring.stuck.next(1 << 20, 1s);
  EXPECT_THAT(next, IsOk());  // still held for it: nothing lost
}

}  // namespace
}  // namespace shmstream::test
