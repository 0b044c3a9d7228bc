// Soak: for SHMSTREAM_SOAK_SECONDS (off by default; deploy/soak and .ci/run set it), producer
// and reader processes come and go, some of them killed with SIGKILL at random, streams removed
// at random (some by force), and the daemon itself killed with SIGKILL and restarted every few
// seconds (the clients reconnect by themselves). At the end:
//   - every reader that finished saw a byte-exact stretch of what its producer committed (each
//     checks every byte it read, at its offset);
//   - the daemon is alive and answers;
//   - once all streams are removed, no segment file is left in /dev/shm and the daemon holds
//     exactly the descriptors it held before the soak.
#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::set<std::string> list_dir(const std::string& path) {
  std::set<std::string> names;
  if (DIR* dir = opendir(path.c_str())) {
    while (dirent* e = readdir(dir)) {
      if (e->d_name[0] != '.') names.insert(e->d_name);
    }
    closedir(dir);
  }
  return names;
}

size_t count_dir(const std::string& path) { return list_dir(path).size(); }

// What `after` holds that `before` did not, for the failure message.
std::string added(const std::set<std::string>& before, const std::set<std::string>& after) {
  std::string out;
  for (const auto& name : after) {
    if (before.count(name) == 0) out += " " + name;
  }
  return out;
}

struct Running {
  Child child;
  bool reader;
  std::string stream;
  bool killed = false;
};

struct Tally {
  int producers = 0, producers_closed = 0, producers_failed = 0;
  int readers = 0, readers_verified = 0, readers_unopened = 0;
  int killed = 0, removals = 0, forced_removals = 0, daemon_kills = 0;
  uint64_t bytes_verified = 0;
};

