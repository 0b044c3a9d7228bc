// `shmstream bridge out` and `bridge in`: a local stream into a real redis-server (started by
// the test on a free loopback port) and back out into another daemon's stream, exactly once
// across SIGKILLs of each bridge and a restart of Redis; the same between two network
// namespaces (two "hosts") where the test runs as root.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <fstream>
#include <string>

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

// `shmstream ARGS...` against `daemon`, with stderr into its stdout pipe (for the messages
// tests check); within network namespace `netns` if not empty.
Child shmstream_cli(const TestDaemon& daemon, std::vector<std::string> args,
                    const std::string& netns = "") {
  std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1",
                                   bin_dir() + "/shmstream"};
  argv.insert(argv.end(), args.begin(), args.end());
  if (!netns.empty()) argv = Netns::exec_in(netns, argv);
  return Child::spawn(argv, false, true, daemon.env());
}

Child bridge_out(const TestDaemon& daemon, const std::string& name, const std::string& url,
                 std::vector<std::string> extra = {}, const std::string& netns = "") {
  std::vector<std::string> args = {"bridge", "out", name, "--to", url};
  args.insert(args.end(), extra.begin(), extra.end());
  return shmstream_cli(daemon, args, netns);
}

Child bridge_in(const TestDaemon& daemon, const std::string& key, const std::string& url,
                const std::string& name, const std::string& netns = "") {
  return shmstream_cli(daemon, {"bridge", "in", key, "--from", url, "--as", name}, netns);
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

// The Redis password, for the bridges this test starts (they take it from the environment).
class PasswordInEnvironment {
 public:
  explicit PasswordInEnvironment(const std::string& password) {
    if (!password.empty()) setenv("SHMSTREAM_REDIS_PASSWORD", password.c_str(), 1);
  }
  ~PasswordInEnvironment() { unsetenv("SHMSTREAM_REDIS_PASSWORD"); }
  PasswordInEnvironment(const PasswordInEnvironment&) = delete;
  PasswordInEnvironment& operator=(const PasswordInEnvironment&) = delete;
};

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
    (void)producer.close();
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
    // It failed before its first entry: the cursor it made is gone again.
    EXPECT_TRUE(client.stat("s").value().cursors.empty());
  }
  {
    RedisServer redis("sesame");
    {  // A password on the command line is refused, and never echoed.
      std::string url = "redis://:sesame@127.0.0.1:" + std::to_string(redis.port()) + "/k";
      Child bridge = bridge_out(daemon, "s", url);
      std::string out = read_all(bridge.stdout_fd());
      EXPECT_EQ(exit_code(bridge.wait(30s)), 1);
      EXPECT_NE(out.find("a password on the command line is visible to every local user"),
                std::string::npos)
          << out;
      EXPECT_EQ(out.find("sesame"), std::string::npos) << out;
    }
    {
      PasswordInEnvironment wrong("wrong");
      Child bridge = bridge_out(daemon, "s", redis.url("k"));
      std::string out = read_all(bridge.stdout_fd());
      EXPECT_EQ(exit_code(bridge.wait(30s)), 1);
      EXPECT_NE(out.find("AUTH refused"), std::string::npos) << out;
      EXPECT_EQ(out.find("wrong"), std::string::npos) << out;
      EXPECT_TRUE(client.stat("s").value().cursors.empty());
    }
    {
      PasswordInEnvironment right("sesame");
      Child bridge = bridge_out(daemon, "s", redis.url("k"));
      std::string out = read_all(bridge.stdout_fd());
      EXPECT_EQ(exit_code(bridge.wait(30s)), 0) << out;
      EXPECT_EQ(xlen(redis, "k"), 2);
    }
    {  // Or from a file.
      std::string file = daemon.dir() + "/redis-password";
      { std::ofstream(file) << "sesame\n"; }
      Child bridge = bridge_out(daemon, "s", redis.url("k2"), {"--password-file", file});
      std::string out = read_all(bridge.stdout_fd());
      EXPECT_EQ(exit_code(bridge.wait(30s)), 0) << out;
      EXPECT_EQ(xlen(redis, "k2"), 2);
    }
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

// Record i of the round trip: its index, then pseudo-random bytes; 1 to 8 KiB.
std::string round_trip_record(uint64_t i) {
  std::string out(1024 + (i * 2654435761u) % 7169, '\0');
  std::memcpy(out.data(), &i, sizeof i);
  fill_random(i, 0, reinterpret_cast<std::byte*>(out.data() + sizeof i), out.size() - sizeof i);
  return out;
}

// 100 MiB of records from stream "camera" of one daemon ("host"), through bridge out, Redis
// and bridge in, into stream "camera" of another daemon, read there as they arrive. Midway
// each bridge is SIGKILLed and started again, and Redis restarts; the records arrive byte-exact,
// each once, in order. The bridges run in network namespaces `out_ns` and `in_ns` if given.
void round_trip(RedisServer& redis, const std::string& out_ns = "", const std::string& in_ns = "") {
  constexpr uint64_t kTotal = 100 << 20;
  constexpr uint64_t kWindow = 16 << 20;  // the producer keeps at most this far ahead
  uint64_t count = 0;
  for (uint64_t bytes = 0; bytes < kTotal; ++count) bytes += round_trip_record(count).size();
  TestDaemon here;
  TestDaemon there;
  Client source = connect_to(here);
  Client sink = connect_to(there);
  CreateOptions options;
  options.records = true;
  auto producer = source.create("camera", options).value();
  std::string url = redis.url("frames");
  Child out = bridge_out(here, "camera", url, {}, out_ns);
  Child in = bridge_in(there, "frames", redis.url(""), "camera", in_ns);
  auto started = std::chrono::steady_clock::now();

  uint64_t sent = 0, sent_bytes = 0, got = 0, got_bytes = 0;
  bool closed = false;
  auto publish_ahead = [&] {
    for (; sent < count && sent_bytes < got_bytes + kWindow; ++sent) {
      std::string record = round_trip_record(sent);
      ASSERT_TRUE(producer.publish(record).ok());
      sent_bytes += record.size();
    }
    if (sent == count && !closed) {
      ASSERT_TRUE(producer.close().ok());
      closed = true;
    }
  };
  publish_ahead();
  // The bridge in creates its stream at the first entry it finds in Redis.
  ASSERT_TRUE(eventually([&] { return sink.stat("camera").ok(); }, 60s));
  auto reader = sink.open("camera").value();
  std::vector<std::string> events;
  for (;;) {
    publish_ahead();
    if (::testing::Test::HasFatalFailure()) return;
    auto record = reader.next_record(60s);
    ASSERT_TRUE(record.ok()) << "after " << got << " of " << count
                             << " records: " << record.status().message();
    if (!*record) break;  // the end, bridged
    std::string_view data(reinterpret_cast<const char*>((*record)->data.data()),
                          (*record)->data.size());
    ASSERT_EQ(data, round_trip_record(got)) << "record " << got << " (lost, repeated or altered)";
    ++got;
    got_bytes += data.size();
    if (got == count / 4) {
      in.kill(SIGKILL);
      in.wait(10s);
      in = bridge_in(there, "frames", redis.url(""), "camera", in_ns);
      events.push_back("bridge in SIGKILLed at record " + std::to_string(got));
    } else if (got == count / 2) {
      out.kill(SIGKILL);
      out.wait(10s);
      out = bridge_out(here, "camera", url, {}, out_ns);
      events.push_back("bridge out SIGKILLed at record " + std::to_string(got) + " (" +
                       std::to_string(sent) + " sent)");
    } else if (got == count * 3 / 4) {
      redis.restart();
      events.push_back("redis restarted at record " + std::to_string(got));
    }
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_EQ(got, count);
  EXPECT_EQ(got_bytes, sent_bytes);
  std::string out_said = read_all(out.stdout_fd());
  std::string in_said = read_all(in.stdout_fd());
  EXPECT_EQ(exit_code(out.wait(60s)), 0) << out_said;
  EXPECT_EQ(exit_code(in.wait(60s)), 0) << in_said;
  EXPECT_NE(in_said.find("resumed \"camera\""), std::string::npos) << in_said;
  // The copy is the same stream: the same frames at the same offsets, closed.
  auto original = source.stat("camera").value();
  auto copy = sink.stat("camera").value();
  EXPECT_EQ(copy.state, StreamState::kClosed);
  EXPECT_EQ(copy.bytes, original.bytes);
  EXPECT_EQ(copy.origin, 0u);
  EXPECT_TRUE(copy.records);
  std::printf("%llu records, %.1f MiB, in %.1f s (%.1f MiB/s) through two bridges and Redis:\n",
              static_cast<unsigned long long>(got), static_cast<double>(got_bytes) / (1 << 20),
              seconds, static_cast<double>(got_bytes) / (1 << 20) / seconds);
  for (const auto& e : events) std::printf("  %s\n", e.c_str());
  EXPECT_EQ(events.size(), 3u);
}

TEST(BridgeRoundTrip, HundredMiBOutAndBackInExactlyOnceThroughKillsAndARedisRestart) {
  SKIP_WITHOUT_REDIS();
  RedisServer redis;
  if (::testing::Test::HasFatalFailure()) return;
  round_trip(redis);
}

TEST(BridgeRoundTrip, BetweenTwoNetworkNamespaces) {
  SKIP_WITHOUT_REDIS();
  Netns hosts;
  if (!hosts.ok()) GTEST_SKIP() << hosts.why();
  // Host one runs the producer's bridge and Redis; host two the consumer's bridge, which
  // reaches Redis over the veth pair only. Redis refuses other hosts without a password.
  RedisServer redis("veth-secret", hosts.first(), hosts.first_address());
  if (::testing::Test::HasFatalFailure()) return;
  PasswordInEnvironment password(redis.password());
  round_trip(redis, hosts.first(), hosts.second());
}

// Writes entries into Redis by hand, as a bridge out (or something else) would have.
void xadd(const RedisServer& redis, const std::string& key, std::vector<std::string> args) {
  auto r = redis.connect();
  args.insert(args.begin(), {"XADD", key});
  auto reply = r.command(args);
  ASSERT_TRUE(reply.ok() && !reply->is_error()) << (reply.ok() ? reply->text : "lost");
}

std::string run_bridge_in(const TestDaemon& daemon, const RedisServer& redis,
                          const std::string& key, const std::string& name, int* code) {
  Child in = bridge_in(daemon, key, redis.url(""), name);
  std::string said = read_all(in.stdout_fd());
  *code = exit_code(in.wait(30s));
  return said;
}

TEST(BridgeIn, EndsItsStreamAsTheSourceEnded) {
  SKIP_WITHOUT_REDIS();
  TestDaemon daemon;
  Client client = connect_to(daemon);
  RedisServer redis;
  // A byte stream that started (after trimming) at offset 1000, then was aborted.
  xadd(redis, "k", {"1001-5", "d", "hello", "k", "bytes"});
  xadd(redis, "k", {"1006-6", "d", " world", "k", "bytes"});
  xadd(redis, "k", {"1012-0", "end", "aborted", "k", "bytes"});
  int code = 0;
  std::string said = run_bridge_in(daemon, redis, "k", "copy", &code);
  EXPECT_EQ(code, 1) << said;
  EXPECT_NE(said.find("the source stream was aborted"), std::string::npos) << said;
  auto info = client.stat("copy").value();
  EXPECT_EQ(info.state, StreamState::kAborted);
  EXPECT_EQ(info.origin, 1000u);
  EXPECT_FALSE(info.records);
  auto reader = client.open("copy").value();
  char buf[64];
  auto n = reader.read(std::as_writable_bytes(std::span(buf)), 0s);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(buf, *n), "hello world");
  EXPECT_EQ(reader.read(std::as_writable_bytes(std::span(buf)), 0s).status().code(),
            ErrorCode::kProducerDied);
  // Bridging into it again: it ended, so it cannot be resumed; the message says what to do.
  said = run_bridge_in(daemon, redis, "k", "copy", &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(said.find("cannot resume it, it is aborted; remove it"), std::string::npos) << said;
}

TEST(BridgeIn, StartsAtTheOldestEntryATrimmedKeyKeepsIntoARing) {
  SKIP_WITHOUT_REDIS();
  TestDaemon daemon;
  Client client = connect_to(daemon);
  RedisServer redis;
  CreateOptions options;
  options.records = true;
  auto producer = client.create("ticks", options).value();
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(producer.publish("tick-" + std::to_string(i) + std::string(190, '.')).ok());
  }
  ASSERT_TRUE(producer.close().ok());
  // MAXLEN ~ 300: Redis drops whole nodes of entries, keeping at least 300.
  Child out = bridge_out(daemon, "ticks", redis.url("ticks"), {"--maxlen", "300"});
  std::string out_said = read_all(out.stdout_fd());
  ASSERT_EQ(exit_code(out.wait(60s)), 0) << out_said;
  long long kept = xlen(redis, "ticks");
  EXPECT_GE(kept, 300);
  EXPECT_LT(kept, 2001);
  Child again = bridge_out(daemon, "ticks", redis.url("ticks"), {"--maxlen", "300"});
  std::string again_said = read_all(again.stdout_fd());
  EXPECT_EQ(exit_code(again.wait(30s)), 0);
  EXPECT_NE(again_said.find("already ended"), std::string::npos) << again_said;

  // Into a 16 KiB ring: the copy starts at the oldest entry Redis kept (its origin) and keeps
  // the last 16 KiB; each record sits at its source offset minus the origin.
  Child in = shmstream_cli(daemon, {"bridge", "in", "ticks", "--from", redis.url(""), "--as",
                                    "recent", "--retention", "drop-oldest", "--capacity", "16K"});
  std::string in_said = read_all(in.stdout_fd());
  ASSERT_EQ(exit_code(in.wait(60s)), 0) << in_said;
  auto source = client.stat("ticks").value();
  auto copy = client.stat("recent").value();
  auto first = entries_of(redis, "ticks").front();
  EXPECT_EQ(copy.origin, first.ms - 1);
  EXPECT_GT(copy.origin, 0u);
  EXPECT_EQ(copy.origin + copy.bytes, source.bytes);
  EXPECT_EQ(copy.retention, Retention::kDropOldest);
  EXPECT_GT(copy.oldest, 0u);  // it wrapped
  EXPECT_EQ(copy.state, StreamState::kClosed);
  auto reader = client.open("recent").value();
  auto original = client.open("ticks").value();
  int records = 0;
  for (;;) {
    auto record = reader.next_record(0s);
    ASSERT_TRUE(record.ok()) << record.status().to_string();
    if (!*record) break;
    ASSERT_TRUE(original.seek(static_cast<int64_t>((*record)->offset + copy.origin)).ok());
    auto same = original.next_record(0s).value();
    ASSERT_TRUE(same.has_value());
    EXPECT_TRUE(std::ranges::equal((*record)->data, same->data)) << (*record)->offset;
    ++records;
  }
  // 256-byte frames; the oldest offset moves in steps of 1/16 of the ring (4 frames).
  EXPECT_LE(records, 16384 / 256);
  EXPECT_GE(records, 16384 / 256 - 4);
}

TEST(BridgeIn, ClearErrors) {
  SKIP_WITHOUT_REDIS();
  TestDaemon daemon;
  Client client = connect_to(daemon);
  RedisServer redis;
  int code = 0;
  {  // Entries trimmed before the bridge read them: its stream aborts, saying which are gone.
    xadd(redis, "gap", {"1-64", "d", "a", "k", "records"});
    xadd(redis, "gap", {"129-64", "d", "c", "k", "records"});
    std::string said = run_bridge_in(daemon, redis, "gap", "gap", &code);
    EXPECT_EQ(code, 1);
    EXPECT_NE(said.find("no longer holds offsets 64 to 128"), std::string::npos) << said;
    EXPECT_EQ(client.stat("gap").value().state, StreamState::kAborted);
    EXPECT_EQ(client.stat("gap").value().bytes, 64u);
  }
  {  // Not a stream; a stream not written by a bridge.
    auto r = redis.connect();
    ASSERT_TRUE(r.command({"SET", "str", "x"}).ok());
    std::string said = run_bridge_in(daemon, redis, "str", "s1", &code);
    EXPECT_EQ(code, 1);
    EXPECT_NE(said.find("key \"str\" holds a string, not a stream"), std::string::npos) << said;
    xadd(redis, "foreign", {"*", "temperature", "21.5"});
    said = run_bridge_in(daemon, redis, "foreign", "s2", &code);
    EXPECT_EQ(code, 1);
    EXPECT_NE(said.find("not written by a shmstream bridge"), std::string::npos) << said;
    EXPECT_EQ(client.stat("s2").status().code(), ErrorCode::kNotFound);
  }
  {  // Redis down at first: the bridge says so, waits, and goes on once it is up.
    RedisServer later;
    later.stop();
    Child in = bridge_in(daemon, "k", later.url(""), "later");
    std::string line = in.read_line(30s);
    EXPECT_NE(line.find("retrying"), std::string::npos) << line;
    later.start();
    xadd(later, "k", {"1-2", "d", "ok", "k", "bytes"});
    xadd(later, "k", {"3-0", "end", "closed", "k", "bytes"});
    std::string said = read_all(in.stdout_fd());
    EXPECT_EQ(exit_code(in.wait(30s)), 0) << said;
    EXPECT_EQ(client.stat("later").value().bytes, 2u);
  }
  {  // The local stream fills up: it is aborted at once (not after the grace), saying why.
    xadd(redis, "big", {"1-3000", "d", std::string(3000, 'x'), "k", "bytes"});
    xadd(redis, "big", {"3001-3000", "d", std::string(3000, 'y'), "k", "bytes"});
    Child in = shmstream_cli(daemon, {"bridge", "in", "big", "--from", redis.url(""), "--as",
                                      "small", "--max-bytes", "4096"});
    std::string said = read_all(in.stdout_fd());
    EXPECT_EQ(exit_code(in.wait(30s)), 1);
    EXPECT_NE(said.find("beyond its maximum of 4096"), std::string::npos) << said;
    auto info = client.stat("small").value();
    EXPECT_EQ(info.state, StreamState::kAborted);
    EXPECT_EQ(info.bytes, 3000u);
  }
  {  // A local stream of that name with a live producer and no resume grace.
    auto producer = client.create("taken").value();
    xadd(redis, "t", {"1-1", "d", "x", "k", "bytes"});
    std::string said = run_bridge_in(daemon, redis, "t", "taken", &code);
    EXPECT_EQ(code, 1);
    EXPECT_NE(said.find("created without a resume grace"), std::string::npos) << said;
  }
  auto [status, said] =
      run_cli(daemon, {"bridge", "in", "a", "--from", "redis://127.0.0.1/b", "--as", "x"}, "", 30s,
              /*with_stderr=*/true);
  EXPECT_EQ(exit_code(status), 1);
  EXPECT_NE(said.find("names key \"b\", not KEY \"a\""), std::string::npos) << said;
}

}  // namespace
}  // namespace shmstream::test
