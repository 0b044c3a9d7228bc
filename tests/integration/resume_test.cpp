// Resumable producers: a stream created with a resume grace stays open when its producer dies,
// its readers wait on, and a successor (Client::resume, `shmstream write --resume`) appends at
// its committed end; once the grace runs out it is aborted as any other.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

class Resume : public ::testing::Test {
 protected:
  Resume() : client_(connect_to(daemon_)) {}

  // `shmstream write NAME ARGS...` reading our pipe; returns once `first` is committed.
  Child writer(const std::string& name, std::vector<std::string> args, const std::string& first) {
    // No autostart: a daemon killed on purpose stays down until the test starts it again.
    std::vector<std::string> argv = {bin_dir() + "/shmstream", "--no-autostart", "write", name};
    argv.insert(argv.end(), args.begin(), args.end());
    Child child = Child::spawn(argv, true, false, daemon_.env());
    EXPECT_EQ(::write(child.stdin_fd(), first.data(), first.size()),
              static_cast<ssize_t>(first.size()));
    EXPECT_TRUE(eventually([&] {
      auto info = client_.stat(name);
      return info.ok() && info->bytes == first.size();
    }));
    return child;
  }

  std::string read_some(Reader& reader, Timeout timeout) {
    char buf[256];
    auto n = reader.read(std::as_writable_bytes(std::span(buf)), timeout);
    EXPECT_TRUE(n.ok()) << n.status().to_string();
    return n.ok() ? std::string(buf, *n) : "";
  }

  TestDaemon daemon_;
  Client client_;
};

TEST_F(Resume, ReadersWaitThroughAProducerDeathAndReadOnFromItsSuccessor) {
  Child first = writer("feed", {"--resume-grace", "60"}, "one\n");
  auto reader = client_.open("feed").value();
  EXPECT_EQ(read_some(reader, 10s), "one\n");
  auto busy = client_.resume("feed");
  ASSERT_EQ(busy.status().code(), ErrorCode::kBusy);
  EXPECT_NE(busy.status().message().find("still running"), std::string::npos);

  // A reader blocked for more bytes sleeps through the producer's death.
  Result<size_t> got = Status(ErrorCode::kInternal, "not run");
  char buf[64];
  std::thread blocked =
      blocked_thread([&] { got = reader.read(std::as_writable_bytes(std::span(buf)), 60s); });
  first.kill(SIGKILL);
  first.wait(10s);
  ASSERT_TRUE(eventually([&] { return client_.stat("feed").value().awaiting_producer; }));
  auto info = client_.stat("feed").value();
  EXPECT_EQ(info.state, StreamState::kOpen);
  EXPECT_EQ(info.resume_grace, 60s);
  auto [status, ls] = run_cli(daemon_, {"ls"});
  EXPECT_NE(ls.find("orphaned"), std::string::npos) << ls;

  auto successor = client_.resume("feed");
  ASSERT_TRUE(successor.ok()) << successor.status().to_string();
  EXPECT_EQ(successor->committed(), 4u);
  EXPECT_EQ(client_.resume("feed").status().code(), ErrorCode::kBusy);  // one producer at a time
  ASSERT_TRUE(successor->append("two\n").ok());
  blocked.join();
  ASSERT_TRUE(got.ok()) << got.status().to_string();  // not kProducerDied
  EXPECT_EQ(std::string(buf, *got), "two\n");
  info = client_.stat("feed").value();
  EXPECT_EQ(info.producer_pid, static_cast<uint32_t>(getpid()));
  EXPECT_FALSE(info.awaiting_producer);
  ASSERT_TRUE(successor->close().ok());
  auto end = reader.read(std::as_writable_bytes(std::span(buf)), 10s);
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(*end, 0u);  // the end, cleanly
}

