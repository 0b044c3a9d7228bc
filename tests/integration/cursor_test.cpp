// Named cursors: resume where a reader left off, across reader crashes and daemon restarts;
// what they hold back in rings; and the delivery guarantees of explicit and automatic commits
// for a consumer killed with SIGKILL midway.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

std::string text_of(const Record& r) {
  return std::string(reinterpret_cast<const char*>(r.data.data()), r.data.size());
}

class Cursors : public ::testing::Test {
 protected:
  void SetUp() override { client_ = std::make_unique<Client>(connect_to(daemon_)); }

  Producer records_stream(const std::string& name, int count, CreateOptions options = {}) {
    options.records = true;
    auto producer = client_->create(name, options).value();
    for (int i = 0; i < count; ++i) {
      EXPECT_TRUE(producer.publish("record " + std::to_string(i)).ok());
    }
    return producer;
  }

  Result<Reader> open_cursor(const std::string& name, const std::string& cursor,
                             CommitMode commit = CommitMode::kAuto) {
    OpenOptions options;
    options.cursor = cursor;
    options.commit = commit;
    return client_->open(name, options);
  }

  std::vector<CursorInfo> cursors_of(const std::string& name) {
    auto info = client_->stat(name);
    EXPECT_TRUE(info.ok()) << info.status().to_string();
    return info.ok() ? info->cursors : std::vector<CursorInfo>{};
  }

