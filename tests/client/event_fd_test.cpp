// Reader::event_fd(): a reader waits inside an event loop (poll/epoll) instead of a blocked
// thread, and the loop hears of bytes, the end, errors and close(); the Boost.Asio example.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "shm/futex_ring.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

// Whether `fd` polls readable within `timeout`.
bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 && (p.revents & POLLIN) != 0;
}

// Whether this kernel has io_uring futex waits (the library's first choice).
bool kernel_has_ring_waits() {
  int efd = ::eventfd(0, EFD_CLOEXEC);
  bool ok = shm::FutexRing::create(efd).ok();
  ::close(efd);
  return ok;
}

// Every test runs on both kinds of descriptor: the io_uring futex wait (where the kernel has
// it) and the relay thread.
class EventFd : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "io_uring" && !kernel_has_ring_waits()) {
      GTEST_SKIP() << "this kernel has no io_uring futex waits";
    }
    ::setenv("SHMSTREAM_EVENT_FD", GetParam().c_str(), 1);
  }
  void TearDown() override { ::unsetenv("SHMSTREAM_EVENT_FD"); }
};
INSTANTIATE_TEST_SUITE_P(Kinds, EventFd, ::testing::Values("io_uring", "relay"),
                         [](const auto& info) {
                           return info.param == "io_uring" ? "IoUring" : "Relay";
                         });

// This process's threads.
size_t threads() {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator("/proc/self/task"),
                                           std::filesystem::directory_iterator()));
}

// The descriptor is an eventfd either way (a loop may read its counter); where the kernel has
// io_uring futex waits no relay thread is started for it.
TEST(EventFdKind, NoRelayThreadWhereTheKernelHasFutexWaits) {
  TestDaemon daemon;
  Client client = connect_to(daemon);
  auto producer = client.create("kind").value();
  ::unsetenv("SHMSTREAM_EVENT_FD");
  auto reader = client.open("kind").value();
  size_t before = threads();
  int fd = reader.event_fd().value();
  EXPECT_EQ(threads(), before + (kernel_has_ring_waits() ? 0 : 1));
  ::setenv("SHMSTREAM_EVENT_FD", "relay", 1);
  auto relayed = client.open("kind").value();
  before = threads();
  int relayed_fd = relayed.event_fd().value();
  EXPECT_EQ(threads(), before + 1);
  ::unsetenv("SHMSTREAM_EVENT_FD");
  for (int descriptor : {fd, relayed_fd}) {
    char target[64] = {};
    ASSERT_GT(::readlink(("/proc/self/fd/" + std::to_string(descriptor)).c_str(), target,
                         sizeof target - 1),
              0);
    EXPECT_STREQ(target, "anon_inode:[eventfd]");
  }
  // Either way a byte wakes the descriptor, and reading its counter is allowed.
  ASSERT_TRUE(producer.append("x").ok());
  for (int descriptor : {fd, relayed_fd}) {
    ASSERT_TRUE(readable(descriptor, 10s));
    uint64_t count = 0;
    EXPECT_EQ(::read(descriptor, &count, sizeof count), 8);
    EXPECT_GE(count, 1u);
  }
  EXPECT_EQ(reader.next(16, Timeout::zero()).value().size(), 1u);
  EXPECT_EQ(relayed.next(16, Timeout::zero()).value().size(), 1u);
}

// Reads nothing (kTimeout, which re-arms), then the descriptor is quiet. A wake-up that was
// already on its way may make it readable once more (spurious: the read that finds nothing
// re-arms it again).
void expect_quiet(Reader& reader, int fd) {
  EXPECT_EQ(reader.next(16, Timeout::zero()).status().code(), ErrorCode::kTimeout);
  for (int spurious = 0; spurious < 3 && readable(fd, 20ms); ++spurious) {
    EXPECT_EQ(reader.next(16, Timeout::zero()).status().code(), ErrorCode::kTimeout);
  }
  EXPECT_FALSE(readable(fd, 0ms));
}

// A daemon, a stream of it and a reader of it followed through its descriptor.
struct Watched {
  explicit Watched(const std::string& name)
      : client(connect_to(daemon)),
        producer(client.create(name).value()),
        reader(client.open(name).value()),
        fd(reader.event_fd().value()) {}
  TestDaemon daemon;
  Client client;
  Producer producer;
  Reader reader;
  int fd;
};