TEST_F(Resume, WhenTheGraceRunsOutTheStreamAborts) {
  Child first = writer("short", {"--resume-grace", "0.2"}, "x");
  auto reader = client_.open("short").value();
  EXPECT_EQ(read_some(reader, 10s), "x");
  Status status;
  std::thread blocked = blocked_thread([&] {
    char buf[16];
    status = reader.read(std::as_writable_bytes(std::span(buf)), 60s).status();
  });
  first.kill(SIGKILL);
  blocked.join();
  EXPECT_EQ(status.code(), ErrorCode::kProducerDied) << status.to_string();
  EXPECT_NE(status.message().find("no successor resumed it within 200 ms"), std::string::npos)
      << status.message();
  EXPECT_EQ(client_.stat("short").value().state, StreamState::kAborted);
  auto late = client_.resume("short");
  EXPECT_EQ(late.status().code(), ErrorCode::kStreamClosed);
  EXPECT_NE(late.status().message().find("cannot resume it, it is aborted"), std::string::npos);
}

TEST_F(Resume, Refusals) {
  auto plain = client_.create("plain").value();
  auto refused = client_.resume("plain");
  EXPECT_EQ(refused.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("created without a resume grace"), std::string::npos);
  EXPECT_EQ(client_.resume("missing").status().code(), ErrorCode::kNotFound);
  EXPECT_EQ(client_.resume("bad/name").status().code(), ErrorCode::kInvalidArgument);
  CreateOptions long_grace;
  long_grace.resume_grace = 25h;
  auto too_long = client_.create("long", long_grace);
  EXPECT_EQ(too_long.status().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(too_long.status().message().find("resume grace"), std::string::npos);
  // A producer that closes or aborts itself leaves nothing to resume.
  CreateOptions graced;
  graced.resume_grace = 60s;
  auto closing = client_.create("closing", graced).value();
  ASSERT_TRUE(closing.abort().ok());
  EXPECT_EQ(client_.resume("closing").status().code(), ErrorCode::kStreamClosed);
  // Nor one whose producer dropped it without closing, while its process lives on.
  { auto dropped = client_.create("dropped", graced).value(); }
  EXPECT_EQ(client_.stat("dropped").value().state, StreamState::kAborted);
  EXPECT_EQ(client_.stat("dropped").value().abort_reason->kind, AbortKind::kNotClosed);
}

TEST_F(Resume, WriteResumeGoesOnWhereTheDeadWriterStopped) {
  Child first = writer("log", {"--resume-grace", "60"}, "a\n");
  first.kill(SIGKILL);
  first.wait(10s);
  ASSERT_TRUE(eventually([&] { return client_.stat("log").value().awaiting_producer; }));
  auto [status, out] = run_cli(daemon_, {"write", "log", "--resume"}, "b\n");
  EXPECT_EQ(exit_code(status), 0) << out;
  auto [cat_status, text] = run_cli(daemon_, {"cat", "log", "--no-follow"});
  EXPECT_EQ(text, "a\nb\n");
  EXPECT_EQ(client_.stat("log").value().state, StreamState::kClosed);
}

TEST_F(Resume, AcrossDaemonRestarts) {
  Child first = writer("kept", {"--resume-grace", "60"}, "1");
  // The producer dies while no daemon runs: the next one adopts the stream still open.
  daemon_.kill_without_restart();
  first.kill(SIGKILL);
  first.wait(10s);
  daemon_.start_again();
  ASSERT_TRUE(eventually([&] {
    auto info = client_.stat("kept");
    return info.ok() && info->awaiting_producer;
  }));
  auto successor = client_.resume("kept");
  ASSERT_TRUE(successor.ok()) << successor.status().to_string();
  ASSERT_TRUE(successor->append("2").ok());
  // A daemon restart with the successor producing: it reattaches as the stream's producer.
  daemon_.restart();
  ASSERT_TRUE(successor->append("3").ok());
  ASSERT_TRUE(eventually([&] {
    auto info = client_.stat("kept");
    return info.ok() && info->producer_pid == static_cast<uint32_t>(getpid());
  }));
  Status closed;
  ASSERT_TRUE(eventually([&] {
    closed = successor->close();  // kUnavailable until the client reconnected
    return closed.code() != ErrorCode::kUnavailable;
  }));
  EXPECT_TRUE(closed.ok()) << closed.to_string();
  auto [status, text] = run_cli(daemon_, {"cat", "kept", "--no-follow"});
  EXPECT_EQ(text, "123");
}

}  // namespace
}  // namespace shmstream::test
