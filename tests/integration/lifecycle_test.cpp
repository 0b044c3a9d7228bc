// Multi-process lifecycle tests through the daemon: resume, zero-copy views, read-only mappings,
// corrupt segments, producer death, removal, forced removal, reader counting, the CLI.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "shm/layout.hpp"
#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

class Lifecycle : public ::testing::Test {
 protected:
  void SetUp() override { client_ = std::make_unique<Client>(connect_to(daemon_)); }

  // Runs the CLI against our daemon; returns {wait status, stdout}.
  std::pair<int, std::string> cli(const std::vector<std::string>& args) {
    return run_cli(daemon_, args);
  }

  // The one stream's segment file (not its reader table or pages).
  std::string segment_path() {
    std::vector<std::string> segments;
    for (const auto& f : daemon_.segment_files()) {
      if (is_segment_file(f)) segments.push_back(f);
    }
    return segments.size() == 1 ? std::string("/dev/shm/") + segments[0] : std::string();
  }

  // Blocks `reader` in a read past what is committed, SIGKILLs `producer`, and returns the
  // read's outcome and how long after the kill it woke.
  std::pair<Status, std::chrono::nanoseconds> read_while_killing(Reader& reader, Child& producer) {
    Status status;
    std::chrono::steady_clock::time_point woke;
    std::thread t = blocked_thread([&] {
      char buf[16];
      status = reader.read(std::as_writable_bytes(std::span(buf)), 20s).status();
      woke = std::chrono::steady_clock::now();
    });
    auto killed = std::chrono::steady_clock::now();
    producer.kill(SIGKILL);
    t.join();
    return {status, woke - killed};
  }

  TestDaemon daemon_;
  std::unique_ptr<Client> client_;
};

std::string str(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}

TEST_F(Lifecycle, AReaderResumesFromAnOffset) {
  constexpr uint64_t kBytes = 1 << 20;
  constexpr uint64_t kSplit = 300'001;
  auto producer = client_->create("resume").value();
  std::vector<std::byte> data(kBytes);
  fill_random(9, 0, data.data(), data.size());
  ASSERT_TRUE(producer.append(data).ok());
  ASSERT_TRUE(producer.close().ok());

  Digest joined;
  {
    auto first = client_->open("resume").value();
    std::vector<std::byte> buf(kSplit);
    size_t got = 0;
    while (got < kSplit) got += first.read(std::span(buf).subspan(got), 1s).value();
    joined.update(buf.data(), got);
    EXPECT_EQ(first.position(), kSplit);
  }  // the first reader goes away
  auto second = client_->open("resume").value();
  ASSERT_TRUE(second.seek(static_cast<int64_t>(kSplit)).ok());
  for (;;) {
    auto view = second.next(64 << 10, 1s).value();
    if (view.empty()) break;
    joined.update(view.data(), view.size());
  }
  Digest whole;
  whole.update(data.data(), data.size());
  EXPECT_EQ(joined.value(), whole.value());

  auto [status, out] = cli({"cat", "resume", "--offset", std::to_string(kSplit), "--no-follow"});
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_EQ(out.size(), kBytes - kSplit);
  EXPECT_EQ(std::memcmp(out.data(), data.data() + kSplit, out.size()), 0);
}

