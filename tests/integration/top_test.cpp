// `shmstream top`: one plain frame (--once), and the live view driven in a real terminal
// (tmux): a live stream's rate appears and `q` quits. The progress line of write and cat:
// drawn on a terminal, absent when stderr is a pipe.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <regex>

#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

constexpr const char* kTmux = "/usr/bin/tmux";

// A producer thread appending 64 KiB about every millisecond (load, not synchronization)
// until stopped, into a drop-oldest ring so that memory stays bounded.
class PacedProducer {
 public:
  PacedProducer(Client& client, const std::string& name) {
    CreateOptions options;
    options.retention = Retention::kDropOldest;
    options.ring_capacity = 4 << 20;
    producer_ = std::make_unique<Producer>(client.create(name, options).value());
    thread_ = std::thread([this] {
      std::vector<std::byte> chunk(64 << 10, std::byte{'x'});
      while (!stop_.load(std::memory_order_relaxed)) {
        if (!producer_->append(chunk).ok()) return;
        std::this_thread::sleep_for(1ms);
      }
    });
  }
  ~PacedProducer() {
    stop_.store(true, std::memory_order_relaxed);
    thread_.join();
    (void)producer_->close();
  }

 private:
  std::unique_ptr<Producer> producer_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The line of `out` that starts with `prefix`, or "".
std::string line_starting(const std::string& out, const std::string& prefix) {
  size_t at = out.find("\n" + prefix);
  if (at == std::string::npos)
    return out.rfind(prefix, 0) == 0 ? out.substr(0, out.find('\n')) : "";
  size_t end = out.find('\n', at + 1);
  return out.substr(at + 1, end == std::string::npos ? std::string::npos : end - at - 1);
}

// A rate that is not zero, e.g. "65.2 MB/s".
bool has_live_rate(const std::string& line) {
  static const std::regex kRate(R"(\b([0-9]+(\.[0-9])?) (kB|MB|GB)/s)");
  return std::regex_search(line, kRate);
}

TEST(Top, OnceShowsRatesReadersLagAndCursorsAsPlainText) {
  TestDaemon daemon;
  Client client = connect_to(daemon);
  PacedProducer producer(client, "live");
  auto reader = client.open("live").value();  // attached, reading nothing: it lags
  ASSERT_TRUE(reader.wait_for(1 << 20, 10s).ok());
  {
    OpenOptions options;
    options.cursor = "ingest";
    auto cursor_reader = client.open("live", options).value();  // leaves a cursor behind
  }
  auto [status, out] = run_cli(daemon, {"top", "--once", "--interval", "0.5"});
  ASSERT_EQ(status, 0) << out;
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << "escape codes in --once output";
  EXPECT_NE(out.find("shmstream top"), std::string::npos) << out;
  std::string stream = line_starting(out, "live ");
  ASSERT_FALSE(stream.empty()) << out;
  EXPECT_NE(stream.find("open"), std::string::npos) << stream;
  EXPECT_NE(stream.find("drop-oldest 4.0 MiB"), std::string::npos) << stream;
  EXPECT_TRUE(has_live_rate(stream)) << stream;
  EXPECT_NE(out.find("reader pid " + std::to_string(getpid())), std::string::npos) << out;
  EXPECT_NE(out.find("cursor \"ingest\""), std::string::npos) << out;
  EXPECT_NE(out.find("(no reader)"), std::string::npos) << out;
}

TEST(Top, JsonLinesAndPlainFramesWhenNotOnATerminal) {
  TestDaemon daemon;
  Client client = connect_to(daemon);
  PacedProducer producer(client, "live");
  auto reader = client.open("live").value();
  ASSERT_TRUE(reader.wait_for(1 << 20, 10s).ok());
  // --once --json: one JSON line, each stream with the keys of ls --json and its rate.
  auto [status, out] = run_cli(daemon, {"top", "--once", "--json", "--interval", "0.5"});
  ASSERT_EQ(status, 0) << out;
  ASSERT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  EXPECT_EQ(out.rfind("{\"time_unix_ns\":", 0), 0u) << out;
  EXPECT_NE(out.find(",\"streams\":[{\"name\":\"live\","), std::string::npos) << out;
  static const std::regex kRate(R"("rate_bytes_per_s":([0-9]+)\})");
  std::smatch rate;
  ASSERT_TRUE(std::regex_search(out, rate, kRate)) << out;
  EXPECT_GT(std::stoull(rate[1]), 0u) << out;
  // Without --once, into a pipe: plain frames one per interval, never an escape code (and
  // stdin at its end, /dev/null, does not stop it as `q` would).
  Child top = Child::spawn({bin_dir() + "/shmstream", "top", "--interval", "0.1"}, false, true,
                           daemon.env());
  std::string seen;
  int headers = 0;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (headers < 2 && std::chrono::steady_clock::now() < deadline) {
    std::string line = top.read_line(1s);
    if (line.rfind("shmstream top", 0) == 0) ++headers;
    seen += line + "\n";
  }
  EXPECT_EQ(headers, 2) << seen;
  EXPECT_EQ(top.wait(0ms), -1) << "top ended by itself";
  EXPECT_EQ(seen.find('\x1b'), std::string::npos) << "escape codes into a pipe";
  top.kill(SIGTERM);
  top.wait(10s);
}

// Runs `argv` (tmux) and returns its stdout; fails the test on a non-zero exit.
std::string run(const std::vector<std::string>& argv) {
  Child child = Child::spawn(argv, false, true);
  std::string out = read_all(child.stdout_fd());
  int status = child.wait(30s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << argv[1] << ": status " << status;
  return out;
}

// A private tmux server with one 160x40 session running `command` in a shell; `done()` waits
// for the command to end (it signals a tmux channel when it does; its screen stays).
class TmuxSession {
 public:
  TmuxSession(const TestDaemon& daemon, const std::string& command)
      : server_("shmstream-test-" + std::to_string(getpid())) {
    std::string env;
    for (const auto& e : daemon.env()) env += "export '" + e + "'; ";
    run({kTmux, "-L", server_, "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "160", "-y",
         "40",
         // After the command, signal "done" and keep the pane (and its screen) alive.
         env + command + "; " + kTmux + " -L " + server_ + " wait-for -S done; exec cat"});
  }
  ~TmuxSession() {
    Child kill = Child::spawn({kTmux, "-L", server_, "kill-server"}, false, false);
    kill.wait(10s);
  }
  std::string screen() { return run({kTmux, "-L", server_, "capture-pane", "-p", "-t", "t"}); }
  void keys(const std::string& keys) { run({kTmux, "-L", server_, "send-keys", "-t", "t", keys}); }
  // Whether the command ended within `timeout`.
  bool done(std::chrono::milliseconds timeout) {
    Child wait = Child::spawn({kTmux, "-L", server_, "wait-for", "done"}, false, false);
    int status = wait.wait(timeout);
    return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

 private:
  std::string server_;
};

TEST(Top, LiveInATerminalShowsTheRateAndQQuits) {
  if (access(kTmux, X_OK) != 0) GTEST_SKIP() << "tmux is not installed (deploy/setup installs it)";
  TestDaemon daemon;
  Client client = connect_to(daemon);
  PacedProducer producer(client, "camera");
  auto reader = client.open("camera").value();
  TmuxSession tmux(daemon, bin_dir() + "/shmstream top --interval 0.3");
  std::string screen;
  bool shown = eventually(
      [&] {
        screen = tmux.screen();
        return has_live_rate(line_starting(screen, "camera ")) &&
               screen.find("reader pid " + std::to_string(getpid())) != std::string::npos;
      },
      20s);
  ASSERT_TRUE(shown) << "no live rate for \"camera\" on the screen:\n" << screen;
  EXPECT_NE(screen.find("q quits"), std::string::npos) << screen;
  tmux.keys("q");
  EXPECT_TRUE(tmux.done(10s)) << "top did not exit on q; screen:\n" << tmux.screen();
}

TEST(Progress, DrawnOnATerminalSilentWhenPiped) {
  if (access(kTmux, X_OK) != 0) GTEST_SKIP() << "tmux is not installed (deploy/setup installs it)";
  TestDaemon daemon;
  std::string input = daemon.dir() + "/input";
  {
    std::ofstream file(input, std::ios::binary);
    std::string block(1 << 20, 'p');
    for (int i = 0; i < 64; ++i) file << block;
  }
  {  // write from a file, stderr on the terminal: "<name>: N of 64.0 MiB (100%) written, rate"
    TmuxSession tmux(daemon, bin_dir() + "/shmstream write big < " + input + " && " + bin_dir() +
                                 "/shmstream cat big > " + daemon.dir() + "/copy");
    ASSERT_TRUE(tmux.done(60s)) << tmux.screen();
    std::string screen = tmux.screen();
    EXPECT_NE(screen.find("big: 64.0 MiB of 64.0 MiB (100%) written"), std::string::npos) << screen;
    EXPECT_NE(screen.find("big: 64.0 MiB read"), std::string::npos) << screen;
  }
  // The same with stderr into a pipe: not a byte of progress.
  auto [status, out] = run_cli(daemon, {"cat", "big"}, "", 30s, /*with_stderr=*/true);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(out.size(), 64u << 20);
  EXPECT_EQ(out.find("read,"), std::string::npos);
  EXPECT_EQ(out.find('\r'), std::string::npos);
  auto [status2, out2] =
      run_cli(daemon, {"write", "big2"}, std::string(1 << 20, 'q'), 30s, /*with_stderr=*/true);
  EXPECT_EQ(status2, 0);
  EXPECT_EQ(out2, "");
}

}  // namespace
}  // namespace shmstream::test
