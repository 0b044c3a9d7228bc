// One producer process, eight `shmstream cat` reader processes over 256 MiB of random data:
// readers start before, during and after the writing; every reader's digest equals the input's.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

// A `shmstream cat` process whose stdout a thread drains into a digest.
struct CatReader {
  Child child;
  Digest digest;
  std::thread drain;

  CatReader(const TestDaemon& daemon, const std::string& name)
      : child(Child::spawn({bin_dir() + "/shmstream", "cat", name}, false, true, daemon.env())) {
    drain = std::thread([this] {
      std::vector<char> buf(1 << 20);
      ssize_t n;
      while ((n = ::read(child.stdout_fd(), buf.data(), buf.size())) > 0) {
        digest.update(buf.data(), static_cast<size_t>(n));
      }
    });
  }
  ~CatReader() {
    if (drain.joinable()) drain.join();
  }
};

uint64_t stream_bytes() {
  // SHMSTREAM_FANOUT_MIB may shrink the run for slow debugging builds; CI uses the default.
  const char* env = std::getenv("SHMSTREAM_FANOUT_MIB");
  return (env != nullptr ? std::strtoull(env, nullptr, 10) : 256) << 20;
}

TEST(Fanout, OneProducerEightReadersBeforeDuringAndAfterTheWriting) {
  TestDaemon daemon;
  const uint64_t kBytes = stream_bytes();
  const uint64_t kSeed = 0x5eed;
  const uint64_t expected = digest_of_random(kSeed, kBytes);

  auto client = connect_to(daemon);

  Child producer = Child::spawn({bin_dir() + "/producer_helper", daemon.socket_path(), "fan",
                                 std::to_string(kBytes), std::to_string(kSeed), "65536"},
                                true, true);
  ASSERT_EQ(producer.read_line(20s), "created");

  std::vector<std::unique_ptr<CatReader>> readers;
  for (int i = 0; i < 3; ++i) readers.push_back(std::make_unique<CatReader>(daemon, "fan"));
  // "Before" means attached before the first byte: wait until the daemon counts all three.
  ASSERT_TRUE(eventually([&] {
    auto info = client.stat("fan");
    return info.ok() && info->readers == 3;
  }));
  EXPECT_EQ(client.stat("fan")->bytes, 0u);

  ASSERT_EQ(write(producer.stdin_fd(), "\n", 1), 1);
  ASSERT_EQ(producer.read_line(120s), "half");
  for (int i = 0; i < 3; ++i) readers.push_back(std::make_unique<CatReader>(daemon, "fan"));
  ASSERT_EQ(producer.read_line(300s), "closed");
  int status = producer.wait(30s);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  for (int i = 0; i < 2; ++i) readers.push_back(std::make_unique<CatReader>(daemon, "fan"));

  ASSERT_EQ(readers.size(), 8u);
  for (size_t i = 0; i < readers.size(); ++i) {
    int rc = readers[i]->child.wait(300s);
    readers[i]->drain.join();
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << "reader " << i << " status " << rc;
    EXPECT_EQ(readers[i]->digest.bytes(), kBytes) << "reader " << i;
    EXPECT_EQ(readers[i]->digest.value(), expected) << "reader " << i;
  }
  ASSERT_TRUE(eventually([&] { return client.stat("fan")->readers == 0; }));
  ASSERT_TRUE(client.remove("fan").ok());
}

}  // namespace
}  // namespace shmstream::test