// A Whence made from an out-of-range integer is refused, as the C API refuses it, and the
// position stays where it was (it was once taken as kEnd).
TEST_F(Lifecycle, AnInvalidWhenceIsRefusedAndMovesNothing) {
  auto producer = client_->create("whence").value();
  ASSERT_TRUE(producer.append("0123456789").ok());
  auto reader = client_->open("whence").value();
  ASSERT_TRUE(reader.seek(3).ok());
  Status s = reader.seek(0, static_cast<Whence>(7));
  EXPECT_EQ(s.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(s.message().find("invalid whence 7"), std::string::npos) << s.message();
  EXPECT_EQ(reader.position(), 3u);
  ASSERT_TRUE(reader.seek(-2, Whence::kEnd).ok());
  EXPECT_EQ(reader.position(), 8u);
}

TEST_F(Lifecycle, TheZeroCopyViewPointsIntoTheReadOnlySharedMapping) {
  auto producer = client_->create("view").value();
  ASSERT_TRUE(producer.append("zero-copy").ok());
  auto reader = client_->open("view").value();
  auto view = reader.view(0, 9).value();
  EXPECT_EQ(str(view), "zero-copy");
  auto address = reinterpret_cast<uintptr_t>(view.data());
  std::string file = segment_path();
  ASSERT_FALSE(file.empty());
  // Find the mapping that holds the view in /proc/self/maps: it must be our segment file,
  // read-only and shared ("r--s").
  std::ifstream maps("/proc/self/maps");
  std::string line;
  bool found = false;
  while (std::getline(maps, line)) {
    uintptr_t lo = 0, hi = 0;
    char perms[5] = {};
    if (std::sscanf(line.c_str(), "%lx-%lx %4s", &lo, &hi, perms) != 3) continue;
    if (address >= lo && address < hi) {
      found = true;
      EXPECT_NE(line.find(file), std::string::npos) << line;
      EXPECT_EQ(std::string(perms), "r--s") << line;
    }
  }
  EXPECT_TRUE(found);
  ASSERT_TRUE(producer.close().ok());
}

TEST_F(Lifecycle, AReaderCannotWriteItsMapping) {
  auto producer = client_->create("ro").value();
  ASSERT_TRUE(producer.append("read only").ok());
  auto reader = client_->open("ro").value();
  auto view = reader.view(0, 9).value();
  void* page = reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(view.data()) & ~uintptr_t{4095});
  EXPECT_NE(mprotect(page, 4096, PROT_READ | PROT_WRITE), 0);
  EXPECT_EQ(errno, EACCES);
  EXPECT_TRUE(write_faults(view.data())) << "a write through the reader's mapping worked";
  EXPECT_EQ(str(reader.view(0, 9).value()), "read only");
  ASSERT_TRUE(producer.close().ok());
}