// Appends `text`, waits for the descriptor, and reads it back whole.
void append_and_take(Producer& producer, Reader& reader, int fd, std::string_view text) {
  ASSERT_TRUE(producer.append(text).ok());
  ASSERT_TRUE(readable(fd, 10s));
  EXPECT_EQ(reader.next(64, Timeout::zero()).value().size(), text.size());
}

// A Reader handed to another thread (the loop moved): the io_uring wait queued by the first
// thread still completes (its task work runs there), and the new thread's waits work.
TEST_P(EventFd, AReaderMovedToAnotherThreadKeepsItsDescriptorWorking) {
  Watched w("moved");
  auto& [daemon, client, producer, reader, fd] = w;
  append_and_take(producer, reader, fd, "one");
  std::thread other([&] {
    append_and_take(producer, reader, fd, "two!");
    expect_quiet(reader, fd);
  });
  other.join();
  expect_quiet(reader, fd);
  append_and_take(producer, reader, fd, "three");
  expect_quiet(reader, fd);
}

// A reader that polls with zero timeouts without ever waiting on the descriptor re-arms it at
// every read: the kernel keeps one queued wait, not one per re-arm, and the descriptor is still
// right afterwards.
TEST_P(EventFd, RearmingWithoutWaitingKeepsOneWaitQueued) {
  Watched w("poller");
  auto& [daemon, client, producer, reader, fd] = w;
  for (int i = 0; i < 20000; ++i) {
    ASSERT_EQ(reader.next(16, Timeout::zero()).status().code(), ErrorCode::kTimeout);
  }
  EXPECT_FALSE(readable(fd, 0ms));
  if (GetParam() == "io_uring") {
    // The ring's submission count (SqTail in its fdinfo): the first wait and no other.
    long submitted = -1;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      if (std::filesystem::read_symlink(entry.path(), ec).string() != "anon_inode:[io_uring]")
        continue;
      std::ifstream info("/proc/self/fdinfo/" + entry.path().filename().string());
      std::string line;
      while (std::getline(info, line)) {
        if (line.rfind("SqTail:", 0) == 0) submitted = std::stol(line.substr(7));
      }
    }
    EXPECT_GE(submitted, 1);
    EXPECT_LE(submitted, 2) << "a wait queued per re-arm";
  }
  append_and_take(producer, reader, fd, "late");
  expect_quiet(reader, fd);
}

TEST_P(EventFd, ReadableExactlyWhenAReadNeedNotWait) {
  Watched w("loop");
  auto& [daemon, client, producer, reader, fd] = w;
  EXPECT_EQ(reader.event_fd().value(), fd);  // one descriptor per reader
  EXPECT_FALSE(readable(fd, 0ms));
  std::string got;
  for (int round = 0; round < 200; ++round) {
    std::string message = "message " + std::to_string(round) + ";";
    ASSERT_TRUE(producer.append(message).ok());
    ASSERT_TRUE(readable(fd, 10s)) << "round " << round;
    // Read a little at a time: the descriptor stays readable while bytes remain.
    for (;;) {
      auto v = reader.next(3, Timeout::zero());
      if (!v.ok()) {
        ASSERT_EQ(v.status().code(), ErrorCode::kTimeout) << v.status().to_string();
        break;
      }
      got.append(reinterpret_cast<const char*>(v->data()), v->size());
      if (reader.position() < producer.committed()) {
        ASSERT_TRUE(readable(fd, 0ms));
      }
    }
    ASSERT_FALSE(readable(fd, 0ms)) << "round " << round << ": readable with nothing to read";
  }
  std::string want;
  for (int round = 0; round < 200; ++round) want += "message " + std::to_string(round) + ";";
  EXPECT_EQ(got, want);
  // The clean end wakes the loop too, and a read then sees it.
  ASSERT_TRUE(producer.close().ok());
  ASSERT_TRUE(readable(fd, 10s));
  EXPECT_EQ(reader.next(16, Timeout::zero()).value().size(), 0u);
  EXPECT_TRUE(client.remove("loop").ok());
}

