// The control socket under abuse: garbage, truncated frames and silent half-messages cost only
// their own connection; the daemon keeps serving everyone else.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "proto/control.capnp.h"
#include "shmstream/client.hpp"
#include "support/harness.hpp"
#include "support/rpc_session.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

int raw_connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(ControlSocket, GarbageAndTruncatedMessagesLeaveTheDaemonServing) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  auto producer = client.create("survivor").value();
  ASSERT_TRUE(producer.append("before").ok());

  std::mt19937 rng(1);
  // 1. Random bytes.
  int garbage = raw_connect(daemon.socket_path());
  ASSERT_GE(garbage, 0);
  std::vector<unsigned char> noise(64 << 10);
  for (auto& b : noise) b = static_cast<unsigned char>(rng());
  (void)!write(garbage, noise.data(), noise.size());
  // 2. A frame header announcing one segment of 2^28 words, then a hang-up mid-message.
  int truncated = raw_connect(daemon.socket_path());
  ASSERT_GE(truncated, 0);
  uint32_t frame[2] = {0, 1u << 28};
  ASSERT_EQ(write(truncated, frame, sizeof(frame)), static_cast<ssize_t>(sizeof(frame)));
  close(truncated);
  // 3. Half a message, then silence, connection left open.
  int silent = raw_connect(daemon.socket_path());
  ASSERT_GE(silent, 0);
  uint32_t half[3] = {0, 100, 0};
  ASSERT_EQ(write(silent, half, sizeof(half)), static_cast<ssize_t>(sizeof(half)));
  // 4. A message too large for the daemon's limit (64 MiB announced and partly sent).
  int huge = raw_connect(daemon.socket_path());
  ASSERT_GE(huge, 0);
  uint32_t big[2] = {0, 8u << 20};
  ASSERT_EQ(write(huge, big, sizeof(big)), static_cast<ssize_t>(sizeof(big)));
  std::vector<char> zeros(1 << 20);
  (void)!write(huge, zeros.data(), zeros.size());

  // The daemon dropped the garbage connection: reading it reaches EOF (or a reset).
  char buf[64];
  ssize_t n;
  while ((n = read(garbage, buf, sizeof(buf))) > 0) {
  }
  EXPECT_LE(n, 0);
  close(garbage);

  EXPECT_TRUE(daemon.alive());
  // Everyone else is served: existing producer and a fresh client.
  ASSERT_TRUE(producer.append(" after").ok());
  ASSERT_TRUE(producer.close().ok());
  auto other = connect_to(daemon);
  auto streams = other.list();
  ASSERT_TRUE(streams.ok()) << streams.status().to_string();
  ASSERT_EQ(streams->size(), 1u);
  EXPECT_EQ((*streams)[0].bytes, 12u);
  auto reader = other.open("survivor").value();
  char got[32];
  EXPECT_EQ(std::string(got, reader.read(std::as_writable_bytes(std::span(got)), 1s).value()),
            "before after");
  close(silent);
  close(huge);
  reader.close();
  ASSERT_TRUE(other.remove("survivor").ok());
}

TEST(ControlSocket, ManyClientsComeAndGo) {
  TestDaemon daemon;
  for (int i = 0; i < 50; ++i) {
    auto client = connect_to(daemon);
    ASSERT_TRUE(client.list().ok());
  }
  EXPECT_TRUE(daemon.alive());
}

TEST(ControlSocket, CallsFailCleanlyWhenTheDaemonIsGone) {
  auto daemon = std::make_unique<TestDaemon>();
  auto client = connect_to(*daemon);
  auto producer = client.create("orphaned").value();
  ASSERT_TRUE(producer.append("data").ok());
  std::string socket = daemon->socket_path();
  ASSERT_TRUE(client.remove("orphaned").ok());
  daemon->stop();
  auto list = client.list();
  EXPECT_EQ(list.status().code(), ErrorCode::kUnavailable) << list.status().to_string();
  // The segment outlives the daemon: the producer keeps writing its mapping.
  EXPECT_TRUE(producer.append("more").ok());
  EXPECT_TRUE(producer.close().ok());
  ClientOptions options;
  options.socket_path = socket;
  options.autostart = false;
  auto again = Client::connect(options);
  EXPECT_EQ(again.status().code(), ErrorCode::kUnavailable);
  EXPECT_NE(again.status().message().find("autostart disabled"), std::string::npos);
}

