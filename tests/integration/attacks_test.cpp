// Attacks by throwaway users on a daemon that serves everyone (socket mode 0666, as
// `shmstreamd --system` runs), issue 19: a user who tries to take all the memory (the per-user
// byte quota and the reserve), a file system filled to the last page (a 16 MiB tmpfs), and a
// --dir swapped for a symlink to a root-only directory while the daemon creates files in it
// (1,000 tries). Each is refused or survived with a clear error, no file of another user or of
// root changes, and the daemon serves a third user throughout. Needs root (skips, saying so).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"
#include "support/users.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class Attacks : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: it creates throwaway users";
    if (std::system("command -v useradd >/dev/null && command -v setpriv >/dev/null") != 0) {
      GTEST_SKIP() << "needs useradd and setpriv (packages passwd and util-linux)";
    }
    alice_ = std::make_unique<TempUser>("aa");
    bob_ = std::make_unique<TempUser>("ab");
    ASSERT_TRUE(alice_->ok() && bob_->ok()) << "useradd failed";
    char tmpl[] = "/tmp/shmstream-attacks-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(chmod(dir_.c_str(), 0711), 0);
    bin_ = dir_ + "/bin";
    fs::create_directory(bin_);
    fs::permissions(bin_, fs::perms(0755));
    for (const char* program : {"shmstream", "create_loop"}) {
      fs::copy_file(bin_dir() + "/" + program, bin_ + "/" + program);
    }
    segments_ = dir_ + "/segments";
    ASSERT_EQ(mkdir(segments_.c_str(), 01777), 0);
    ASSERT_EQ(chmod(segments_.c_str(), 01777), 0);
  }
  void TearDown() override {
    daemon_.reset();
    if (mounted_) umount2(segments_.c_str(), MNT_DETACH);
    if (!dir_.empty()) fs::remove_all(dir_);
    bob_.reset();
    alice_.reset();
  }

  void start_daemon(std::vector<std::string> args) {
    args.insert(args.end(), {"--socket-mode", "0666", "--segment-dir", segments_});
    daemon_ = std::make_unique<TestDaemon>(args);
    fs::permissions(daemon_->dir(), fs::perms(0711));
  }
  // Runs `shmstream ARGS` as `user`, stdin from `input` (a file; /dev/null if empty); returns
  // its wait status and what it wrote (stdout and stderr).
  std::pair<int, std::string> as(const TempUser& user, const std::string& args,
                                 const std::string& input = "") {
    std::string command = "exec 2>&1 < " + (input.empty() ? std::string("/dev/null") : input) +
                          "; " + bin_ + "/shmstream --no-autostart --socket " +
                          daemon_->socket_path() + " " + args;
    Child child = Child::spawn(
        {"/usr/bin/setpriv", "--reuid=" + std::to_string(user.uid()),
         "--regid=" + std::to_string(user.gid()), "--init-groups", "--", "/bin/sh", "-c", command},
        false, true);
    std::string out = read_all(child.stdout_fd());
    return {child.wait(60s), out};
  }
  // A file of `bytes` bytes anyone may read, for stdin.
  std::string input_of(uint64_t bytes) {
    std::string path = dir_ + "/input-" + std::to_string(bytes);
    std::ofstream(path) << std::string(bytes, 'i');
    fs::permissions(path, fs::perms(0644));
    return path;
  }
  // Bob, the third user, is served: he writes and reads back a stream of his.
  void third_user_is_served(const std::string& name) {
    auto [wrote, out] = as(*bob_, "write " + name, input_of(100000));
    EXPECT_EQ(wrote, 0) << out;
    auto [read, listed] = as(*bob_, "stat " + name);
    EXPECT_EQ(read, 0) << listed;
    EXPECT_THAT(listed, HasSubstr("100000"));
  }

  std::unique_ptr<TempUser> alice_, bob_;
  std::unique_ptr<TestDaemon> daemon_;
  std::string dir_, bin_, segments_;
  bool mounted_ = false;
};

// `shmstream daemon stop` from a user who is neither the daemon's nor root is refused, and the
// daemon serves on.
TEST_F(Attacks, OnlyTheDaemonsUserOrRootMayStopIt) {
  start_daemon({});
  auto [stopped, said] = as(*alice_, "daemon stop");
  EXPECT_TRUE(WIFEXITED(stopped) && WEXITSTATUS(stopped) == 1) << stopped << said;
  EXPECT_THAT(said, HasSubstr("only uid 0 (the daemon's user) or root may stop the daemon"));
  EXPECT_TRUE(daemon_->alive());
  third_user_is_served("after-stop");
}

