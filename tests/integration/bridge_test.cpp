// `shmstream bridge out`: a local stream into a real redis-server (started by the test on a
// free loopback port), exactly once across a SIGKILL of the bridge and a restart of Redis.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <charconv>

#include "support/harness.hpp"
#include "support/redis_server.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;
using shmstream_cli::RedisReply;

#define SKIP_WITHOUT_REDIS() \
  if (!RedisServer::available()) GTEST_SKIP() << "redis-server is not installed (deploy/setup)"

// One Redis stream entry, as the bridge wrote it.
struct Entry {
  uint64_t ms = 0, seq = 0;
  std::map<std::string, std::string> fields;
};

std::vector<Entry> entries_of(const RedisServer& redis, const std::string& key) {
  auto r = redis.connect();
  auto reply = r.command({"XRANGE", key, "-", "+"}).value();
  std::vector<Entry> out;
  for (const auto& e : reply.elements) {
    Entry entry;
    const std::string& id = e.elements.at(0).text;
    size_t dash = id.find('-');
    std::from_chars(id.data(), id.data() + dash, entry.ms);
    std::from_chars(id.data() + dash + 1, id.data() + id.size(), entry.seq);
    const auto& fields = e.elements.at(1).elements;
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      entry.fields[fields[i].text] = fields[i + 1].text;
    }
    out.push_back(std::move(entry));
  }
  return out;
}

long long xlen(const RedisServer& redis, const std::string& key) {
  auto r = redis.connect();
  auto reply = r.command({"XLEN", key});
  return reply.ok() ? reply->integer : -1;
}