TEST(Soak, RandomKillsAndRemovalsCorruptNothingAndLeakNothing) {
  const char* env = std::getenv("SHMSTREAM_SOAK_SECONDS");
  if (env == nullptr || std::atoi(env) <= 0) {
    GTEST_SKIP() << "off by default: set SHMSTREAM_SOAK_SECONDS (deploy/soak does)";
  }
  const auto duration = std::chrono::seconds(std::atoi(env));
  TestDaemon daemon;
  auto client = connect_to(daemon);
  // The baseline, with our own client connected (it stays connected throughout).
  ASSERT_TRUE(client.list().ok());
  auto fd_dir = [&] { return "/proc/" + std::to_string(daemon.pid()) + "/fd"; };
  const std::set<std::string> shm_before = list_dir("/dev/shm");
  const size_t fds_before = count_dir(fd_dir());

  std::mt19937_64 rng(std::random_device{}());
  auto chance = [&](double p) { return std::uniform_real_distribution<>(0, 1)(rng) < p; };
  std::vector<Running> running;
  std::map<std::string, uint64_t> seeds;  // streams created (by name) and their data seeds
  Tally tally;
  int next_stream = 0;
  const std::string child_bin = bin_dir() + "/soak_child";

  // Reaps the children that exited, checking how.
  auto reap = [&]() {
    for (auto it = running.begin(); it != running.end();) {
      int status = it->child.wait(0ms);
      if (status == -1) {
        ++it;
        continue;
      }
      if (it->killed) {
        EXPECT_TRUE(WIFSIGNALED(status) || WIFEXITED(status));
      } else if (it->reader) {
        std::string line = it->child.read_line(1s);
        EXPECT_TRUE(WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 3))
            << "reader of " << it->stream << ": status " << status << ", " << line;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
          ++tally.readers_verified;
          if (line.rfind("verified ", 0) == 0) tally.bytes_verified += std::stoull(line.substr(9));
        } else {
          ++tally.readers_unopened;
        }
      } else {
        EXPECT_TRUE(WIFEXITED(status)) << "producer of " << it->stream << ": status " << status;
        (WIFEXITED(status) && WEXITSTATUS(status) == 0 ? tally.producers_closed
                                                       : tally.producers_failed)++;
      }
      it = running.erase(it);
    }
  };

  const auto end = Clock::now() + duration;
  auto last_daemon_kill = Clock::now();
  while (Clock::now() < end) {
    int producers = 0;
    for (const auto& r : running) producers += r.reader ? 0 : 1;
    if (producers < 4 && chance(0.3)) {
      std::string name = "soak" + std::to_string(next_stream++);
      uint64_t seed = rng();
      uint64_t bytes = std::uniform_int_distribution<uint64_t>(1, 32 << 20)(rng);
      uint64_t ring = chance(0.3) ? (64 << 10) << std::uniform_int_distribution<>(0, 4)(rng) : 0;
      seeds[name] = seed;
      running.push_back(
          {Child::spawn({child_bin, "produce", daemon.socket_path(), name, std::to_string(seed),
                         std::to_string(bytes), std::to_string(ring)},
                        false, false),
           false, name});
      ++tally.producers;
    }
    if (running.size() < 16 && !seeds.empty() && chance(0.5)) {
      auto pick = seeds.begin();
      std::advance(pick, std::uniform_int_distribution<size_t>(0, seeds.size() - 1)(rng));
      running.push_back({Child::spawn({child_bin, "read", daemon.socket_path(), pick->first,
                                       std::to_string(pick->second)},
                                      false, true),
                         true, pick->first});
      ++tally.readers;
    }
    if (!running.empty() && chance(0.1)) {
      auto& victim = running[std::uniform_int_distribution<size_t>(0, running.size() - 1)(rng)];
      if (!victim.killed) {
        victim.child.kill(SIGKILL);
        victim.killed = true;
        ++tally.killed;
      }
    }
    if (seeds.size() > 12 || (!seeds.empty() && chance(0.05))) {
      auto pick = seeds.begin();
      std::advance(pick, std::uniform_int_distribution<size_t>(0, seeds.size() - 1)(rng));
      bool force = chance(0.5);
      Status s = client.remove(pick->first, force);
      // (Unavailable: the daemon is restarting, and our client reconnecting.)
      EXPECT_TRUE(s.ok() || s.code() == ErrorCode::kNotFound || s.code() == ErrorCode::kUnavailable)
          << s.to_string();
      if (s.ok()) (force ? tally.forced_removals : tally.removals)++;
      seeds.erase(pick);
    }
    if (Clock::now() - last_daemon_kill > 5s && chance(0.05)) {
      daemon.crash_and_restart();
      last_daemon_kill = Clock::now();
      ++tally.daemon_kills;
    }
    // Paced by the children: wait (briefly) for any of them to exit.
    std::vector<pollfd> fds;
    for (const auto& r : running) fds.push_back({r.child.pidfd(), POLLIN, 0});
    poll(fds.data(), fds.size(), 20);
    reap();
  }

  // The end: everything still running is killed; every stream removed.
  for (auto& r : running) {
    r.child.kill(SIGKILL);
    r.killed = true;
    ++tally.killed;
  }
  EXPECT_TRUE(eventually(
      [&] {
        reap();
        return running.empty();
      },
      30s));
  ASSERT_TRUE(daemon.alive());
  ASSERT_TRUE(eventually([&] { return client.list().ok(); }, 30s));  // reconnected
  auto left = client.list().value();
  for (const auto& s : left) {
    Status removed = client.remove(s.name, true);
    EXPECT_TRUE(removed.ok() || removed.code() == ErrorCode::kNotFound) << removed.to_string();
  }
  EXPECT_TRUE(eventually([&] { return client.list().value().empty(); }, 30s));
  EXPECT_TRUE(eventually([&] { return daemon.segment_files().empty(); }, 30s))
      << daemon.segment_files().size() << " segment files left";
  EXPECT_TRUE(eventually([&] { return list_dir("/dev/shm") == shm_before; }, 30s))
      << "left in /dev/shm:" << added(shm_before, list_dir("/dev/shm"));
  // (A restarted daemon holds the same ones: socket, lock, directories, our connection.)
  EXPECT_TRUE(eventually([&] { return count_dir(fd_dir()) == fds_before; }, 30s))
      << "the daemon holds " << count_dir(fd_dir()) << " descriptors, " << fds_before << " before";
  EXPECT_GT(tally.readers_verified, 0);
  std::printf(
      "soak: %lld s; producers %d (closed %d, failed or cancelled %d); readers %d (verified %d, "
      "%.1f MiB checked; stream gone before opening %d); SIGKILLs %d (and %d of the daemon); "
      "removals %d + %d forced\n",
      static_cast<long long>(duration.count()), tally.producers, tally.producers_closed,
      tally.producers_failed, tally.readers, tally.readers_verified,
      static_cast<double>(tally.bytes_verified) / (1 << 20), tally.readers_unopened, tally.killed,
      tally.daemon_kills, tally.removals, tally.forced_removals);
}

}  // namespace
}  // namespace shmstream::test