TEST_F(Attacks, AUserCannotTakeMoreMemoryThanTheirQuota) {
  start_daemon({"--max-bytes-per-user", std::to_string(8 << 20)});
  // A ring larger than the quota: refused at once, saying why.
  auto [status, out] = as(*alice_, "write big --retention drop-oldest --capacity 16M");
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("quota of 8388608"));
  // A ring within it is fine; a second that would pass it is not.
  std::tie(status, out) = as(*alice_, "write r1 --retention drop-oldest --capacity 5M");
  EXPECT_EQ(status, 0) << out;
  std::tie(status, out) = as(*alice_, "write r2 --retention drop-oldest --capacity 5M");
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("--max-bytes-per-user"));
  // Removed but still held counts too: r1 removed, its memory is free only once released.
  std::tie(status, out) = as(*alice_, "rm r1");
  EXPECT_EQ(status, 0) << out;
  // An unbounded stream stops at the quota with an error, not at the file system's end.
  std::tie(status, out) = as(*alice_, "write grow", input_of(20 << 20));
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("beyond its maximum of 8388608"));
  third_user_is_served("bob-1");
  EXPECT_TRUE(daemon_->alive());
}

TEST_F(Attacks, AFullFileSystemIsAClearErrorAndTheDaemonServesOn) {
  if (mount("tmpfs", segments_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=1777") != 0) {
    GTEST_SKIP() << "cannot mount a 16 MiB tmpfs here: " << std::strerror(errno);
  }
  mounted_ = true;
  start_daemon({});  // the defaults: half the file system per user, 5% in reserve
  // Alice writes as much as she can: she gets her half, and a clear error at its end.
  auto [status, out] = as(*alice_, "write fill", input_of(32 << 20));
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("beyond its maximum of 83886"));  // half of 16 MiB, as statfs says
  std::tie(status, out) = as(*alice_, "write fill-more", input_of(1 << 20));
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("quota"));
  // The rest is Bob's to use.
  third_user_is_served("bob-1");
  // Now a root process fills the file system to the last page (root is not limited).
  std::string filler = segments_ + "/filler";
  int fd = ::open(filler.c_str(), O_CREAT | O_WRONLY, 0600);
  ASSERT_GE(fd, 0);
  for (off_t at = 0; fallocate(fd, 0, at, 64 << 10) == 0; at += 64 << 10) {
  }
  ::close(fd);
  // Bob's new stream is refused with the reason; the daemon lists, and serves reads.
  std::tie(status, out) = as(*bob_, "write bob-2", input_of(100000));
  EXPECT_NE(status, 0);
  EXPECT_THAT(out, HasSubstr("reserve"));
  std::tie(status, out) = as(*bob_, "cat bob-1 | wc -c");
  EXPECT_THAT(out, HasSubstr("100000"));
  std::tie(status, out) = as(*bob_, "ls");
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("bob-1"));
  // Space back: served again.
  ASSERT_EQ(unlink(filler.c_str()), 0);
  third_user_is_served("bob-3");
  EXPECT_TRUE(daemon_->alive());
}

TEST_F(Attacks, ADirSwappedForASymlinkWhileTheDaemonCreatesNeverReachesARootDirectory) {
  start_daemon({});
  // Alice's directory, and a root-only one she would like the daemon to write into.
  std::string home = dir_ + "/alice";
  ASSERT_EQ(mkdir(home.c_str(), 0755), 0);
  ASSERT_EQ(chown(home.c_str(), alice_->uid(), alice_->gid()), 0);
  std::string real = home + "/d";
  ASSERT_EQ(mkdir(real.c_str(), 0700), 0);
  ASSERT_EQ(chown(real.c_str(), alice_->uid(), alice_->gid()), 0);
  std::string root_only = dir_ + "/root-only";
  ASSERT_EQ(mkdir(root_only.c_str(), 0700), 0);
  std::string link = home + "/d.swap";
  ASSERT_EQ(symlink(root_only.c_str(), link.c_str()), 0);
  // The swapper: d is Alice's directory, then a symlink to root-only, then back, atomically.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> swaps{0};
  std::thread swapper([&] {
    while (!stop.load()) {
      if (renameat2(AT_FDCWD, real.c_str(), AT_FDCWD, link.c_str(), RENAME_EXCHANGE) == 0) {
        ++swaps;
      }
    }
  });
  // 1,000 creations racing it, as Alice.
  Child race = Child::spawn({"/usr/bin/setpriv", "--reuid=" + std::to_string(alice_->uid()),
                             "--regid=" + std::to_string(alice_->gid()), "--init-groups", "--",
                             bin_ + "/create_loop", daemon_->socket_path(), real, "1000"},
                            false, true);
  std::string out = read_all(race.stdout_fd());
  int status = race.wait(120s);
  stop = true;
  swapper.join();
  EXPECT_EQ(status, 0);
  // Each try was created in Alice's directory or refused with a reason; none reached root's.
  size_t created = 0;
  size_t refused = 0;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line == "CREATED") {
      ++created;
    } else if (line.find("symlink") != std::string::npos ||
               line.find("not owned by uid") != std::string::npos) {
      ++refused;
    } else {
      ADD_FAILURE() << "unexpected: " << line;
    }
  }
  std::printf("1000 tries: %zu created in Alice's directory, %zu refused, %llu swaps\n", created,
              refused, static_cast<unsigned long long>(swaps.load()));
  EXPECT_EQ(created + refused, 1000u) << out.substr(0, 2000);
  EXPECT_GT(created, 0u);
  EXPECT_GT(swaps.load(), 1000u);
  EXPECT_TRUE(fs::is_empty(root_only)) << "the daemon wrote into a root-only directory";
  // Every stream created has its files in Alice's directory, hers.
  size_t segments = 0;
  for (const std::string& dir : {real, link}) {
    struct stat st {};
    if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      std::string f = e.path().filename().string();
      if (f.rfind("shmstream.", 0) == 0 && f.find('.', 27) == std::string::npos) ++segments;
    }
  }
  EXPECT_EQ(segments, created);
  third_user_is_served("bob-1");
}