// The bridge, with stderr into its stdout pipe (for the messages tests check).
Child bridge_out(const TestDaemon& daemon, const std::string& name, const std::string& url,
                 std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {
      "/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", bin_dir() + "/shmstream", "bridge", "out", name,
      "--to",    url};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return Child::spawn(argv, false, true, daemon.env());
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

TEST(BridgeOut, RecordsLandInRedisWithTheirOffsetsAsIds) {
  SKIP_WITHOUT_REDIS();
  TestDaemon daemon;
  Client client = connect_to(daemon);
  RedisServer redis;
  CreateOptions options;
  options.records = true;
  auto producer = client.create("orders", options).value();
  std::vector<std::string> sent;
  for (int i = 0; i < 1000; ++i) {
    sent.push_back("record-" + std::to_string(i) + std::string(i % 37, '.'));
    ASSERT_TRUE(producer.publish(sent.back()).ok());
  }
  ASSERT_TRUE(producer.publish("").ok());  // an empty record travels too
  sent.push_back("");
  ASSERT_TRUE(producer.close().ok());

  Child bridge = bridge_out(daemon, "orders", redis.url("orders"));
  std::string out = read_all(bridge.stdout_fd());
  ASSERT_EQ(exit_code(bridge.wait(60s)), 0) << out;

  // Each record is an entry "<offset + 1>-<frame size>", in order; then the end marker.
  auto entries = entries_of(redis, "orders");
  ASSERT_EQ(entries.size(), sent.size() + 1);
  auto reader = client.open("orders").value();
  for (size_t i = 0; i < sent.size(); ++i) {
    auto record = reader.next_record(0s).value();
    ASSERT_TRUE(record.has_value());
    EXPECT_EQ(entries[i].ms, record->offset + 1) << i;
    EXPECT_EQ(entries[i].seq, reader.position() - record->offset) << i;
    EXPECT_EQ(entries[i].fields["d"], sent[i]) << i;
    EXPECT_EQ(entries[i].fields["k"], "records");
  }
  EXPECT_EQ(entries.back().ms, reader.committed() + 1);
  EXPECT_EQ(entries.back().seq, 0u);
  EXPECT_EQ(entries.back().fields["end"], "closed");
  // Its cursor shows it caught up.
  auto info = client.stat("orders").value();
  ASSERT_EQ(info.cursors.size(), 1u);
  EXPECT_EQ(info.cursors[0].name, "bridge:orders");
  EXPECT_EQ(info.cursors[0].position, info.bytes);

  // Again: Redis says it all arrived, so nothing is added.
  Child again = bridge_out(daemon, "orders", redis.url("orders"));
  std::string again_out = read_all(again.stdout_fd());
  EXPECT_EQ(exit_code(again.wait(30s)), 0) << again_out;
  EXPECT_NE(again_out.find("already ended"), std::string::npos) << again_out;
  EXPECT_EQ(xlen(redis, "orders"), static_cast<long long>(sent.size() + 1));
}

TEST(BridgeOut, ExactlyOnceAcrossASigkilledBridgeAndARedisRestart) {
  SKIP_WITHOUT_REDIS();
  TestDaemon daemon;
  Client client = connect_to(daemon);
  RedisServer redis;
  constexpr uint64_t kBytes = 24 << 20;
  constexpr uint64_t kSeed = 77;
  auto producer = client.create("feed").value();
  // The producer writes while the bridge follows (paced, so that the bridge is mid-stream when
  // it is killed and when Redis restarts).
  std::thread writer([&] {
    std::vector<std::byte> chunk(64 << 10);
    for (uint64_t off = 0; off < kBytes; off += chunk.size()) {
      fill_random(kSeed, off, chunk.data(), chunk.size());
      if (!producer.append(chunk).ok()) return;
      std::this_thread::sleep_for(2ms);
    }
    producer.close();
  });
  std::vector<std::string> small = {"--chunk", "16K", "--batch", "8"};
  {
    Child first = bridge_out(daemon, "feed", redis.url("feed"), small);
    ASSERT_TRUE(eventually([&] { return xlen(redis, "feed") >= 100; }, 30s));
    first.kill(SIGKILL);
    first.wait(10s);
  }
  Child second = bridge_out(daemon, "feed", redis.url("feed"), small);
  ASSERT_TRUE(eventually([&] { return xlen(redis, "feed") >= 500; }, 30s));
  redis.restart();  // the bridge loses its connection, reconnects, asks where it is
  std::string out = read_all(second.stdout_fd());
  writer.join();
  ASSERT_EQ(exit_code(second.wait(60s)), 0) << out;

  auto entries = entries_of(redis, "feed");
  ASSERT_GE(entries.size(), 2u);
  Digest digest;
  uint64_t expected_start = 0;
  size_t gaps = 0;
  for (size_t i = 0; i + 1 < entries.size(); ++i) {
    gaps += entries[i].ms - 1 != expected_start;
    const std::string& d = entries[i].fields["d"];
    EXPECT_EQ(entries[i].seq, d.size());
    digest.update(d.data(), d.size());
    expected_start = entries[i].ms - 1 + entries[i].seq;
  }
  EXPECT_EQ(gaps, 0u) << "entries do not follow each other";
  EXPECT_EQ(digest.bytes(), kBytes) << "bytes lost or duplicated";
  EXPECT_EQ(digest.value(), digest_of_random(kSeed, kBytes));
  EXPECT_EQ(entries.back().fields["end"], "closed");
  std::printf("%zu entries; the bridge said:\n%s", entries.size(), out.c_str());
}

TEST(BridgeOut, ClearErrors) {
  SKIP_WITHOUT_REDIS();
  TestDaemon daemon;
  Client client = connect_to(daemon);
  auto producer = client.create("s").value();
  ASSERT_TRUE(producer.append("abc").ok());
  ASSERT_TRUE(producer.close().ok());
  {
    RedisServer redis;
    auto r = redis.connect();
    ASSERT_TRUE(r.command({"SET", "taken", "a string"}).ok());
    Child bridge = bridge_out(daemon, "s", redis.url("taken"));
    std::string out = read_all(bridge.stdout_fd());
    EXPECT_EQ(exit_code(bridge.wait(30s)), 1);
    EXPECT_NE(out.find("key \"taken\" holds a string, not a stream"), std::string::npos) << out;
  }
  {
    RedisServer redis("sesame");
    std::string url = "redis://:wrong@127.0.0.1:" + std::to_string(redis.port()) + "/k";
    Child bridge = bridge_out(daemon, "s", url);
    std::string out = read_all(bridge.stdout_fd());
    EXPECT_EQ(exit_code(bridge.wait(30s)), 1);
    EXPECT_NE(out.find("AUTH refused"), std::string::npos) << out;
    Child right = bridge_out(daemon, "s", redis.url("k"));
    std::string right_out = read_all(right.stdout_fd());
    EXPECT_EQ(exit_code(right.wait(30s)), 0) << right_out;
    EXPECT_EQ(xlen(redis, "k"), 2);
  }
  {  // Redis down at first: the bridge says so, waits, and goes on once it is up.
    RedisServer redis;
    redis.stop();
    Child bridge = bridge_out(daemon, "s", redis.url("later"));
    std::string line = bridge.read_line(30s);
    EXPECT_NE(line.find("retrying"), std::string::npos) << line;
    redis.start();
    std::string out = read_all(bridge.stdout_fd());
    EXPECT_EQ(exit_code(bridge.wait(30s)), 0) << out;
    EXPECT_EQ(xlen(redis, "later"), 2);
  }
  for (const char* bad : {"http://127.0.0.1/k", "redis://127.0.0.1:99999/k", "redis://host"}) {
    auto [status, out] =
        run_cli(daemon, {"bridge", "out", "s", "--to", bad}, "", 30s, /*with_stderr=*/true);
    EXPECT_NE(exit_code(status), 0) << bad;
    EXPECT_NE(out.find("--to"), std::string::npos) << bad << ": " << out;
  }
  auto [status, out] = run_cli(daemon, {"bridge", "out", "missing", "--to", "redis://127.0.0.1/k"},
                               "", 30s, /*with_stderr=*/true);
  EXPECT_EQ(exit_code(status), 1);
  EXPECT_NE(out.find("no such stream"), std::string::npos) << out;
}

}  // namespace
}  // namespace shmstream::test
