// Permissions with real users: a stream's mode decides who may open it, the daemon refuses the
// others, and the kernel refuses them too when they go around the daemon to the segment file.
// Also the system-wide daemon's start by systemd socket activation.
//
// The two-user tests need root (they create throwaway users, and the daemon must give each
// stream's files to its creator); elsewhere they skip, saying so.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"
#include "support/users.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

class Permissions : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_SKIP() << "needs root: it creates throwaway users, and the daemon must run as root "
                      "to give each stream's files to its creator";
    }
    if (std::system("command -v useradd >/dev/null && command -v setpriv >/dev/null") != 0) {
      GTEST_SKIP() << "needs useradd and setpriv (packages passwd and util-linux)";
    }
    alice_ = std::make_unique<TempUser>("a");
    bob_ = std::make_unique<TempUser>("b");
    ASSERT_TRUE(alice_->ok() && bob_->ok()) << "useradd failed";
    // Carol is in Alice's group.
    carol_ = std::make_unique<TempUser>("c", alice_->name());
    ASSERT_TRUE(carol_->ok()) << "useradd failed";
    daemon_ = std::make_unique<TestDaemon>(std::vector<std::string>{"--socket-mode", "0666"});
    // The test's directories and binary must be reachable by the other users.
    std::filesystem::permissions(daemon_->dir(), std::filesystem::perms(0711));
    cli_dir_ = daemon_->dir() + "/bin";
    std::filesystem::create_directory(cli_dir_);
    std::filesystem::permissions(cli_dir_, std::filesystem::perms(0755));
    std::filesystem::copy_file(bin_dir() + "/shmstream", cli_dir_ + "/shmstream");
  }
  void TearDown() override {
    if (daemon_) {
      auto client = connect_to(*daemon_);
      auto streams = client.list().value();
      for (const auto& s : streams) (void)client.remove(s.name, true);
    }
    daemon_.reset();
    carol_.reset();
    bob_.reset();
    alice_.reset();
  }

  // Runs the CLI as `user`; returns {wait status, stdout and stderr}.
  std::pair<int, std::string> cli_as(const TempUser& user, const std::vector<std::string>& args,
                                     const std::string& input = "") {
    std::string command = "exec setpriv --reuid=" + std::to_string(user.uid()) +
                          " --regid=" + std::to_string(user.gid()) + " --init-groups -- " +
                          cli_dir_ + "/shmstream --no-autostart --socket " + daemon_->socket_path();
    for (const auto& a : args) command += " " + a;
    Child child = Child::spawn({"/bin/sh", "-c", command + " 2>&1"}, !input.empty(), true);
    if (!input.empty()) {
      EXPECT_EQ(write(child.stdin_fd(), input.data(), input.size()),
                static_cast<ssize_t>(input.size()));
      child.close_stdin();
    }
    std::string out = read_all(child.stdout_fd());
    return {child.wait(30s), out};
  }

  // Opens `path` with `flags` as `user`, around the daemon; returns the errno (0 on success).
  static int open_as(const TempUser& user, const std::string& path, int flags) {
    pid_t pid = fork();
    if (pid == 0) {
      if (setgroups(0, nullptr) != 0 || setgid(user.gid()) != 0 || setuid(user.uid()) != 0) {
        _exit(255);
      }
      int fd = ::open(path.c_str(), flags | O_CLOEXEC);
      _exit(fd >= 0 ? 0 : errno);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  // The path of stream `name`'s segment file (its name ends in the stream id, in hex).
  std::string segment_of(const std::string& name) {
    auto info = connect_to(*daemon_).stat(name);
    EXPECT_TRUE(info.ok());
    char id[32];
    std::snprintf(id, sizeof(id), "%016llx", static_cast<unsigned long long>(info->stream_id));
    for (const auto& file : daemon_->segment_files()) {
      if (file.ends_with(id)) return std::string("/dev/shm/") + file;
    }
    return "";
  }

  std::unique_ptr<TempUser> alice_, bob_, carol_;
  std::unique_ptr<TestDaemon> daemon_;
  std::string cli_dir_;
};

TEST_F(Permissions, AnOwnerOnlyStreamIsRefusedToOthersByTheDaemonAndByTheKernel) {
  auto [w, wout] = cli_as(*alice_, {"write", "secret"}, "alice's data\n");
  ASSERT_TRUE(exited_with(w, 0)) << wout;

  // The owner reads it.
  auto [a, aout] = cli_as(*alice_, {"cat", "secret"});
  EXPECT_TRUE(exited_with(a, 0)) << aout;
  EXPECT_EQ(aout, "alice's data\n");

  // Another user is refused by the daemon, clearly, and is told who may read it.
  auto [b, bout] = cli_as(*bob_, {"cat", "secret"});
  EXPECT_FALSE(exited_with(b, 0));
  EXPECT_NE(bout.find("permission denied"), std::string::npos) << bout;
  EXPECT_EQ(bout.find("alice's data"), std::string::npos) << bout;

  // ... and by the kernel, going around the daemon: the files are 0600, in Alice's group, and
  // kept by the root daemon itself (systemd-logind's RemoveIPC removes a user's files in
  // /dev/shm when they log out; never root's). Alice's processes get descriptors, not names.
  std::string segment = segment_of("secret");
  ASSERT_FALSE(segment.empty());
  struct stat st {};
  ASSERT_EQ(::stat(segment.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, alice_->gid());
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // The reader table is the daemon's own (0600): the producer gets a read-only descriptor.
  ASSERT_EQ(::stat((segment + ".t").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, geteuid());
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(open_as(*bob_, segment, O_RDONLY), EACCES);
  EXPECT_EQ(open_as(*bob_, segment + ".t", O_RDONLY), EACCES);
  EXPECT_EQ(open_as(*alice_, segment + ".t", O_RDWR), EACCES);

  // Only the owner removes it; ls shows owner and mode to everyone.
  auto [ls, lsout] = cli_as(*bob_, {"ls"});
  EXPECT_TRUE(exited_with(ls, 0)) << lsout;
  EXPECT_NE(lsout.find(alice_->name()), std::string::npos) << lsout;
  EXPECT_NE(lsout.find("owner"), std::string::npos) << lsout;
  auto [brm, brmout] = cli_as(*bob_, {"rm", "secret"});
  EXPECT_FALSE(exited_with(brm, 0));
  EXPECT_NE(brmout.find("permission denied"), std::string::npos) << brmout;
  EXPECT_TRUE(connect_to(*daemon_).stat("secret").ok());
  auto [arm, armout] = cli_as(*alice_, {"rm", "secret"});
  EXPECT_TRUE(exited_with(arm, 0)) << armout;
  EXPECT_EQ(connect_to(*daemon_).stat("secret").status().code(), ErrorCode::kNotFound);
}

// Cursor theft: Bob's named cursor on Alice's `everyone` stream is Bob's. Carol may not read as
// it (it would move Bob's position and take his unconsumed bytes) nor remove it; Alice, the
// stream's owner, may remove it. And Bob's idle cursors cannot take every slot of the stream.
TEST_F(Permissions, ANamedCursorIsItsMakersAndNoOtherUserTakesEverySlot) {
  auto [w, wout] =
      cli_as(*alice_, {"write", "feed", "--mode", "everyone", "--max-readers", "4"}, "one\ntwo\n");
  ASSERT_TRUE(exited_with(w, 0)) << wout;
  auto [b, bout] = cli_as(*bob_, {"cat", "feed", "--cursor", "billing"});
  ASSERT_TRUE(exited_with(b, 0)) << bout;
  EXPECT_EQ(bout, "one\ntwo\n");
  auto [c, cout] = cli_as(*carol_, {"cat", "feed", "--cursor", "billing"});
  EXPECT_TRUE(exited_with(c, 1)) << cout;
  EXPECT_NE(cout.find("cursor \"billing\": permission denied: it belongs to uid " +
                      std::to_string(bob_->uid())),
            std::string::npos)
      << cout;
  auto [cr, crout] = cli_as(*carol_, {"rm", "feed", "--cursor", "billing"});
  EXPECT_FALSE(exited_with(cr, 0)) << crout;
  EXPECT_NE(crout.find("permission denied"), std::string::npos) << crout;
  // Bob's cursor still stands where he left it: at the end.
  auto client = connect_to(*daemon_);
  auto info = client.stat("feed").value();
  ASSERT_EQ(info.cursors.size(), 1u);
  EXPECT_EQ(info.cursors[0].position, info.bytes);
  // Half the slots are Bob's at most: his second idle cursor fills his share, a third is refused.
  auto [b2, b2out] = cli_as(*bob_, {"cat", "feed", "--cursor", "second"});
  ASSERT_TRUE(exited_with(b2, 0)) << b2out;
  auto [b3, b3out] = cli_as(*bob_, {"cat", "feed", "--cursor", "third"});
  EXPECT_TRUE(exited_with(b3, 1)) << b3out;
  EXPECT_NE(b3out.find("already holds 2 of its 4 reader slots"), std::string::npos) << b3out;
  // Others still read; the owner removes Bob's cursors from her stream.
  auto [c2, c2out] = cli_as(*carol_, {"cat", "feed"});
  EXPECT_TRUE(exited_with(c2, 0)) << c2out;
  for (const char* cursor : {"billing", "second"}) {
    auto [ar, arout] = cli_as(*alice_, {"rm", "feed", "--cursor", cursor});
    EXPECT_TRUE(exited_with(ar, 0)) << arout;
  }
  EXPECT_TRUE(client.stat("feed").value().cursors.empty());
}

TEST_F(Permissions, GroupAndEveryoneModesLetTheRightUsersReadOnly) {
  ASSERT_TRUE(exited_with(
      cli_as(*alice_, {"write", "team", "--mode", "group"}, "for the team\n").first, 0));
  ASSERT_TRUE(exited_with(
      cli_as(*alice_, {"write", "public", "--mode", "everyone"}, "for all\n").first, 0));

  // Group: Carol (a supplementary member of Alice's group) reads; Bob does not.
  auto [c, cout] = cli_as(*carol_, {"cat", "team"});
  EXPECT_TRUE(exited_with(c, 0)) << cout;
  EXPECT_EQ(cout, "for the team\n");
  auto [b, bout] = cli_as(*bob_, {"cat", "team"});
  EXPECT_FALSE(exited_with(b, 0));
  EXPECT_NE(bout.find("permission denied"), std::string::npos) << bout;
  std::string team = segment_of("team");
  struct stat st {};
  ASSERT_EQ(::stat(team.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  EXPECT_EQ(open_as(*bob_, team, O_RDONLY), EACCES);

  // Everyone: Bob reads, but read-only: neither the segment nor the reader table is writable.
  auto [p, pout] = cli_as(*bob_, {"cat", "public"});
  EXPECT_TRUE(exited_with(p, 0)) << pout;
  EXPECT_EQ(pout, "for all\n");
  std::string pub = segment_of("public");
  ASSERT_EQ(::stat(pub.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u);
  EXPECT_EQ(open_as(*bob_, pub, O_RDONLY), 0);
  EXPECT_EQ(open_as(*bob_, pub, O_RDWR), EACCES);
  EXPECT_EQ(open_as(*bob_, pub + ".t", O_RDWR), EACCES);

  auto info = connect_to(*daemon_).stat("public").value();
  EXPECT_EQ(info.mode, StreamMode::kEveryone);
  EXPECT_EQ(info.owner_uid, alice_->uid());
  EXPECT_EQ(info.owner_gid, alice_->gid());

  // After a daemon restart the files still say who may read: the adopted streams keep modes.
  daemon_->restart();
  EXPECT_EQ(connect_to(*daemon_).stat("team").value().mode, StreamMode::kGroup);
  EXPECT_FALSE(exited_with(cli_as(*bob_, {"cat", "team"}).first, 0));
  EXPECT_TRUE(exited_with(cli_as(*bob_, {"cat", "public"}).first, 0));
}

// systemd's socket activation: the daemon serves the listening socket it is handed as fd 3.
TEST(SocketActivation, TheDaemonServesTheSocketSystemdPassesIt) {
  std::string dir =
      std::filesystem::temp_directory_path() / ("shmstream-activation-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::string path = dir + "/control.sock";
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  // As systemd does: fd 3, LISTEN_FDS=1, LISTEN_PID = the daemon's own pid (the shell's, which
  // exec keeps).
  Child daemon = Child::spawn({"/bin/sh", "-c",
                               "LISTEN_PID=$$ LISTEN_FDS=1 exec " + bin_dir() +
                                   "/shmstreamd --foreground --log-level warn"},
                              false, false, {}, listener);
  close(listener);
  ClientOptions options;
  options.socket_path = path;
  options.autostart = false;
  auto client = Client::connect(options);
  ASSERT_TRUE(client.ok()) << client.status().message();
  auto producer = client->create("activated");
  ASSERT_TRUE(producer.ok()) << producer.status().message();
  ASSERT_TRUE(producer->append("x").ok());
  auto listed = client->list();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].name, "activated");
  ASSERT_TRUE(client->remove("activated", true).ok());
  daemon.kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(daemon.wait(30s)));
  // The socket is systemd's: the daemon leaves it for the next activation.
  EXPECT_TRUE(std::filesystem::exists(path));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace shmstream::test