TEST_F(Lifecycle, ACorruptSegmentIsRefusedWithAClearError) {
  auto producer = client_->create("corrupt").value();
  ASSERT_TRUE(producer.append("payload").ok());
  ASSERT_TRUE(producer.close().ok());
  std::string file = segment_path();
  ASSERT_FALSE(file.empty());
  {
    int fd = open(file.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    char x = '#';  // flip the first byte of the name, which the header checksum covers
    ASSERT_EQ(pwrite(fd, &x, 1, offsetof(shm::SegmentHeader, name)), 1);
    close(fd);
  }
  auto reader = client_->open("corrupt");
  ASSERT_FALSE(reader.ok());
  EXPECT_EQ(reader.status().code(), ErrorCode::kCorrupt);
  EXPECT_NE(reader.status().message().find("stream \"corrupt\""), std::string::npos);
  EXPECT_NE(reader.status().message().find("checksum"), std::string::npos)
      << reader.status().message();
  auto [status, out] = cli({"cat", "corrupt"});
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  EXPECT_TRUE(out.empty());
  // Truncated behind the daemon's back: refused as well, no crash.
  ASSERT_EQ(truncate(file.c_str(), 10), 0);
  auto truncated = client_->open("corrupt");
  EXPECT_EQ(truncated.status().code(), ErrorCode::kCorrupt) << truncated.status().to_string();
  EXPECT_TRUE(daemon_.alive());
}

TEST_F(Lifecycle, KillingTheProducerWakesABlockedReaderWithinOneSecond) {
  Child producer = Child::spawn({bin_dir() + "/producer_helper", daemon_.socket_path(), "victim",
                                 "4096", "3", "4096", "hold"},
                                true, true);
  ASSERT_EQ(producer.read_line(20s), "created");
  ASSERT_EQ(write(producer.stdin_fd(), "\n", 1), 1);
  ASSERT_TRUE(producer.wait_for_line("written", 20s));
  auto reader = client_->open("victim").value();
  ASSERT_TRUE(reader.wait_for(4096, 5s).ok());
  ASSERT_TRUE(reader.seek(4096).ok());
  auto [status, latency] = read_while_killing(reader, producer);
  EXPECT_EQ(status.code(), ErrorCode::kProducerDied) << status.to_string();
  EXPECT_NE(status.message().find("producer died (pid " + std::to_string(producer.pid()) + ")"),
            std::string::npos)
      << status.message();
  EXPECT_LT(latency, 1s);
  std::printf("producer SIGKILL -> blocked reader woke after %lld us\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::microseconds>(latency).count()));
  producer.wait(10s);
  // Committed data stays readable by a late joiner, which then sees the same error.
  auto late = client_->open("victim").value();
  std::vector<std::byte> buf(8192);
  EXPECT_EQ(late.read(buf, 1s).value(), 4096u);
  EXPECT_EQ(late.read(buf, 1s).status().code(), ErrorCode::kProducerDied);
  EXPECT_EQ(client_->stat("victim")->state, StreamState::kAborted);
}

TEST_F(Lifecycle, AfterADaemonRestartAnAdoptedStreamStillAbortsWhenItsProducerDies) {
  Child producer = Child::spawn({bin_dir() + "/producer_helper", daemon_.socket_path(), "adopted",
                                 "4096", "5", "4096", "hold"},
                                true, true);
  ASSERT_EQ(producer.read_line(20s), "created");
  ASSERT_EQ(write(producer.stdin_fd(), "\n", 1), 1);
  ASSERT_TRUE(producer.wait_for_line("written", 20s));
  client_.reset();
  daemon_.restart();  // the producer's connection breaks; its stream stays, open
  SetUp();
  auto info = client_->stat("adopted");
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_EQ(info->state, StreamState::kOpen);
  EXPECT_EQ(info->bytes, 4096u);
  auto reader = client_->open("adopted").value();
  ASSERT_TRUE(reader.seek(4096).ok());
  auto [status, latency] = read_while_killing(reader, producer);
  EXPECT_EQ(status.code(), ErrorCode::kProducerDied) << status.to_string();
  EXPECT_LT(latency, 1s);
}

TEST_F(Lifecycle, ARemovedStreamCannotBeOpenedWhileItsReadersReadToTheEnd) {
  constexpr uint64_t kBytes = 1 << 20;
  Child producer = Child::spawn({bin_dir() + "/producer_helper", daemon_.socket_path(), "going",
                                 std::to_string(kBytes), "11", "65536", "hold"},
                                true, true);
  ASSERT_EQ(producer.read_line(20s), "created");
  auto reader = client_->open("going").value();
  ASSERT_EQ(write(producer.stdin_fd(), "\n", 1), 1);

  auto [rm_status, rm_out] = cli({"rm", "going"});
  ASSERT_TRUE(WIFEXITED(rm_status) && WEXITSTATUS(rm_status) == 0);
  EXPECT_TRUE(daemon_.segment_files().empty());  // unlinked at once
  auto again = client_->open("going");
  EXPECT_EQ(again.status().code(), ErrorCode::kNotFound) << again.status().to_string();
  auto [ls_status, ls_out] = cli({"ls", "--json"});
  EXPECT_NE(ls_out.find("\"state\":\"removing\""), std::string::npos) << ls_out;

  // The producer may go on writing and close; the reader reads all of it, to a clean end.
  ASSERT_TRUE(producer.wait_for_line("written", 60s));
  producer.close_stdin();
  ASSERT_EQ(producer.read_line(20s), "closed");
  Digest got;
  for (;;) {
    auto view = reader.next(1 << 16, 10s);
    ASSERT_TRUE(view.ok()) << view.status().to_string();
    if (view->empty()) break;
    got.update(view->data(), view->size());
  }
  EXPECT_EQ(got.bytes(), kBytes);
  EXPECT_EQ(got.value(), digest_of_random(11, kBytes));
  reader.close();
  // Once the last holder let go, the daemon forgets it.
  EXPECT_TRUE(eventually([&] { return client_->list()->empty(); }));
}

TEST_F(Lifecycle, ForcedRemovalCancelsBlockedAndIdleReadersAtOnce) {
  auto producer = client_->create("doomed").value();
  ASSERT_TRUE(producer.append("0123456789").ok());
  auto blocked = client_->open("doomed").value();
  auto idle = client_->open("doomed").value();
  ASSERT_TRUE(blocked.seek(10).ok());
  Status status;
  std::chrono::steady_clock::time_point woke;
  std::thread t = blocked_thread([&] {
    status = blocked.next(16, 30s).status();
    woke = std::chrono::steady_clock::now();
  });
  auto start = std::chrono::steady_clock::now();
  auto [rm_status, out] = cli({"rm", "--force", "doomed"});
  ASSERT_TRUE(WIFEXITED(rm_status) && WEXITSTATUS(rm_status) == 0);
  t.join();
  EXPECT_EQ(status.code(), ErrorCode::kCancelled) << status.to_string();
  EXPECT_LT(woke - start, 1s);
  std::printf("rm --force (CLI process start included) -> blocked reader woke after %lld us\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::microseconds>(woke - start).count()));
  EXPECT_EQ(idle.view(0, 10).status().code(), ErrorCode::kCancelled);
  char buf[4];
  EXPECT_EQ(idle.read(std::as_writable_bytes(std::span(buf)), 1s).status().code(),
            ErrorCode::kCancelled);
  EXPECT_EQ(producer.append("more").code(), ErrorCode::kCancelled);
}

// Removal as a peer library's tests expect it: after a plain rm, `stat` shows the stream as
// `ls` does (removing), a second plain rm says it is already removed, and rm --force cancels the
// reader still blocked on it; a closed Producer holds nothing, so the daemon forgets the stream
// once its last reader lets go, with the Producer object still alive.
TEST_F(Lifecycle, ForcingTheRemovalOfAStreamBeingRemovedCancelsItsReaders) {
  auto producer = client_->create("going").value();
  ASSERT_TRUE(producer.append("0123456789").ok());
  auto blocked = client_->open("going").value();
  ASSERT_TRUE(blocked.seek(10).ok());
  ASSERT_TRUE(client_->remove("going").ok());
  auto info = client_->stat("going");
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_TRUE(info->removing);
  auto [stat_status, stat_out] = cli({"stat", "going"});
  EXPECT_TRUE(WIFEXITED(stat_status) && WEXITSTATUS(stat_status) == 0) << stat_out;
  EXPECT_NE(stat_out.find("removing"), std::string::npos) << stat_out;
  Status again = client_->remove("going");
  EXPECT_EQ(again.code(), ErrorCode::kNotFound);
  EXPECT_NE(again.message().find("already removed"), std::string::npos) << again.message();

  Status status;
  std::thread t = blocked_thread([&] { status = blocked.next(16, 30s).status(); });
  auto [rm_status, rm_out] = cli({"rm", "--force", "going"});
  EXPECT_TRUE(WIFEXITED(rm_status) && WEXITSTATUS(rm_status) == 0) << rm_out;
  t.join();
  EXPECT_EQ(status.code(), ErrorCode::kCancelled) << status.to_string();
  EXPECT_EQ(producer.append("more").code(), ErrorCode::kCancelled);

  // Cancelled, close() says so, and lets go of the stream all the same; again, the same answer.
  EXPECT_EQ(producer.close().code(), ErrorCode::kCancelled);
  EXPECT_EQ(producer.close().code(), ErrorCode::kCancelled);
  blocked.close();
  // The Producer object is still alive; it holds the stream no longer.
  EXPECT_TRUE(eventually([&] { return client_->list()->empty(); }));
}

TEST_F(Lifecycle, AClosedProducerNoLongerHoldsItsRemovedStream) {
  auto producer = client_->create("closing").value();
  ASSERT_TRUE(producer.append("0123456789").ok());
  ASSERT_TRUE(client_->remove("closing").ok());
  ASSERT_EQ(client_->list()->size(), 1u);  // removing: its producer still holds it
  ASSERT_TRUE(producer.close().ok());
  EXPECT_TRUE(eventually([&] { return client_->list()->empty(); }));
  EXPECT_EQ(producer.committed(), 10u);  // the object still answers
}

// `shmstreamd --ephemeral` (tests, shmstream-bench): stopped, it cancels and removes every
// stream in memory, waking a blocked reader (of a stream removed already, still held, too); a
// persistent stream stays on disk.
TEST(Ephemeral, AStoppedEphemeralDaemonLeavesNothingInMemory) {
  TestDaemon daemon({"--ephemeral"});
  auto client = connect_to(daemon);
  auto producer = client.create("gone").value();
  ASSERT_TRUE(producer.append("0123456789").ok());
  CreateOptions on_disk;
  on_disk.persistent = true;
  auto kept = client.create("kept", on_disk).value();
  ASSERT_TRUE(kept.append("abc").ok());
  ASSERT_TRUE(kept.close().ok());
  auto reader = client.open("gone").value();
  ASSERT_TRUE(reader.seek(10).ok());
  auto removed_producer = client.create("removed").value();
  auto removed_reader = client.open("removed").value();
  ASSERT_TRUE(client.remove("removed").ok());
  ASSERT_TRUE(client.stat("removed").value().removing);
  ASSERT_FALSE(daemon.segment_files().empty());
  Status status;
  Status removed_status;
  std::thread t([&] { status = reader.next(16, 30s).status(); });
  std::thread t2([&] { removed_status = removed_reader.next(16, 30s).status(); });
  int stopped = daemon.stop();
  t.join();
  t2.join();
  EXPECT_TRUE(WIFEXITED(stopped) && WEXITSTATUS(stopped) == 0) << stopped;
  EXPECT_EQ(status.code(), ErrorCode::kCancelled) << status.to_string();
  EXPECT_EQ(removed_status.code(), ErrorCode::kCancelled) << removed_status.to_string();
  EXPECT_TRUE(daemon.segment_files().empty());
  size_t on_disk_files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(daemon.persist_dir())) {
    on_disk_files += entry.path().filename().string().rfind("shmstream.", 0) == 0 ? 1 : 0;
  }
  EXPECT_GE(on_disk_files, 1u);  // the persistent stream's segment
}

TEST_F(Lifecycle, AKilledReaderProcessNoLongerCounts) {
  auto producer = client_->create("counted").value();
  Child cat =
      Child::spawn({bin_dir() + "/shmstream", "cat", "counted"}, false, true, daemon_.env());
  ASSERT_TRUE(producer.append("x").ok());
  char c = 0;
  ASSERT_EQ(::read(cat.stdout_fd(), &c, 1), 1);  // it has opened and read
  EXPECT_EQ(client_->stat("counted")->readers, 1u);
  cat.kill(SIGKILL);
  cat.wait(10s);
  EXPECT_TRUE(eventually([&] { return client_->stat("counted")->readers == 0; }));
  ASSERT_TRUE(producer.close().ok());
}

TEST_F(Lifecycle, CliWriteCatLsStatAndErrors) {
  constexpr size_t kBytes = 16 << 20;
  std::vector<std::byte> data(kBytes);
  fill_random(21, 0, data.data(), data.size());
  Child writer =
      Child::spawn({bin_dir() + "/shmstream", "write", "cli"}, true, false, daemon_.env());
  const pid_t writer_pid = writer.pid();
  ASSERT_TRUE(eventually([&] { return client_->stat("cli").ok(); }));  // created: cat may start
  Child cat = Child::spawn({bin_dir() + "/shmstream", "cat", "cli"}, false, true, daemon_.env());
  std::string out;
  std::thread drain([&] { out = read_all(cat.stdout_fd()); });
  size_t off = 0;
  while (off < kBytes) {
    ssize_t n = ::write(writer.stdin_fd(), data.data() + off, kBytes - off);
    ASSERT_GT(n, 0);
    off += static_cast<size_t>(n);
  }
  writer.close_stdin();
  int ws = writer.wait(30s);
  ASSERT_TRUE(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) << ws;
  int cs = cat.wait(30s);
  drain.join();
  ASSERT_TRUE(WIFEXITED(cs) && WEXITSTATUS(cs) == 0) << cs;
  ASSERT_EQ(out.size(), kBytes);
  EXPECT_EQ(std::memcmp(out.data(), data.data(), kBytes), 0);
  // After the writing, cat replays the whole stream.
  auto [s1, replay] = cli({"cat", "cli"});
  ASSERT_TRUE(WIFEXITED(s1) && WEXITSTATUS(s1) == 0);
  ASSERT_EQ(replay.size(), kBytes);
  EXPECT_EQ(std::memcmp(replay.data(), data.data(), kBytes), 0);

  auto [s2, ls] = cli({"ls", "--json"});
  EXPECT_NE(ls.find("\"name\":\"cli\""), std::string::npos) << ls;
  EXPECT_NE(ls.find("\"state\":\"closed\""), std::string::npos) << ls;
  EXPECT_NE(ls.find("\"bytes\":" + std::to_string(kBytes)), std::string::npos) << ls;
  EXPECT_NE(ls.find("\"readers\":"), std::string::npos);
  EXPECT_NE(ls.find("\"producer_pid\":" + std::to_string(writer_pid)), std::string::npos) << ls;
  auto [s3, stat] = cli({"stat", "cli", "--json"});
  EXPECT_NE(stat.find("\"bytes\":" + std::to_string(kBytes)), std::string::npos) << stat;

  for (auto args : std::vector<std::vector<std::string>>{{"write", "cli"},
                                                         {"cat", "missing"},
                                                         {"cat", "a/b"},
                                                         {"stat", ".."},
                                                         {"rm", "missing"},
                                                         {"frobnicate"}}) {
    auto [status, ignored] = cli(args);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << args[0];
  }
  auto [help_status, help] = cli({"--help"});
  EXPECT_TRUE(WIFEXITED(help_status) && WEXITSTATUS(help_status) == 0);
  EXPECT_NE(help.find("write"), std::string::npos);
}

TEST(Autostart, TheCliStartsADaemonWhenNoneAnswers) {
  char tmpl[] = "/tmp/shmstream-autostart-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string socket = std::string(tmpl) + "/ctl.sock";
  // The autostarted daemon honours the user's configuration file.
  const std::string config = std::string(tmpl) + "/config/shmstream/shmstreamd.conf";
  std::filesystem::create_directories(std::filesystem::path(config).parent_path());
  std::ofstream(config) << "# limits\nmax-streams-per-user = 3\ndefault-max-readers = 7\n";
  std::vector<std::string> env = {"SHMSTREAM_SOCKET=" + socket,
                                  "XDG_CONFIG_HOME=" + std::string(tmpl) + "/config"};
  {
    Child refused =
        Child::spawn({bin_dir() + "/shmstream", "--no-autostart", "ls"}, false, false, env);
    int status = refused.wait(30s);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  }
  // A command that only looks starts none: it says none runs.
  for (auto [args, name] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"ls"}, "ls"},
           {{"stat", "x"}, "stat"},
           {{"top", "--once"}, "top"},
           {{"daemon", "status"}, "daemon status"}}) {
    std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1",
                                     bin_dir() + "/shmstream"};
    argv.insert(argv.end(), args.begin(), args.end());
    Child looking = Child::spawn(argv, false, true, env);
    std::string said = looking.read_line(30s);
    int status = looking.wait(30s);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << args[0] << ": " << status;
    EXPECT_EQ(said, "shmstream: no daemon runs at " + socket + " (`" + name +
                        "` starts none; `shmstream write` or `shmstreamd` does)")
        << args[0];
    EXPECT_FALSE(std::filesystem::exists(socket)) << args[0] << " started a daemon";
  }
  Child write = Child::spawn({bin_dir() + "/shmstream", "write", "x"}, false, true, env);
  int status = write.wait(30s);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // Its stream goes before the daemon does (a stopped daemon keeps its in-memory streams).
  Child rm = Child::spawn({bin_dir() + "/shmstream", "rm", "x"}, false, false, env);
  status = rm.wait(30s);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::ifstream lock(socket + ".lock");
  pid_t daemon = 0;
  lock >> daemon;
  ASSERT_GT(daemon, 0);
  EXPECT_EQ(::kill(daemon, 0), 0);
  auto run = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1",
                                     bin_dir() + "/shmstream"};
    argv.insert(argv.end(), args.begin(), args.end());
    Child child = Child::spawn(argv, false, true, env);
    std::string out = read_all(child.stdout_fd());
    return std::pair(child.wait(30s), out);
  };
  auto [status_status, said] = run({"daemon", "status"});
  EXPECT_TRUE(WIFEXITED(status_status) && WEXITSTATUS(status_status) == 0) << said;
  EXPECT_THAT(said, ::testing::HasSubstr("config file:   " + config + "\n"));
  EXPECT_THAT(said, ::testing::HasSubstr("per user 3 streams"));
  EXPECT_THAT(said, ::testing::HasSubstr("7 readers per stream by default"));
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, daemon, 0));
  ASSERT_GE(pidfd, 0);
  // `daemon stop` returns once it exited; again, there is nothing to stop.
  auto [stop_status, stopped] = run({"daemon", "stop"});
  EXPECT_TRUE(WIFEXITED(stop_status) && WEXITSTATUS(stop_status) == 0) << stopped;
  EXPECT_EQ(stopped, "shmstream: stopped shmstreamd (pid " + std::to_string(daemon) + ") at " +
                         socket + "; its streams stay for the next one\n");
  pollfd p{pidfd, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 1) << "`daemon stop` returned before the daemon exited";
  close(pidfd);
  auto [again_status, again] = run({"daemon", "stop"});
  EXPECT_TRUE(WIFEXITED(again_status) && WEXITSTATUS(again_status) == 0) << again;
  EXPECT_EQ(again, "shmstream: no daemon runs at " + socket + ": nothing to stop\n");
  std::filesystem::remove_all(tmpl);
}

}  // namespace
}  // namespace shmstream::test