// The bytes of an RPC session: bootstrap, then `calls` list() calls on it.
std::string list_calls(uint32_t calls) {
  RpcCall list{2, [](capnp::AnyPointer::Builder p) { p.initAs<proto::Control::ListParams>(); }};
  return rpc_session(std::vector<RpcCall>(calls, list));
}

size_t daemon_rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoul(line.substr(6));
  }
  return 0;
}

size_t fd_count(pid_t pid) {
  size_t n = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
    (void)entry;
    ++n;
  }
  return n;
}

// A client floods list() calls and never reads a reply. The daemon stops reading its requests
// once its replies back up (so its memory does not grow with them), keeps serving others, and
// drops the stalled client after --stall-limit-ms.
TEST(ControlSocket, AClientThatNeverReadsItsRepliesIsHeldBackThenDroppedAndCostsOthersNothing) {
  TestDaemon daemon({"--stall-limit-ms", "3000"});
  auto client = connect_to(daemon);
  // Replies worth their bytes: 40 streams to list.
  std::vector<Producer> producers;
  for (int i = 0; i < 40; ++i) {
    producers.push_back(client.create("stream-with-a-longish-name-" + std::to_string(i)).value());
  }
  ASSERT_TRUE(client.list().ok());
  size_t fds_before = fd_count(daemon.pid());
  size_t rss_before = daemon_rss_kib(daemon.pid());

  int flood = raw_connect(daemon.socket_path());
  ASSERT_GE(flood, 0);
  ASSERT_EQ(fcntl(flood, F_SETFL, O_NONBLOCK), 0);
  // 100,000 calls would bring ~1 GiB of replies; the daemon must stop taking them long before.
  std::string bytes = list_calls(100'000);
  size_t sent = 0;
  bool held_back = false;  // the daemon stopped reading our requests (and had not dropped us)
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (sent < bytes.size() && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = send(flood, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN) break;  // dropped already
    // Our send buffer is full: wait (bounded) for room; none coming means backpressure.
    pollfd p{flood, POLLOUT, 0};
    if (poll(&p, 1, 300) == 0) {
      held_back = true;
      break;
    }
  }
  EXPECT_TRUE(held_back) << "sent " << sent << " of " << bytes.size()
                         << " bytes of requests without the daemon holding them back ("
                         << std::strerror(errno) << ")";
  // Others are served meanwhile.
  EXPECT_TRUE(client.list().ok());
  {
    auto other = connect_to(daemon);
    EXPECT_TRUE(other.create("other").ok());
  }
  EXPECT_TRUE(client.remove("other").ok());
  // Its memory did not follow the flood (at most what was read before the backpressure).
  std::printf(
      "flood: the daemon took %zu of %zu request bytes, then held back; its RSS grew by "
      "%ld KiB\n",
      sent, bytes.size(),
      static_cast<long>(daemon_rss_kib(daemon.pid())) - static_cast<long>(rss_before));
  EXPECT_LT(daemon_rss_kib(daemon.pid()), rss_before + 64 * 1024)
      << "daemon RSS " << daemon_rss_kib(daemon.pid()) << " KiB, was " << rss_before;
  // After the stall limit, the flooding connection is dropped: the daemon holds the
  // descriptors it held before.
  EXPECT_TRUE(eventually([&] { return fd_count(daemon.pid()) == fds_before; }, 10s))
      << fd_count(daemon.pid()) << " fds, " << fds_before << " before";
  char buf[4096];
  ssize_t n = 0;
  do {
    n = recv(flood, buf, sizeof(buf), MSG_DONTWAIT);
  } while (n > 0);
  // The end of the stream, or a reset (the daemon closed with our requests unread).
  EXPECT_TRUE(n == 0 || errno == ECONNRESET) << std::strerror(errno);
  close(flood);
  EXPECT_TRUE(daemon.alive());
}

}  // namespace
}  // namespace shmstream::test
