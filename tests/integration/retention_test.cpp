// Bounded retention across processes: a drop-oldest ring raced by readers for 10 s, and a
// block ring held by a stuck reader process until that process is killed.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

class Retention : public ::testing::Test {
 protected:
  void SetUp() override { client_ = std::make_unique<Client>(connect_to(daemon_)); }

  // Feeds `writer`'s stdin with fill_random(seed) bytes until `stop` (or the pipe breaks).
  static uint64_t feed(Child& writer, uint64_t seed, const std::atomic<bool>& stop,
                       uint64_t limit = UINT64_MAX) {
    std::vector<std::byte> buf(64 << 10);
    uint64_t off = 0;
    while (!stop.load(std::memory_order_relaxed) && off < limit) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), limit - off));
      fill_random(seed, off, buf.data(), n);
      size_t done = 0;
      while (done < n) {
        ssize_t w = ::write(writer.stdin_fd(), buf.data() + done, n - done);
        if (w <= 0) return off + done;
        done += static_cast<size_t>(w);
      }
      off += n;
    }
    return off;
  }

  TestDaemon daemon_;
  std::unique_ptr<Client> client_;
};

struct RaceCounts {
  uint64_t verified = 0;      // bytes compared equal and confirmed intact
  uint64_t discarded = 0;     // views found overwritten after reading (correctly not accepted)
  uint64_t overruns = 0;      // kOverrun errors, resumed at the offset they named
  uint64_t accepted_bad = 0;  // bytes that differed yet were reported intact: must stay 0
};

// Reads the ring until its end, checking every view against the producer's deterministic bytes.
// `work` extra passes over each view make a slow reader that the ring overruns.
RaceCounts race(Reader reader, uint64_t seed, int work) {
  RaceCounts c;
  std::vector<std::byte> want(256 << 10);
  for (;;) {
    uint64_t at = reader.position();
    auto view = reader.next(want.size(), 30s);
    if (!view.ok()) {
      if (view.status().code() != ErrorCode::kOverrun) {
        ADD_FAILURE() << view.status().to_string();
        return c;
      }
      ++c.overruns;
      EXPECT_GE(view.status().offset(), at);
      EXPECT_TRUE(reader.seek(static_cast<int64_t>(view.status().offset())).ok());
      continue;
    }
    if (view->empty()) return c;  // closed
    fill_random(seed, at, want.data(), view->size());
    bool same = true;
    for (int pass = 0; pass <= work; ++pass) {
      same = std::memcmp(view->data(), want.data(), view->size()) == 0 && same;
    }
    if (!reader.intact(at)) {  // overwritten while we compared: not accepted
      c.discarded += view->size();
      (void)reader.seek(static_cast<int64_t>(reader.oldest()));
      continue;
    }
    if (same) {
      c.verified += view->size();
    } else {
      c.accepted_bad += view->size();
    }
  }
}

TEST_F(Retention, ReadersRacingAFastProducerForTenSecondsNeverAcceptATornByte) {
  constexpr uint64_t kSeed = 77;
  Child writer = Child::spawn(
      {bin_dir() + "/shmstream", "write", "race", "--retention", "drop-oldest", "--capacity", "1M"},
      true, false, daemon_.env());
  ASSERT_TRUE(eventually([&] { return client_->stat("race").ok(); }));
  std::vector<RaceCounts> counts(3);
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i) {
    readers.emplace_back([&, i, r = std::make_shared<Reader>(client_->open("race").value())] {
      counts[i] = race(std::move(*r), kSeed, /*work=*/i * 8);
    });
  }
  std::atomic<bool> stop{false};
  uint64_t fed = 0;
  std::thread feeder([&] { fed = feed(writer, kSeed, stop); });
  auto until = std::chrono::steady_clock::now() + 10s;
  // The race runs for 10 s: this is the test's duration, not a synchronisation.
  std::this_thread::sleep_until(until);
  stop = true;
  feeder.join();
  writer.close_stdin();
  ASSERT_TRUE(WIFEXITED(writer.wait(30s)));
  for (auto& t : readers) t.join();
  uint64_t verified = 0, overruns = 0, discarded = 0;
  for (const auto& c : counts) {
    EXPECT_EQ(c.accepted_bad, 0u);
    verified += c.verified;
    overruns += c.overruns;
    discarded += c.discarded;
  }
  std::printf(
      "fed %llu MiB; verified %llu MiB; %llu overruns; %llu KiB discarded\n",
      static_cast<unsigned long long>(fed >> 20), static_cast<unsigned long long>(verified >> 20),
      static_cast<unsigned long long>(overruns), static_cast<unsigned long long>(discarded >> 10));
  EXPECT_GT(fed, 64u << 20);            // the ring wrapped many times
  EXPECT_GT(counts[0].verified, 0u);    // the fast reader read most of it
  EXPECT_GT(overruns + discarded, 0u);  // and the slow ones were overrun, and told so
}

TEST_F(Retention, ABlockRingHoldsTheProducerUntilTheStuckReaderIsKilled) {
  constexpr uint64_t kCapacity = 64 << 10;
  constexpr uint64_t kChunk = kCapacity / 4;  // what the CLI reserves at once in this ring
  constexpr uint64_t kBytes = 8 << 20;        // far more than the stuck reader's pipe holds
  Child writer = Child::spawn(
      {bin_dir() + "/shmstream", "write", "held", "--retention", "block", "--capacity", "64K"},
      true, false, daemon_.env());
  ASSERT_TRUE(eventually([&] { return client_->stat("held").ok(); }));
  // A reader process whose stdout nobody reads: it stops once its pipe is full.
  Child stuck = Child::spawn({bin_dir() + "/shmstream", "cat", "held"}, false, true, daemon_.env());
  ASSERT_TRUE(eventually([&] { return client_->stat("held").value().readers == 1; }));
  std::atomic<bool> stop{false};
  uint64_t fed = 0;
  std::thread feeder([&] { fed = feed(writer, 5, stop, kBytes); });
  // Held: the next reservation does not fit in the ring beyond the stuck reader's position.
  ASSERT_TRUE(eventually([&] {
    auto info = client_->stat("held").value();
    return info.bytes + kChunk > info.slowest_reader + kCapacity && info.bytes > 0;
  }));
  auto held = client_->stat("held").value();
  EXPECT_LT(held.bytes, kBytes);
  EXPECT_EQ(waitpid(writer.pid(), nullptr, WNOHANG), 0);  // still running: waiting for room
  stuck.kill(SIGKILL);
  // The dead reader stops holding it back: the rest goes through and the stream closes.
  feeder.join();
  writer.close_stdin();
  int ws = writer.wait(30s);
  EXPECT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << ws;
  EXPECT_EQ(fed, kBytes);
  auto info = client_->stat("held").value();
  EXPECT_EQ(info.bytes, kBytes);
  EXPECT_EQ(info.state, StreamState::kClosed);
  EXPECT_EQ(info.readers, 0u);
}

}  // namespace
}  // namespace shmstream::test