  // Runs cursor_consumer on stream "s" into `output`; kills it with SIGKILL once the output
  // holds `kill_at` bytes, starts it again and lets it finish. Returns the output's lines.
  std::vector<std::string> consume_with_a_crash(const std::string& mode, const std::string& output,
                                                off_t kill_at) {
    auto start = [&] {
      Child c = Child::spawn(
          {bin_dir() + "/cursor_consumer", daemon_.socket_path(), "s", "sink", output, mode}, false,
          true);
      EXPECT_EQ(c.read_line(10s).rfind("started ", 0), 0u);
      return c;
    };
    auto size_of = [&] {
      struct stat st {};
      return ::stat(output.c_str(), &st) == 0 ? st.st_size : off_t{0};
    };
    {
      Child first = start();
      EXPECT_TRUE(eventually([&] { return size_of() >= kill_at; }, 60s));
      first.kill(SIGKILL);
      int status = first.wait(10s);
      EXPECT_TRUE(WIFSIGNALED(status)) << "the consumer finished before it could be killed";
    }
    auto lag = cursors_of("s");
    EXPECT_EQ(lag.size(), 1u);
    if (!lag.empty()) {
      EXPECT_EQ(lag[0].reader_pid, 0u);  // nobody holds it after the crash
    }
    Child second = start();
    EXPECT_EQ(second.wait(120s), 0);
    std::vector<std::string> lines;
    std::ifstream in(output);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  TestDaemon daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(Cursors, AReaderResumesWhereItsCursorCommitted) {
  auto producer = records_stream("s", 10);
  {
    auto reader = open_cursor("s", "c1", CommitMode::kExplicit).value();
    EXPECT_EQ(reader.cursor_position(), 0u);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(reader.next_record(1s).ok());
    ASSERT_TRUE(reader.commit(reader.position(), 42).ok());
    ASSERT_TRUE(reader.next_record(1s).ok());  // read, never committed: comes again
    auto held = cursors_of("s");
    ASSERT_EQ(held.size(), 1u);
    EXPECT_EQ(held[0].name, "c1");
    EXPECT_EQ(held[0].reader_pid, static_cast<uint32_t>(getpid()));
    // One reader per cursor; a held cursor cannot be removed.
    EXPECT_EQ(open_cursor("s", "c1").status().code(), ErrorCode::kBusy);
    EXPECT_EQ(client_->remove_cursor("s", "c1").code(), ErrorCode::kBusy);
  }
  auto reader = open_cursor("s", "c1", CommitMode::kExplicit).value();
  EXPECT_EQ(reader.cursor_token(), 42u);
  auto r = reader.next_record(1s);
  ASSERT_TRUE(r.ok() && *r);
  EXPECT_EQ(text_of(**r), "record 3");
  // The lag is what the producer committed past the cursor.
  auto info = client_->stat("s").value();
  ASSERT_EQ(info.cursors.size(), 1u);
  EXPECT_EQ(info.bytes - info.cursors[0].position, info.bytes - reader.cursor_position());
  EXPECT_GT(info.bytes - info.cursors[0].position, 0u);
  // Another cursor is independent and starts at the beginning.
  auto other = open_cursor("s", "c2").value();
  auto first = other.next_record(1s);
  ASSERT_TRUE(first.ok() && *first);
  EXPECT_EQ(text_of(**first), "record 0");
  EXPECT_EQ(client_->stat("s").value().cursors.size(), 2u);
}

TEST_F(Cursors, AutomaticCommitsWhatThePreviousCallDelivered) {
  auto producer = records_stream("s", 5);
  (void)producer.close();
  {
    auto reader = open_cursor("s", "auto").value();
    ASSERT_TRUE(reader.next_record(1s).ok());  // record 0: delivered, not yet committed
    ASSERT_TRUE(reader.next_record(1s).ok());  // commits record 0; delivers record 1
    EXPECT_EQ(cursors_of("s")[0].position, reader.cursor_position());
  }
  auto reader = open_cursor("s", "auto").value();
  auto r = reader.next_record(1s);
  ASSERT_TRUE(r.ok() && *r);
  EXPECT_EQ(text_of(**r), "record 1");  // at least once: the unconfirmed one comes again
  for (;;) {
    auto next = reader.next_record(1s);
    ASSERT_TRUE(next.ok()) << next.status().to_string();
    if (!*next) break;
  }
  // At the clean end everything is committed: no lag.
  auto info = client_->stat("s").value();
  EXPECT_EQ(info.cursors[0].position, info.bytes);
}

TEST_F(Cursors, BadNamesAndUnknownCursorsAreClearErrors) {
  auto producer = records_stream("s", 1);
  for (const std::string& bad : std::vector<std::string>{std::string(1, '\0'), "has space",
                                                         "slash/", std::string(65, 'c')}) {
    auto r = open_cursor("s", bad);
    EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(client_->remove_cursor("s", "never").code(), ErrorCode::kNotFound);
  auto plain = client_->open("s").value();
  EXPECT_EQ(plain.commit().code(), ErrorCode::kInvalidArgument);  // not a cursor
}

TEST_F(Cursors, AnIdleCursorHoldsABlockRingUntilItIsRemoved) {
  CreateOptions options;
  options.retention = Retention::kBlock;
  options.ring_capacity = 64 << 10;
  auto producer = client_->create("s", options).value();
  // The cursor exists at offset 0, and nobody reads it.
  { ASSERT_TRUE(open_cursor("s", "slow").ok()); }
  std::vector<std::byte> chunk(16 << 10);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(producer.append(chunk, 1s).ok());
  EXPECT_EQ(producer.append(chunk, 200ms).code(), ErrorCode::kTimeout);
  // Reading and committing half the ring lets the producer write that much more.
  {
    auto reader = open_cursor("s", "slow", CommitMode::kExplicit).value();
    ASSERT_TRUE(reader.next(32 << 10, 1s).ok());
    EXPECT_EQ(producer.append(chunk, 200ms).code(), ErrorCode::kTimeout);  // not committed
    ASSERT_TRUE(reader.commit().ok());
  }
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(producer.append(chunk, 1s).ok());
  EXPECT_EQ(producer.append(chunk, 200ms).code(), ErrorCode::kTimeout);
  ASSERT_TRUE(client_->remove_cursor("s", "slow").ok());
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(producer.append(chunk, 1s).ok());
  EXPECT_TRUE(cursors_of("s").empty());
}

TEST_F(Cursors, AnOverrunCursorResumesWithTheOverrunErrorAndTheOldestOffset) {
  CreateOptions options;
  options.retention = Retention::kDropOldest;
  options.ring_capacity = 64 << 10;
  auto producer = records_stream("s", 1, options);
  { ASSERT_TRUE(open_cursor("s", "late").ok()); }
  std::string payload(1000, 'x');
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(producer.publish(payload).ok());
  auto reader = open_cursor("s", "late").value();
  EXPECT_EQ(reader.position(), 0u);
  auto r = reader.next_record(1s);
  ASSERT_EQ(r.status().code(), ErrorCode::kOverrun) << r.status().to_string();
  EXPECT_GT(r.status().offset(), 0u);
  EXPECT_EQ(r.status().offset(), reader.oldest());
  ASSERT_TRUE(reader.seek(static_cast<int64_t>(r.status().offset())).ok());
  auto resumed = reader.next_record(1s);
  ASSERT_TRUE(resumed.ok() && *resumed) << resumed.status().to_string();
  EXPECT_EQ(text_of(**resumed), payload);
}

TEST_F(Cursors, CursorsOfAPersistentStreamSurviveADaemonKill) {
  CreateOptions options;
  options.persistent = true;
  auto producer = records_stream("s", 10, options);
  ASSERT_TRUE(producer.close().ok());
  {
    auto reader = open_cursor("s", "keep", CommitMode::kExplicit).value();
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(reader.next_record(1s).ok());
    ASSERT_TRUE(reader.commit(reader.position(), 6).ok());
  }
  client_.reset();
  daemon_.crash_and_restart();
  client_ = std::make_unique<Client>(connect_to(daemon_));
  auto reader = open_cursor("s", "keep").value();
  EXPECT_EQ(reader.cursor_token(), 6u);
  auto r = reader.next_record(1s);
  ASSERT_TRUE(r.ok() && *r) << r.status().to_string();
  EXPECT_EQ(text_of(**r), "record 6");
}

// Records "record 0" .. "record N-1", published and closed before the consumer starts; the
// consumer appends a line per record to a file (a system call each: seconds in all), and is
// killed once the file holds a random share of them.
constexpr int kCrashRecords = 1'000'000;

off_t random_kill_point() {
  std::random_device seed;
  std::mt19937 rng(seed());
  // "record 123456\n" is about 14 bytes: kill between 10% and 60% of the way.
  return std::uniform_int_distribution<off_t>(kCrashRecords * 14 / 10,
                                              kCrashRecords * 14 * 6 / 10)(rng);
}

// Checks the lines are records 0..N-1 in order, each at least once; returns the repeats.
int check_in_order(const std::vector<std::string>& lines) {
  int next = 0;
  int repeats = 0;
  for (const auto& line : lines) {
    int index = std::stoi(line.substr(7));
    EXPECT_EQ(line, "record " + std::to_string(index));
    if (index == next) {
      ++next;
    } else if (index < next) {
      ++repeats;
    } else {
      ADD_FAILURE() << "record " << next << " is missing (next came " << index << ")";
      return -1;
    }
  }
  EXPECT_EQ(next, kCrashRecords) << "the last records are missing";
  return repeats;
}

TEST_F(Cursors, AKilledConsumerWithExplicitCommitsDeliversEveryRecordExactlyOnce) {
  auto producer = records_stream("s", kCrashRecords);
  ASSERT_TRUE(producer.close().ok());
  auto lines = consume_with_a_crash("explicit", daemon_.dir() + "/out", random_kill_point());
  ASSERT_EQ(lines.size(), static_cast<size_t>(kCrashRecords));
  EXPECT_EQ(check_in_order(lines), 0);
}

TEST_F(Cursors, AKilledConsumerWithAutomaticCommitsDeliversEveryRecordAtLeastOnce) {
  auto producer = records_stream("s", kCrashRecords);
  ASSERT_TRUE(producer.close().ok());
  auto lines = consume_with_a_crash("auto", daemon_.dir() + "/out", random_kill_point());
  int repeats = check_in_order(lines);
  // A record is committed when the next is asked for: at most the one in hand comes again.
  EXPECT_GE(repeats, 0);
  EXPECT_LE(repeats, 1);
}

}  // namespace
}  // namespace shmstream::test
