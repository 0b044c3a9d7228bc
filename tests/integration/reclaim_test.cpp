// Reclamation (issue 19): what a daemon killed for good leaves behind, `shmstream gc` lists with
// sizes and removes, exactly that: a live daemon's streams in the same directory stay, and so do
// quarantined files unless asked. A bench killed midway leaves nothing after gc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shm/naming.hpp"
#include "shmstream/client.hpp"
#include "shmstream/leftovers.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

std::vector<std::string> files_with(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string f = e.path().filename().string();
    if (f.rfind(prefix, 0) == 0) out.push_back(f);
  }
  std::sort(out.begin(), out.end());
  return out;
}

class Reclaim : public ::testing::Test {
 protected:
  TempDir temp_{"reclaim"};
  const std::string segments_ = temp_.path();
};

TEST_F(Reclaim, GcRemovesExactlyTheStreamsOfADeadDaemon) {
  TestDaemon dead({"--segment-dir", segments_});
  TestDaemon live({"--segment-dir", segments_});
  const std::string dead_prefix = shm::segment_file_prefix(shm::instance_tag(dead.socket_path()));
  const std::string live_prefix = shm::segment_file_prefix(shm::instance_tag(live.socket_path()));
  {
    auto client = connect_to(dead);
    CreateOptions ring;
    ring.retention = Retention::kDropOldest;
    ring.ring_capacity = 256 << 10;
    auto a = client.create("dead-a").value();
    ASSERT_TRUE(a.append(std::string(100000, 'a')).ok());
    ASSERT_TRUE(a.close().ok());
    auto b = client.create("dead-b").value();
    ASSERT_TRUE(b.append(std::string(3 << 20, 'b')).ok());
    auto c = client.create("dead-c", ring).value();
    ASSERT_TRUE(c.append(std::string(1000, 'c')).ok());
    auto reader = client.open("dead-a").value();  // a reader page too
    dead.kill_without_restart();                  // SIGKILL: no goodbye, nothing cleaned
  }
  auto live_client = connect_to(live);
  for (const char* name : {"live-x", "live-y"}) {
    auto p = live_client.create(name).value();
    ASSERT_TRUE(p.append(std::string(5000, 'x')).ok());
    ASSERT_TRUE(p.close().ok());
  }
  const auto dead_files = files_with(segments_, dead_prefix);
  const auto live_files = files_with(segments_, live_prefix);
  ASSERT_GE(dead_files.size(), 7u);  // 3 segments, 3 tables, 1 reader page
  ASSERT_EQ(live_files.size(), 4u);

  // The dry run lists the three, each with its size, touches nothing, and names no live one.
  auto [status, listed] = run_cli(live, {"gc", "--dry-run", "--dir", segments_});
  ASSERT_EQ(status, 0) << listed;
  for (const char* name : {"\"dead-a\"", "\"dead-b\"", "\"dead-c\""}) {
    EXPECT_THAT(listed, HasSubstr(name)) << listed;
  }
  EXPECT_THAT(listed, HasSubstr("MiB"));  // dead-b: 3 MiB of data
  EXPECT_THAT(listed, Not(HasSubstr("live-")));
  EXPECT_THAT(listed, HasSubstr("would remove 3 "));
  EXPECT_THAT(listed, HasSubstr("2 segments served by live daemons"));
  EXPECT_EQ(files_with(segments_, dead_prefix), dead_files);

  // The real run removes exactly those: every file of the dead daemon, none of the live one's.
  std::tie(status, listed) = run_cli(live, {"gc", "--dir", segments_});
  ASSERT_EQ(status, 0) << listed;
  EXPECT_THAT(listed, HasSubstr("removed 3 "));
  EXPECT_TRUE(files_with(segments_, dead_prefix).empty());
  EXPECT_EQ(files_with(segments_, live_prefix), live_files);
  auto reader = live_client.open("live-y").value();
  char buf[8192];
  EXPECT_EQ(reader.read(std::as_writable_bytes(std::span(buf)), 5s).value(), 5000u);
  // Nothing more to do: a second run removes nothing.
  std::tie(status, listed) = run_cli(live, {"gc", "--dir", segments_});
  EXPECT_THAT(listed, HasSubstr("removed 0 "));
}

