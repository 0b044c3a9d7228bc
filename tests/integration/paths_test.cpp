// Attacks on the paths around the control socket (issue 19): lock and log symlinks planted
// where the daemon keeps them, a fifo in their place, socket directories that others own or may
// write, a symlinked socket directory, and a daemon of another user on a socket path. Each is
// refused with an error that says what and why; no file is changed and nothing hangs.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "shmstream/client.hpp"
#include "support/harness.hpp"
#include "support/users.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

// Runs `command` with /bin/sh; returns its wait status and its stdout and stderr.
std::pair<int, std::string> sh(const std::string& command) {
  Child child = Child::spawn({"/bin/sh", "-c", command + " 2>&1"}, false, true);
  std::string out = read_all(child.stdout_fd());
  return {child.wait(30s), out};
}

std::string contents(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class SocketPaths : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shmstream-paths-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    run_ = dir_ + "/run";
    ASSERT_EQ(mkdir(run_.c_str(), 0700), 0);
    socket_ = run_ + "/ctl.sock";
    victim_ = dir_ + "/victim";
    std::ofstream(victim_) << "secret\n";
    ASSERT_EQ(chmod(victim_.c_str(), 0600), 0);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // `shmstreamd` on our socket (in the foreground, or forking as clients start it).
  std::pair<int, std::string> daemon(bool foreground) {
    return sh(bin_dir() + "/shmstreamd " + (foreground ? "--foreground " : "") + "--socket " +
              socket_ + " --log-level warn");
  }
  // A client that would start a daemon on our socket if none answers.
  Result<Client> autostarting_client() {
    ClientOptions options;
    options.socket_path = socket_;
    options.daemon_path = bin_dir() + "/shmstreamd";
    return Client::connect(options);
  }

  std::string dir_, run_, socket_, victim_;
};

TEST_F(SocketPaths, APlantedLockSymlinkIsRefusedNotFollowed) {
  ASSERT_EQ(symlink(victim_.c_str(), (socket_ + ".lock").c_str()), 0);
  auto [status, out] = daemon(/*foreground=*/true);
  EXPECT_TRUE(exited_with(status, 1)) << out;
  EXPECT_THAT(out, HasSubstr(socket_ + ".lock"));
  EXPECT_THAT(out, HasSubstr("symlink: refused, never followed"));
  EXPECT_EQ(contents(victim_), "secret\n");  // not truncated, no pid written into it
  EXPECT_FALSE(std::filesystem::exists(socket_));
}

TEST_F(SocketPaths, APlantedLogSymlinkIsRefusedNotFollowed) {
  ASSERT_EQ(symlink(victim_.c_str(), (socket_ + ".log").c_str()), 0);
  auto [status, out] = daemon(/*foreground=*/false);
  EXPECT_TRUE(exited_with(status, 1)) << out;
  EXPECT_THAT(out, HasSubstr(socket_ + ".log"));
  EXPECT_THAT(out, HasSubstr("symlink: refused, never followed"));
  EXPECT_EQ(contents(victim_), "secret\n");        // no log appended to it
  EXPECT_FALSE(std::filesystem::exists(socket_));  // refused before it listened
  // And a client that autostarts passes the daemon's reason on instead of hanging.
  auto client = autostarting_client();
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), ErrorCode::kUnavailable) << client.status().message();
  EXPECT_EQ(contents(victim_), "secret\n");
}

TEST_F(SocketPaths, AFifoInPlaceOfTheLockOrLogDoesNotHangTheDaemon) {
  ASSERT_EQ(mkfifo((socket_ + ".log").c_str(), 0600), 0);
  auto [status, out] = daemon(/*foreground=*/false);  // sh() waits at most 30 s
  EXPECT_TRUE(exited_with(status, 1)) << out;
  EXPECT_THAT(out, HasSubstr("refusing " + socket_ + ".log: not a regular file"));
  ASSERT_EQ(unlink((socket_ + ".log").c_str()), 0);
  ASSERT_EQ(unlink((socket_ + ".lock").c_str()), 0);  // made before the log was refused
  ASSERT_EQ(mkfifo((socket_ + ".lock").c_str(), 0600), 0);
  std::tie(status, out) = daemon(/*foreground=*/true);
  EXPECT_TRUE(exited_with(status, 1)) << out;
  EXPECT_THAT(out, HasSubstr("refusing " + socket_ + ".lock: not a regular file"));
}

TEST_F(SocketPaths, ASocketDirectoryOthersMayWriteIsRefused) {
  ASSERT_EQ(chmod(run_.c_str(), 0777), 0);  // mkdir's mode is cut by the umask; chmod is not
  auto [status, out] = daemon(/*foreground=*/true);
  EXPECT_TRUE(exited_with(status, 1)) << out;
  EXPECT_THAT(out, HasSubstr("refusing socket directory " + run_ + ": mode 0777"));
  // A client does not start a daemon there either, and says why.
  auto client = autostarting_client();
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), ErrorCode::kPermissionDenied);
  EXPECT_THAT(client.status().message(), HasSubstr("writable by others"));
  EXPECT_TRUE(std::filesystem::is_empty(run_));  // no lock, log or socket made in it
}