TEST_F(Attacks, ADirSwappedForASymlinkToAnotherUsersBeforeARestartTouchesNothingOfTheirs) {
  start_daemon({});
  // Alice and Bob each keep a persistent stream in a directory of their own.
  auto own_dir = [&](const TempUser& user, const std::string& name) {
    std::string parent = dir_ + "/" + name;
    EXPECT_EQ(mkdir(parent.c_str(), 0755), 0);
    EXPECT_EQ(chown(parent.c_str(), user.uid(), user.gid()), 0);
    std::string dir = parent + "/d";
    EXPECT_EQ(mkdir(dir.c_str(), 0700), 0);
    EXPECT_EQ(chown(dir.c_str(), user.uid(), user.gid()), 0);
    return dir;
  };
  std::string alices = own_dir(*alice_, "alice");
  std::string bobs = own_dir(*bob_, "bob");
  auto [status, out] = as(*alice_, "write a --dir " + alices, input_of(1000));
  ASSERT_EQ(status, 0) << out;
  std::tie(status, out) = as(*bob_, "write b --dir " + bobs, input_of(2000));
  ASSERT_EQ(status, 0) << out;
  auto listing = [](const std::string& dir) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) {
      struct stat st {};
      lstat(e.path().c_str(), &st);
      out.push_back(e.path().filename().string() + " " + std::to_string(st.st_size) + " " +
                    std::to_string(st.st_uid) + " " + std::to_string(st.st_mode));
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  const auto bobs_before = listing(bobs);
  // Alice swaps her directory for a symlink to Bob's, then to the segment directory, and waits
  // for restarts (done here as root on her behalf: she owns the parent, she could).
  for (const std::string& target : {bobs, segments_}) {
    daemon_->stop();
    ASSERT_EQ(rename(alices.c_str(), (alices + ".real").c_str()), 0);
    ASSERT_EQ(symlink(target.c_str(), alices.c_str()), 0);
    daemon_->start_again();
    EXPECT_EQ(listing(bobs), bobs_before);  // nothing of Bob's moved, changed or added
    std::tie(status, out) = as(*alice_, "stat a");
    EXPECT_NE(status, 0) << out;  // not adopted through the symlink
    std::tie(status, out) = as(*bob_, "stat b");
    EXPECT_THAT(out, HasSubstr("2000"));
    ASSERT_EQ(unlink(alices.c_str()), 0);
    ASSERT_EQ(rename((alices + ".real").c_str(), alices.c_str()), 0);
  }
  third_user_is_served("bob-1");
}

TEST_F(Attacks, StreamsOfTheSystemDaemonSurviveRemoveIpcWhenTheirOwnerLogsOut) {
  start_daemon({});
  auto [status, out] = as(*alice_, "write kept --mode everyone", input_of(100000));
  ASSERT_EQ(status, 0) << out;
  // What systemd-logind's RemoveIPC does when Alice's last session ends: every file of hers in
  // the shared-memory directory goes. The daemon keeps its in-memory streams' files as root.
  size_t removed = 0;
  for (const auto& e : fs::directory_iterator(segments_)) {
    struct stat st {};
    if (lstat(e.path().c_str(), &st) == 0 && st.st_uid == alice_->uid()) {
      removed += fs::remove(e.path()) ? 1 : 0;
    }
  }
  EXPECT_EQ(removed, 0u);
  daemon_->restart();  // and the stream is still there for a daemon that restarts
  std::tie(status, out) = as(*bob_, "cat kept | wc -c");
  EXPECT_THAT(out, HasSubstr("100000"));
}

}  // namespace
}  // namespace shmstream::test
