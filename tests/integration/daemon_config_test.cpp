// shmstreamd's configuration file and log: what it reads (and refuses to read), how the command
// line wins over it, the log reopened on SIGHUP and capped in size, and `stop`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

class DaemonConfig : public ::testing::Test {
 protected:
  std::string write_config(const std::string& text, mode_t mode = 0644) {
    std::string path = dir_ + "/shmstreamd.conf";
    fs::remove(path);
    std::ofstream(path) << text;
    chmod(path.c_str(), mode);
    return path;
  }
  // Runs shmstreamd in the foreground with `args` and a socket of its own, expecting it to
  // refuse to start; returns its exit status and what it said.
  std::pair<int, std::string> refused(std::vector<std::string> args) {
    std::vector<std::string> argv = {
        "/bin/sh",      "-c",       "exec \"$0\" \"$@\" 2>&1", bin_dir() + "/shmstreamd",
        "--foreground", "--socket", dir_ + "/refused.sock"};
    argv.insert(argv.end(), args.begin(), args.end());
    Child child = Child::spawn(argv, false, true);
    std::string out = read_all(child.stdout_fd());
    return {child.wait(30s), out};
  }

  TempDir temp_{"config"};
  const std::string dir_ = temp_.path();
};

// Options come from the file, the command line wins over it, and `daemon status` names it.
TEST_F(DaemonConfig, TheFileSetsOptionsAndTheCommandLineWins) {
  const std::string path = write_config(
      "# shmstreamd.conf\nmax-streams-per-user = 2\ndefault-max-readers = 5\n"
      "log-level = \"warn\"\n");
  TestDaemon daemon({"--config", path, "--default-max-readers", "9"});
  Client client = connect_to(daemon);
  auto info = client.daemon_info().value();
  EXPECT_EQ(info.config_file, path);
  EXPECT_EQ(info.max_streams_per_user, 2u);
  EXPECT_EQ(info.default_max_readers, 9u) << "the command line wins over the file";
  // The limit from the file holds.
  auto a = client.create("a").value();
  auto b = client.create("b").value();
  auto c = client.create("c");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), ErrorCode::kLimitExceeded) << c.status().to_string();
}

// What the daemon will not read: each refusal exits 2 naming the file and why.
TEST_F(DaemonConfig, AFileThatIsNotPlainlyTheUsersOwnIsRefused) {
  const std::string path = write_config("frobnicate = 1\n");
  auto [unknown, said_unknown] = refused({"--config", path});
  EXPECT_TRUE(WIFEXITED(unknown) && WEXITSTATUS(unknown) == 2) << said_unknown;
  EXPECT_THAT(said_unknown, HasSubstr("frobnicate"));

  write_config("max-streams-per-user = 2\n", 0664);
  auto [writable, said_writable] = refused({"--config", path});
  EXPECT_TRUE(WIFEXITED(writable) && WEXITSTATUS(writable) == 2) << said_writable;
  EXPECT_THAT(said_writable, HasSubstr("configuration file " + path +
                                       ": writable by its group or others (mode 0664)"));

  write_config("max-streams-per-user = 2\n");
  const std::string link = dir_ + "/link.conf";
  fs::create_symlink(path, link);
  auto [symlink, said_symlink] = refused({"--config", link});
  EXPECT_TRUE(WIFEXITED(symlink) && WEXITSTATUS(symlink) == 2) << said_symlink;
  EXPECT_THAT(said_symlink, HasSubstr("a symlink (refused, never followed)"));

  const std::string fifo = dir_ + "/fifo.conf";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto [not_file, said_not_file] = refused({"--config", fifo});
  EXPECT_TRUE(WIFEXITED(not_file) && WEXITSTATUS(not_file) == 2) << said_not_file;
  EXPECT_THAT(said_not_file, HasSubstr("not a regular file"));

  auto [missing, said_missing] = refused({"--config", dir_ + "/none.conf"});
  EXPECT_TRUE(WIFEXITED(missing) && WEXITSTATUS(missing) == 2) << said_missing;
  EXPECT_THAT(said_missing, HasSubstr("no such file"));

  auto [both, said_both] = refused({"--config", path, "--no-config"});
  EXPECT_TRUE(WIFEXITED(both) && WEXITSTATUS(both) == 2) << said_both;

  write_config("max-streams-per-user = many\n");
  auto [bad_value, said_bad_value] = refused({"--config", path});
  EXPECT_TRUE(WIFEXITED(bad_value) && WEXITSTATUS(bad_value) == 2) << said_bad_value;
  EXPECT_THAT(said_bad_value, HasSubstr("many"));
  EXPECT_THAT(said_bad_value, Not(HasSubstr("/proc/self/fd"))) << "name the file, not the fd";
}

// A background daemon's log: moved away and SIGHUP'd, it starts a new file; past its cap it
// becomes .log.1 and a new one starts. Client::stop_daemon() returns once the daemon exited.
TEST_F(DaemonConfig, TheLogIsReopenedOnHangupAndCapped) {
  const std::string socket = dir_ + "/ctl.sock";
  Child start = Child::spawn({bin_dir() + "/shmstreamd", "--socket", socket, "--no-config",
                              "--ephemeral", "--log-level", "debug", "--log-max-bytes", "4000"},
                             false, false);
  ASSERT_TRUE(WIFEXITED(start.wait(30s)));  // it forks, and returns once it listens
  ClientOptions options;
  options.socket_path = socket;
  options.autostart = false;
  Client client = Client::connect(options).value();
  const auto pid = static_cast<pid_t>(client.daemon_info().value().pid);
  const std::string log = socket + ".log";
  ASSERT_TRUE(fs::exists(log));

  // logrotate's way: move the file, then SIGHUP.
  fs::rename(log, log + ".moved");
  ASSERT_EQ(kill(pid, SIGHUP), 0);
  auto text_of = [](const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  EXPECT_TRUE(eventually([&] {
    return text_of(log).find("SIGHUP: log reopened") != std::string::npos;
  })) << "no new log after SIGHUP";

  // Each create and remove logs a line: past 4000 bytes, the log is cut.
  EXPECT_TRUE(eventually(
      [&] {
        for (int i = 0; i < 20; ++i) {
          EXPECT_TRUE(client.create("s" + std::to_string(i)).ok());
          EXPECT_TRUE(client.remove("s" + std::to_string(i)).ok());
        }
        return fs::exists(log + ".1");
      },
      30s))
      << "the log was never capped";
  EXPECT_THAT(text_of(log), HasSubstr("log capped at 4000 bytes"));
  EXPECT_GT(fs::file_size(log + ".1"), 4000u);

  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  ASSERT_GE(pidfd, 0);
  ASSERT_TRUE(client.stop_daemon(30s).ok());
  pollfd exited{pidfd, POLLIN, 0};
  EXPECT_EQ(poll(&exited, 1, 0), 1) << "stop_daemon() returned while the daemon ran";
  close(pidfd);
}

}  // namespace
}  // namespace shmstream::test