TEST_F(SocketPaths, ASymlinkedSocketDirectoryIsRefusedNotFollowed) {
  std::string link = dir_ + "/link";
  ASSERT_EQ(symlink(run_.c_str(), link.c_str()), 0);
  socket_ = link + "/ctl.sock";
  auto [status, out] = daemon(/*foreground=*/true);
  EXPECT_TRUE(exited_with(status, 1)) << out;
  EXPECT_THAT(out, HasSubstr("never followed"));
  auto client = autostarting_client();
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), ErrorCode::kPermissionDenied);
  EXPECT_TRUE(std::filesystem::is_empty(run_));
}

// As root: directories and daemons of a throwaway user.
class SocketPathsOfOthers : public SocketPaths {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root: it creates a throwaway user";
    if (std::system("command -v useradd >/dev/null && command -v setpriv >/dev/null") != 0) {
      GTEST_SKIP() << "needs useradd and setpriv (packages passwd and util-linux)";
    }
    SocketPaths::SetUp();
    alice_ = std::make_unique<TempUser>("pa");
    bob_ = std::make_unique<TempUser>("pb");
    ASSERT_TRUE(alice_->ok() && bob_->ok()) << "useradd failed";
    // The users reach our directory and programs copied into it (the build tree may be closed).
    ASSERT_EQ(chmod(dir_.c_str(), 0711), 0);
    bin_ = dir_ + "/bin";
    std::filesystem::create_directory(bin_);
    std::filesystem::permissions(bin_, std::filesystem::perms(0755));
    for (const char* program : {"shmstream", "shmstreamd"}) {
      std::filesystem::copy_file(bin_dir() + "/" + program, bin_ + "/" + program);
    }
  }
  void TearDown() override {
    bob_.reset();
    alice_.reset();
    SocketPaths::TearDown();
  }
  std::string as(const TempUser& user) const {
    return "setpriv --reuid=" + std::to_string(user.uid()) +
           " --regid=" + std::to_string(user.gid()) + " --init-groups -- ";
  }

  std::unique_ptr<TempUser> alice_, bob_;
  std::string bin_;
};

// A directory squatted by another user (as /tmp/shmstream-0 would be for root, without
// XDG_RUNTIME_DIR): root neither starts a daemon there nor writes in it.
TEST_F(SocketPathsOfOthers, ASocketDirectoryOwnedByAnotherUserIsRefused) {
  ASSERT_EQ(chown(run_.c_str(), alice_->uid(), alice_->gid()), 0);
  auto [status, out] = daemon(/*foreground=*/true);
  EXPECT_TRUE(exited_with(status, 1)) << out;
  EXPECT_THAT(out, HasSubstr("owned by uid " + std::to_string(alice_->uid())));
  auto client = autostarting_client();
  ASSERT_FALSE(client.ok());
  EXPECT_EQ(client.status().code(), ErrorCode::kPermissionDenied);
  EXPECT_THAT(client.status().message(), HasSubstr("refusing socket directory " + run_));
  EXPECT_TRUE(std::filesystem::is_empty(run_));
}

// Another user's daemon on a socket path (a fake daemon, or a real one she started): clients of
// other users refuse it, naming it; its own user still uses it.
TEST_F(SocketPathsOfOthers, ADaemonOfAnotherUserIsRefusedByEveryoneElse) {
  ASSERT_EQ(chown(run_.c_str(), alice_->uid(), alice_->gid()), 0);
  ASSERT_EQ(chmod(run_.c_str(), 0755), 0);
  int ready[2];
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
  Child fake = Child::spawn(
      {"/bin/sh", "-c",
       "exec " + as(*alice_) + bin_ + "/shmstreamd --foreground --socket " + socket_ +
           " --socket-mode 0666 --persist-dir " + run_ + "/persist --ready-fd 3 --log-level warn"},
      false, false, {}, ready[1]);
  close(ready[1]);
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1) << "alice's daemon did not start";
  close(ready[0]);

  ClientOptions options;
  options.socket_path = socket_;
  options.autostart = false;
  auto root = Client::connect(options);
  ASSERT_FALSE(root.ok());
  EXPECT_EQ(root.status().code(), ErrorCode::kPermissionDenied);
  EXPECT_THAT(root.status().message(),
              HasSubstr("refusing the daemon at " + socket_ + ": it runs as uid " +
                        std::to_string(alice_->uid())));

  auto [b, bout] = sh(as(*bob_) + bin_ + "/shmstream --no-autostart --socket " + socket_ + " ls");
  EXPECT_FALSE(exited_with(b, 0)) << bout;
  EXPECT_THAT(bout, HasSubstr("refusing the daemon at " + socket_));

  auto [a, aout] = sh(as(*alice_) + bin_ + "/shmstream --no-autostart --socket " + socket_ + " ls");
  EXPECT_TRUE(exited_with(a, 0)) << aout;  // her own daemon

  fake.kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(fake.wait(30s)));
}

}  // namespace
}  // namespace shmstream::test