TEST_P(EventFd, OneEpollThreadFollowsManyStreams) {
  TestDaemon daemon;
  Client client = connect_to(daemon);
  constexpr int kStreams = 8;
  constexpr uint64_t kBytes = 1 << 20;
  // The producers are other processes, each writing kBytes of seeded random bytes.
  std::vector<Child> producers;
  std::vector<Reader> readers;
  for (int i = 0; i < kStreams; ++i) {
    std::string name = "many-" + std::to_string(i);
    producers.push_back(Child::spawn({bin_dir() + "/producer_helper", daemon.socket_path(), name,
                                      std::to_string(kBytes), std::to_string(100 + i), "4096"},
                                     true, true));
    ASSERT_TRUE(producers.back().wait_for_line("created", 10s));
    readers.push_back(client.open(name).value());
  }
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  ASSERT_GE(epoll_fd, 0);
  for (int i = 0; i < kStreams; ++i) {
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u32 = static_cast<uint32_t>(i);
    ASSERT_EQ(epoll_ctl(epoll_fd, EPOLL_CTL_ADD, readers[i].event_fd().value(), &event), 0);
  }
  for (auto& p : producers) ASSERT_EQ(::write(p.stdin_fd(), "go\n", 3), 3);
  std::vector<Digest> digests(kStreams);
  int ended = 0;
  int wakeups = 0;
  while (ended < kStreams) {
    epoll_event events[kStreams];
    int n = epoll_wait(epoll_fd, events, kStreams, 30000);
    // The io_uring descriptor's completion interrupts this thread's epoll_wait (EINTR) before
    // it is reported, as a signal would; a loop retries.
    if (n < 0 && errno == EINTR) continue;
    ASSERT_GT(n, 0) << "no stream became readable within 30 s; " << ended << " ended";
    ++wakeups;
    for (int e = 0; e < n; ++e) {
      int i = static_cast<int>(events[e].data.u32);
      for (;;) {
        auto v = readers[i].next(1 << 16, Timeout::zero());
        if (!v.ok()) {
          ASSERT_EQ(v.status().code(), ErrorCode::kTimeout) << v.status().to_string();
          break;
        }
        if (v->empty()) {  // the clean end: stop watching it
          ASSERT_EQ(epoll_ctl(epoll_fd, EPOLL_CTL_DEL, readers[i].event_fd().value(), nullptr), 0);
          ++ended;
          break;
        }
        digests[i].update(v->data(), v->size());
      }
    }
  }
  ::close(epoll_fd);
  for (int i = 0; i < kStreams; ++i) {
    EXPECT_EQ(digests[i].bytes(), kBytes) << "stream " << i;
    EXPECT_EQ(digests[i].value(), digest_of_random(100 + i, kBytes)) << "stream " << i;
    EXPECT_EQ(producers[i].wait(10s), 0);
  }
  std::printf("%d streams x 1 MiB through one epoll thread: %d wake-ups\n", kStreams, wakeups);
  for (int i = 0; i < kStreams; ++i) (void)client.remove("many-" + std::to_string(i));
}

TEST_P(EventFd, TheLoopHearsOfAProducerDeathAForcedRemovalAndClose) {
  TestDaemon daemon;
  Client client = connect_to(daemon);
  // A producer process killed mid-stream.
  Child producer = Child::spawn({bin_dir() + "/producer_helper", daemon.socket_path(), "dies",
                                 "1000000000", "7", "4096", "hold"},
                                true, true);
  ASSERT_TRUE(producer.wait_for_line("created", 10s));
  auto reader = client.open("dies").value();
  int fd = reader.event_fd().value();
  ASSERT_FALSE(readable(fd, 0ms));
  producer.kill(SIGKILL);
  ASSERT_TRUE(readable(fd, 10s)) << "a producer's death did not wake the loop";
  auto v = reader.next(16, Timeout::zero());
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), ErrorCode::kProducerDied) << v.status().to_string();

  // A forced removal.
  auto live = client.create("removed").value();
  auto reader2 = client.open("removed").value();
  int fd2 = reader2.event_fd().value();
  ASSERT_FALSE(readable(fd2, 0ms));
  ASSERT_TRUE(client.remove("removed", /*force=*/true).ok());
  ASSERT_TRUE(readable(fd2, 10s)) << "a forced removal did not wake the loop";
  EXPECT_EQ(reader2.next(16, Timeout::zero()).status().code(), ErrorCode::kCancelled);

  // close() from another thread.
  auto producer3 = client.create("closed").value();
  auto reader3 = client.open("closed").value();
  int fd3 = reader3.event_fd().value();
  ASSERT_FALSE(readable(fd3, 0ms));
  std::thread closer([&] { reader3.close(); });
  ASSERT_TRUE(readable(fd3, 10s)) << "close() did not wake the loop";
  closer.join();
  EXPECT_EQ(reader3.next(16, Timeout::zero()).status().code(), ErrorCode::kInterrupted);
  ASSERT_TRUE(producer3.close().ok());
  (void)client.remove("dies", true);
  (void)client.remove("closed", true);
}