TEST_F(Reclaim, AStreamOfADeadDaemonComesBackIfItRestartsBeforeGc) {
  // gc is the operator's decision: until it runs, a daemon restarted on the socket adopts.
  TestDaemon daemon({"--segment-dir", segments_});
  {
    auto client = connect_to(daemon);
    auto p = client.create("s").value();
    ASSERT_TRUE(p.append("kept").ok());
    ASSERT_TRUE(p.close().ok());
  }
  daemon.crash_and_restart();
  auto client = connect_to(daemon);
  EXPECT_EQ(client.stat("s").value().bytes, 4u);
  // And served again, so gc leaves it alone.
  auto scan = find_leftovers(segments_).value();
  EXPECT_TRUE(scan.leftovers.empty());
  EXPECT_EQ(scan.served, 1u);
}

TEST_F(Reclaim, ABenchKilledMidwayLeavesNothingAfterGc) {
  if (!fs::exists(bin_dir() + "/shmstream-bench")) {
    GTEST_SKIP() << "no shmstream-bench in this build (the sanitizer builds make none)";
  }
  // The bench and its private daemon in a process group of their own, killed together with
  // SIGKILL once the bench has streams: nobody cleans up but gc.
  Child bench = Child::spawn({"/usr/bin/setsid", bin_dir() + "/shmstream-bench", "--quick",
                              "--scenario", "throughput", "--segment-dir", segments_},
                             false, true);
  ASSERT_TRUE(eventually(
      [&] {
        for (const auto& f : files_with(segments_, "shmstream.")) {
          if (f.find(".t") == std::string::npos) return true;
        }
        return false;
      },
      20s))
      << "the bench made no stream";
  ::kill(-bench.pid(), SIGKILL);
  bench.wait(10s);
  ASSERT_TRUE(eventually([&] {
    auto scan = find_leftovers(segments_);
    return scan.ok() && scan->served == 0;  // the daemon is gone too
  }));
  EXPECT_FALSE(files_with(segments_, "shmstream.").empty());  // what the kill left
  TestDaemon any;
  auto [status, out] = run_cli(any, {"gc", "--dir", segments_});
  EXPECT_EQ(status, 0) << out;
  EXPECT_TRUE(files_with(segments_, "shmstream.").empty()) << out;
}

// A daemon SIGKILLed at random points while a client creates, reads and removes streams as fast
// as it can: each file it makes appears only whole, and a removal unlinks the segment last, so
// its successors quarantine nothing of their own, and once the streams are removed nothing is
// left. (The kill point is random: the windows this closes were hit about once in a minute's
// soak with 10 daemon kills; 30 kills here land within a few hundred operations.)
TEST_F(Reclaim, ADaemonKilledMidCreateOrRemoveLeavesNothingToDoubt) {
  TestDaemon daemon({"--segment-dir", segments_});
  const std::string prefix = shm::segment_file_prefix(shm::instance_tag(daemon.socket_path()));
  std::mt19937 rng(std::random_device{}());
  for (int round = 0; round < 30; ++round) {
    std::atomic<int> done{0};
    std::atomic<bool> stop{false};
    std::thread churn([&] {
      auto client = connect_to(daemon);
      for (int i = 0; !stop.load(); ++i) {
        std::string name = "churn" + std::to_string(round) + "-" + std::to_string(i);
        auto producer = client.create(name);
        if (!producer.ok()) break;        // the daemon was killed
        auto reader = client.open(name);  // a reader page and a slot too
        if (!reader.ok() || !client.remove(name, i % 2 == 0).ok()) break;
        done.fetch_add(1);
      }
    });
    const int target = std::uniform_int_distribution<>(1, 12)(rng);
    const bool busy = eventually([&] { return done.load() >= target; });
    daemon.crash_and_restart();
    stop.store(true);
    churn.join();
    ASSERT_TRUE(busy) << "round " << round << ": the client made " << done.load() << " streams";
  }
  EXPECT_THAT(files_with(segments_, shm::kQuarantinePrefix), ::testing::IsEmpty());
  auto client = connect_to(daemon);
  for (const auto& s : client.list().value()) {
    Status removed = client.remove(s.name, true);
    EXPECT_TRUE(removed.ok() || removed.code() == ErrorCode::kNotFound) << removed.to_string();
  }
  EXPECT_TRUE(eventually([&] { return files_with(segments_, prefix).empty(); }))
      << ::testing::PrintToString(files_with(segments_, prefix));
  EXPECT_THAT(files_with(segments_, shm::kQuarantinePrefix), ::testing::IsEmpty());
}

}  // namespace
}  // namespace shmstream::test
