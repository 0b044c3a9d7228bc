// Persistent streams: files on disk that outlive the daemon (even a SIGKILL) and, through the
// boot id in their header, are judged correctly after a reboot.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "shm/authenticator.hpp"
#include "shm/layout.hpp"
#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

class Persistence : public ::testing::Test {
 protected:
  void SetUp() override { client_ = std::make_unique<Client>(connect_to(daemon_)); }

  void reconnect_after_crash() {
    client_.reset();
    daemon_.crash_and_restart();
    client_ = std::make_unique<Client>(connect_to(daemon_));
  }

  // Files of this daemon's streams in `dir`.
  static std::vector<std::string> stream_files(const std::string& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      std::string f = e.path().filename().string();
      if (f.rfind("shmstream.", 0) == 0) out.push_back(e.path().string());
    }
    return out;
  }

  // Writes `bytes` of fill_random(seed) in 1 MiB appends.
  static void fill(Producer& producer, uint64_t seed, uint64_t bytes) {
    std::vector<std::byte> buf(1 << 20);
    for (uint64_t off = 0; off < bytes; off += buf.size()) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), bytes - off));
      fill_random(seed, off, buf.data(), n);
      ASSERT_TRUE(producer.append(std::span(buf.data(), n)).ok());
    }
  }

  // Digest of the stream read from `from` to its end.
  uint64_t digest_from(const std::string& name, uint64_t from) {
    auto reader = client_->open(name).value();
    EXPECT_TRUE(reader.seek(static_cast<int64_t>(from)).ok());
    Digest digest;
    for (;;) {
      auto view = reader.next(1 << 20, 10s);
      EXPECT_TRUE(view.ok()) << view.status().to_string();
      if (!view.ok() || view->empty()) break;
      digest.update(view->data(), view->size());
    }
    return digest.value();
  }

  static uint64_t digest_of_range(uint64_t seed, uint64_t from, uint64_t to) {
    std::vector<std::byte> buf(to - from);
    fill_random(seed, from, buf.data(), buf.size());
    Digest digest;
    digest.update(buf.data(), buf.size());
    return digest.value();
  }

  TestDaemon daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(Persistence, AStreamOnDiskIsFullyReadableAfterTheDaemonIsKilled) {
  constexpr uint64_t kBytes = 64ull << 20;
  CreateOptions options;
  options.persistent = true;
  auto producer = client_->create("disk", options).value();
  fill(producer, 7, kBytes);
  ASSERT_TRUE(producer.close().ok());
  // Its files are in the persistent directory, none in shared memory.
  EXPECT_EQ(stream_files(daemon_.persist_dir()).size(), 2u);
  EXPECT_TRUE(daemon_.segment_files().empty());

  reconnect_after_crash();
  auto streams = client_->list().value();
  ASSERT_EQ(streams.size(), 1u);
  EXPECT_EQ(streams[0].name, "disk");
  EXPECT_EQ(streams[0].state, StreamState::kClosed);
  EXPECT_EQ(streams[0].bytes, kBytes);
  EXPECT_EQ(streams[0].directory, daemon_.persist_dir());
  // Replayed whole, and from an arbitrary offset.
  EXPECT_EQ(digest_from("disk", 0), digest_of_random(7, kBytes));
  EXPECT_EQ(digest_from("disk", 12345678), digest_of_range(7, 12345678, kBytes));
  // Removal deletes the files.
  ASSERT_TRUE(client_->remove("disk").ok());
  EXPECT_TRUE(stream_files(daemon_.persist_dir()).empty());
}

TEST_F(Persistence, AStreamInADirectoryOfItsOwnComesBackAbortedIfItsProducerDied) {
  std::string dir = daemon_.dir() + "/elsewhere";
  std::filesystem::create_directory(dir);
  CreateOptions options;
  options.directory = dir;
  options.records = true;
  {
    auto producer = client_->create("mine", options).value();
    ASSERT_TRUE(producer.publish("first").ok());
    ASSERT_TRUE(producer.publish("second").ok());
    // Dropped without close(): the stream is aborted after "second".
  }
  EXPECT_EQ(stream_files(dir).size(), 2u);
  reconnect_after_crash();
  auto info = client_->stat("mine");
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_EQ(info->state, StreamState::kAborted);
  EXPECT_EQ(info->directory, dir);
  auto reader = client_->open("mine").value();
  for (const char* want : {"first", "second"}) {
    auto r = reader.next_record(1s);
    ASSERT_TRUE(r.ok() && *r) << r.status().to_string();
    EXPECT_EQ(std::string(reinterpret_cast<const char*>((*r)->data.data()), (*r)->data.size()),
              want);
  }
  EXPECT_EQ(reader.next_record(1s).status().code(), ErrorCode::kProducerDied);
  ASSERT_TRUE(client_->remove("mine").ok());
  EXPECT_TRUE(stream_files(dir).empty());
}

TEST_F(Persistence, AfterARebootAnOpenStreamIsAbortedEvenIfItsProducerPidIsAlive) {
  CreateOptions options;
  options.persistent = true;
  auto producer = client_->create("booted", options).value();
  ASSERT_TRUE(producer.append("kept").ok());
  // A reboot, as the next daemon sees it: another boot id in the header, while the recorded
  // producer pid (this process) is alive.
  std::string segment;
  for (const auto& f : stream_files(daemon_.persist_dir())) {
    if (is_segment_file(f)) segment = f;
  }
  ASSERT_FALSE(segment.empty());
  // The boot id is identity, covered by the header checksum: a reboot's header is resealed.
  int fd = ::open(segment.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  auto* header = static_cast<shm::SegmentHeader*>(
      mmap(nullptr, shm::kHeaderSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(header, MAP_FAILED);
  std::fill(std::begin(header->boot_id), std::end(header->boot_id), std::byte{0x5a});
  // ... and signed again with the daemon's key, as that daemon would have signed it.
  shm::DaemonKey key;
  std::ifstream key_file(daemon_.persist_dir() + "/daemon.key", std::ios::binary);
  ASSERT_TRUE(key_file.read(reinterpret_cast<char*>(key.bytes.data()), key.bytes.size()));
  const auto mac = shm::header_authenticator(*header, key);
  std::memcpy(header->authenticator, mac.data(), mac.size());
  header->header_checksum = shm::header_checksum(*header);
  munmap(header, shm::kHeaderSize);
  ::close(fd);
  reconnect_after_crash();
  auto info = client_->stat("booted").value();
  EXPECT_EQ(info.state, StreamState::kAborted);
  EXPECT_EQ(info.bytes, 4u);
}

TEST_F(Persistence, ARelativeOrMissingDirectoryIsAClearError) {
  CreateOptions options;
  options.directory = "relative/path";
  auto r = client_->create("x", options);
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << r.status().to_string();
  options.directory = daemon_.dir() + "/does-not-exist";
  r = client_->create("x", options);
  EXPECT_EQ(r.status().code(), ErrorCode::kNotFound) << r.status().to_string();
  EXPECT_NE(r.status().message().find("does-not-exist"), std::string::npos);
  EXPECT_TRUE(client_->list().value().empty());
}

}  // namespace
}  // namespace shmstream::test