// A block ring's producer waits for its slowest reader: one that waits in an event loop must
// publish how far it got before it waits there, or both wait for ever.
TEST_P(EventFd, ABlockRingProducerIsNotHeldBackByALoopReader) {
  TestDaemon daemon;
  Client client = connect_to(daemon);
  CreateOptions options;
  options.retention = Retention::kBlock;
  options.ring_capacity = 64 << 10;
  auto producer = client.create("block-loop", options).value();
  auto reader = client.open("block-loop").value();
  int fd = reader.event_fd().value();
  constexpr uint64_t kBytes = 16 << 20;  // 256 times the ring
  std::thread writer([&] {
    // Whole-ring appends: each needs the reader to have published every byte it read.
    std::vector<std::byte> chunk(64 << 10);
    for (uint64_t off = 0; off < kBytes; off += chunk.size()) {
      fill_random(5, off, chunk.data(), chunk.size());
      Status s = producer.append(chunk, 30s);
      if (!s.ok()) {
        ADD_FAILURE() << s.to_string();
        break;
      }
    }
    (void)producer.close();
  });
  Digest digest;
  bool done = false;
  while (!done) {
    ASSERT_TRUE(readable(fd, 30s)) << "stuck at " << reader.position();
    for (;;) {
      auto v = reader.next(1000, Timeout::zero());  // lazily published: 4 KiB steps
      if (!v.ok()) {
        ASSERT_EQ(v.status().code(), ErrorCode::kTimeout) << v.status().to_string();
        break;
      }
      if (v->empty()) {
        done = true;
        break;
      }
      digest.update(v->data(), v->size());
    }
  }
  writer.join();
  EXPECT_EQ(digest.bytes(), kBytes);
  EXPECT_EQ(digest.value(), digest_of_random(5, kBytes));
  (void)client.remove("block-loop");
}

// examples/asio: two streams followed in one Boost.Asio io_context, copied to stdout.
TEST(EventFdExample, AsioExampleFollowsTwoStreams) {
  TestDaemon daemon;
  Client client = connect_to(daemon);
  auto first = client.create("asio-a").value();
  auto second = client.create("asio-b").value();
  Child example =
      Child::spawn({bin_dir() + "/asio_reader", "asio-a", "asio-b"}, false, true, daemon.env());
  // Wait until both readers are attached, so the bytes below reach it live.
  ASSERT_TRUE(eventually([&] { return client.stat("asio-b").value().readers == 1; }));
  ASSERT_TRUE(eventually([&] { return client.stat("asio-a").value().readers == 1; }));
  std::string want_a, want_b;
  for (int i = 0; i < 100; ++i) {
    std::string a = "a" + std::to_string(i) + "\n";
    std::string b = "b" + std::to_string(i) + "\n";
    ASSERT_TRUE(first.append(a).ok());
    ASSERT_TRUE(second.append(b).ok());
    want_a += a;
    want_b += b;
  }
  ASSERT_TRUE(first.close().ok());
  ASSERT_TRUE(second.close().ok());
  std::string out = read_all(example.stdout_fd());
  EXPECT_EQ(example.wait(10s), 0);
  // Interleaved as they came; each stream's own lines in order.
  std::string got_a, got_b;
  size_t start = 0;
  for (size_t nl = out.find('\n'); nl != std::string::npos; nl = out.find('\n', start)) {
    std::string line = out.substr(start, nl + 1 - start);
    (line[0] == 'a' ? got_a : got_b) += line;
    start = nl + 1;
  }
  EXPECT_EQ(got_a, want_a);
  EXPECT_EQ(got_b, want_b);
  (void)client.remove("asio-a");
  (void)client.remove("asio-b");
}

}  // namespace
}  // namespace shmstream::test
