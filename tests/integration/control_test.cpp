// The control socket under abuse: garbage, truncated frames and silent half-messages cost only
// their own connection; the daemon keeps serving everyone else.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

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

}  // namespace
}  // namespace shmstream::test
