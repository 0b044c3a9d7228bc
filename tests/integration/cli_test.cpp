// The CLI's records, framing, retention and captured-command modes, through a private daemon.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

// u32 little-endian length + payload, the CLI's --format=len.
std::string len_framed(const std::vector<std::string>& records) {
  std::string out;
  for (const auto& r : records) {
    auto n = static_cast<uint32_t>(r.size());
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
    out += r;
  }
  return out;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override { client_ = std::make_unique<Client>(connect_to(daemon_)); }
  std::pair<int, std::string> cli(const std::vector<std::string>& args,
                                  const std::string& input = "") {
    return run_cli(daemon_, args, input);
  }
  // Every record of a records stream, through the library.
  std::vector<std::string> records_of(const std::string& name) {
    auto reader = client_->open(name).value();
    std::vector<std::string> out;
    for (;;) {
      auto r = reader.next_record(10s);
      EXPECT_TRUE(r.ok()) << r.status().to_string();
      if (!r.ok() || !*r) break;
      out.emplace_back(reinterpret_cast<const char*>((*r)->data.data()), (*r)->data.size());
    }
    return out;
  }

  TestDaemon daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(Cli, LinesBecomeRecordsAndComeBackAsLines) {
  auto [ws, ignored] = cli({"write", "lines", "--records"}, "one\ntwo\n\nlast without newline");
  ASSERT_TRUE(exited_with(ws, 0)) << ws;
  EXPECT_EQ(records_of("lines"),
            (std::vector<std::string>{"one", "two", "", "last without newline"}));
  auto [cs, out] = cli({"cat", "lines", "--records"});
  ASSERT_TRUE(exited_with(cs, 0)) << cs;
  EXPECT_EQ(out, "one\ntwo\n\nlast without newline\n");
  auto info = client_->stat("lines").value();
  EXPECT_TRUE(info.records);
  EXPECT_EQ(info.state, StreamState::kClosed);
}

TEST_F(Cli, LengthFramedRecordsRoundTripBinaryPayloadsExactly) {
  // Newlines, NULs and an empty record: only length framing keeps them apart.
  std::vector<std::string> records = {std::string("a\nb\0c", 5), "", std::string(70000, '\n'),
                                      "tail"};
  auto [ws, ignored] = cli({"write", "bin", "--records", "--format=len"}, len_framed(records));
  ASSERT_TRUE(exited_with(ws, 0)) << ws;
  EXPECT_EQ(records_of("bin"), records);
  auto [cs, out] = cli({"cat", "bin", "--format=len"});
  ASSERT_TRUE(exited_with(cs, 0)) << cs;
  EXPECT_EQ(out, len_framed(records));
  // And back in: cat's output is write's input.
  auto [ws2, ignored2] = cli({"write", "bin2", "--records", "--format", "len"}, out);
  ASSERT_TRUE(exited_with(ws2, 0));
  EXPECT_EQ(records_of("bin2"), records);
}

TEST_F(Cli, TruncatedFramingAbortsTheStreamAndKeepsWhatWasCommitted) {
  std::string input = len_framed({"whole", "also whole"});
  input += std::string(
      "\x09\x00\x00\x00"
      "abc",
      7);  // announces 9 bytes, has 3
  auto [ws, ignored] = cli({"write", "cut", "--records", "--format=len"}, input);
  EXPECT_TRUE(exited_with(ws, 1)) << ws;
  auto info = client_->stat("cut").value();
  EXPECT_EQ(info.state, StreamState::kAborted);
  auto reader = client_->open("cut").value();
  for (std::string want : {"whole", "also whole"}) {
    auto r = reader.next_record(10s);
    ASSERT_TRUE(r.ok() && *r);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>((*r)->data.data()), (*r)->data.size()),
              want);
  }
  EXPECT_EQ(reader.next_record(10s).status().code(), ErrorCode::kProducerDied);
}

TEST_F(Cli, BadOptionsAreRefusedBeforeAnythingIsCreated) {
  for (auto args : std::vector<std::vector<std::string>>{
           {"write", "x", "--retention", "block"},  // no capacity
           {"write", "x", "--capacity", "4K"},      // not a ring
           {"write", "x", "--retention", "sideways", "--capacity", "4K"},
           {"write", "x", "--retention", "block", "--capacity", "lots"},
           {"write", "x", "--format", "len"},  // not records
           {"write", "x", "--records", "--format", "xml"},
           {"write", "x", "--"},           // no command
           {"cat", "x", "--", "true"}}) {  // only write runs one
    auto [status, out] = cli(args);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << args[1] << " " << args[2];
  }
  EXPECT_EQ(client_->stat("x").status().code(), ErrorCode::kNotFound);
  // A bytes stream is not a records stream.
  ASSERT_TRUE(exited_with(cli({"write", "plain"}, "bytes").first, 0));
  EXPECT_TRUE(exited_with(cli({"cat", "plain", "--records"}).first, 1));
}

TEST_F(Cli, LsAndStatShowRetentionTheOldestOffsetAndTheKind) {
  // 256 KiB through a 64 KiB drop-oldest ring: the oldest offset moved on.
  std::string input(256 << 10, 'x');
  auto [ws, ignored] =
      cli({"write", "ring", "--retention", "drop-oldest", "--capacity", "64K"}, input);
  ASSERT_TRUE(exited_with(ws, 0)) << ws;
  auto info = client_->stat("ring").value();
  ASSERT_GT(info.oldest, 0u);
  auto [ls_status, ls] = cli({"ls"});
  ASSERT_TRUE(exited_with(ls_status, 0));
  EXPECT_NE(ls.find("RETENTION"), std::string::npos) << ls;
  EXPECT_NE(ls.find("drop-oldest:64K"), std::string::npos) << ls;
  EXPECT_NE(ls.find(std::to_string(info.oldest)), std::string::npos) << ls;
  auto [js, json] = cli({"ls", "--json"});
  EXPECT_NE(json.find("\"retention\":\"drop-oldest\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"oldest\":" + std::to_string(info.oldest)), std::string::npos) << json;
  EXPECT_NE(json.find("\"ring_capacity\":65536"), std::string::npos) << json;
  EXPECT_NE(json.find("\"records\":false"), std::string::npos) << json;
  auto [ss, stat] = cli({"stat", "ring"});
  EXPECT_NE(stat.find("retention:     drop-oldest:64K"), std::string::npos) << stat;
  // A new reader starts at the oldest offset kept, and reads the ring's last 64 KiB...
  auto [cs, out] = cli({"cat", "ring"});
  EXPECT_TRUE(exited_with(cs, 0)) << cs;
  EXPECT_EQ(out.size(), input.size() - info.oldest);
  // ... while one asking for offset 0 is told where the ring now starts.
  auto [zs, zero] = run_cli(daemon_, {"cat", "ring", "--offset", "0"}, "", 30s, true);
  EXPECT_TRUE(exited_with(zs, 1)) << zs;
  EXPECT_NE(zero.find("overrun"), std::string::npos) << zero;
  EXPECT_NE(zero.find(std::to_string(info.oldest)), std::string::npos) << zero;
}

// The expected output of `seq 1 N`.
std::string seq_output(int n) {
  std::string out;
  for (int i = 1; i <= n; ++i) out += std::to_string(i) + "\n";
  return out;
}

TEST_F(Cli, ACapturedCommandReachesFourReadersIdentically) {
  constexpr int kLines = 300000;  // ~2 MB
  Child writer = Child::spawn({bin_dir() + "/shmstream", "write", "cmd", "--", "sh", "-c",
                               "read go; seq 1 " + std::to_string(kLines)},
                              true, false, daemon_.env());
  ASSERT_TRUE(eventually([&] { return client_->stat("cmd").ok(); }));
  // Four readers attached before the command writes anything; each follows to the end.
  std::vector<std::string> outs(4);
  std::vector<Child> cats;
  std::vector<std::thread> drains;
  for (int i = 0; i < 4; ++i) {
    cats.push_back(
        Child::spawn({bin_dir() + "/shmstream", "cat", "cmd"}, false, true, daemon_.env()));
  }
  for (int i = 0; i < 4; ++i) {
    drains.emplace_back([&, i] { outs[i] = read_all(cats[i].stdout_fd()); });
  }
  ASSERT_TRUE(eventually([&] { return client_->stat("cmd").value().readers == 4; }));
  ASSERT_EQ(::write(writer.stdin_fd(), "go\n", 3), 3);
  writer.close_stdin();
  EXPECT_TRUE(exited_with(writer.wait(30s), 0));
  for (auto& c : cats) EXPECT_TRUE(exited_with(c.wait(30s), 0));
  for (auto& d : drains) d.join();
  const std::string want = seq_output(kLines);
  for (const auto& out : outs) EXPECT_TRUE(out == want) << out.size() << " vs " << want.size();
  // A late joiner replays the same bytes.
  auto [cs, replay] = cli({"cat", "cmd"});
  EXPECT_TRUE(replay == want);
  EXPECT_EQ(client_->stat("cmd").value().state, StreamState::kClosed);
}

TEST_F(Cli, AFailingCommandAbortsTheStreamWithItsStatus) {
  auto [ws, ignored] = cli({"write", "bad", "--", "sh", "-c", "echo partial; exit 7"});
  EXPECT_TRUE(exited_with(ws, 7)) << ws;
  EXPECT_EQ(client_->stat("bad").value().state, StreamState::kAborted);
  auto [cs, out] = cli({"cat", "bad"});
  EXPECT_EQ(out, "partial\n");  // what was committed stays readable
  EXPECT_TRUE(exited_with(cs, 1)) << cs;
  // A command that cannot start leaves no stream behind.
  auto [ns, ignored2] = cli({"write", "nocmd", "--", "/nonexistent/command"});
  EXPECT_TRUE(exited_with(ns, 127)) << ns;  // as a shell says it
  EXPECT_EQ(client_->stat("nocmd").status().code(), ErrorCode::kNotFound);
  // A records stream from a command: one record per output line.
  auto [rs, ignored3] = cli({"write", "recs", "--records", "--", "seq", "1", "3"});
  ASSERT_TRUE(exited_with(rs, 0));
  EXPECT_EQ(records_of("recs"), (std::vector<std::string>{"1", "2", "3"}));
}

// Every way `write` can end a stream badly reaches its readers (cat, the library), `stat`, `ls`
// and the JSON as what it was, not as a crash.
TEST_F(Cli, EveryKindOfAbortReachesItsReadersWithItsReason) {
  auto reason_of = [&](const std::string& name) {
    auto info = client_->stat(name);
    EXPECT_TRUE(info.ok()) << info.status().to_string();
    return info.ok() && info->abort_reason ? *info->abort_reason : AbortReason{};
  };
  auto cat_error = [&](const std::string& name) {
    auto [status, out] = run_cli(daemon_, {"cat", name}, "", 30s, /*with_stderr=*/true);
    EXPECT_TRUE(exited_with(status, 1)) << status;
    return out;
  };
  // The command's exit status.
  auto [st, ignored] = cli({"write", "status", "--", "sh", "-c", "echo x; exit 3"});
  EXPECT_TRUE(exited_with(st, 3)) << st;
  EXPECT_EQ(reason_of("status"), (AbortReason{AbortKind::kExitStatus, 3, "sh"}));
  EXPECT_THAT(cat_error("status"),
              HasSubstr("stream \"status\": aborted: its command `sh` exited with status 3"));
  {  // The library's readers say the same.
    auto reader = client_->open("status").value();
    char buf[8];
    EXPECT_TRUE(reader.read(std::as_writable_bytes(std::span(buf)), 10s).ok());  // "x\n"
    Status ended = reader.read(std::as_writable_bytes(std::span(buf)), 10s).status();
    EXPECT_EQ(ended.code(), ErrorCode::kProducerDied);
    EXPECT_EQ(ended.message(), "stream \"status\": aborted: its command `sh` exited with status 3");
  }
  // The signal that killed it.
  auto [sg, ignored2] = cli({"write", "signal", "--", "sh", "-c", "echo x; kill -9 $$"});
  EXPECT_TRUE(exited_with(sg, 128 + 9)) << sg;
  EXPECT_EQ(reason_of("signal"), (AbortReason{AbortKind::kSignal, 9, "sh"}));
  EXPECT_THAT(cat_error("signal"), HasSubstr("its command `sh` was killed by signal 9 (SIGKILL)"));
  // The size limit.
  auto [sz, ignored3] = cli({"write", "big", "--max-bytes", "4096"}, std::string(5000, 'x'));
  EXPECT_TRUE(exited_with(sz, 1)) << sz;
  EXPECT_EQ(reason_of("big").kind, AbortKind::kSizeLimit);
  EXPECT_THAT(cat_error("big"), HasSubstr("it reached its size limit (max bytes 4096)"));
  // Interrupted (SIGTERM; Ctrl-C is SIGINT), and killed outright.
  for (int signal : {SIGTERM, SIGKILL}) {
    std::string name = signal == SIGTERM ? "interrupted" : "killed";
    Child writer =
        Child::spawn({bin_dir() + "/shmstream", "write", name}, true, false, daemon_.env());
    ASSERT_EQ(::write(writer.stdin_fd(), "abc", 3), 3);
    ASSERT_TRUE(eventually([&] {
      auto info = client_->stat(name);
      return info.ok() && info->bytes == 3;
    }));
    const pid_t pid = writer.pid();
    writer.kill(signal);
    int status = writer.wait(10s);
    ASSERT_TRUE(eventually([&] { return client_->stat(name).value().abort_reason.has_value(); }));
    if (signal == SIGTERM) {
      EXPECT_TRUE(exited_with(status, 128 + SIGTERM)) << status;
      EXPECT_EQ(reason_of(name), (AbortReason{AbortKind::kInterrupted, SIGTERM, ""}));
      EXPECT_THAT(cat_error(name),
                  HasSubstr("its producer was interrupted by signal 15 (SIGTERM)"));
    } else {
      EXPECT_EQ(reason_of(name), (AbortReason{AbortKind::kProducerDied, pid, ""}));
      EXPECT_THAT(cat_error(name),
                  HasSubstr("aborted: producer died (pid " + std::to_string(pid) + ")"));
    }
  }
  // An explicit abort, through the library, as a reader of the library sees it.
  auto producer = client_->create("explicit").value();
  auto reader = client_->open("explicit").value();
  ASSERT_TRUE(producer.abort("upstream \"feed\" lost\n").ok());
  char buf[8];
  EXPECT_THAT(reader.read(std::as_writable_bytes(std::span(buf)), 10s).status().message(),
              HasSubstr("aborted: aborted by its producer: upstream \"feed\" lost?"));
  // stat, ls and the JSON say it too (JSON-escaped).
  auto [ss, stat_out] = cli({"stat", "status"});
  EXPECT_THAT(stat_out, HasSubstr("aborted:       its command `sh` exited with status 3\n"));
  auto [ls, ls_out] = cli({"ls"});
  EXPECT_THAT(ls_out,
              HasSubstr("\nsignal: aborted: its command `sh` was killed by signal 9 (SIGKILL)\n"));
  auto [js, json] = cli({"stat", "explicit", "--json"});
  EXPECT_THAT(json, HasSubstr("\"abort_reason\":{\"kind\":\"explicit\",\"code\":0,"
                              "\"message\":\"upstream \\\"feed\\\" lost?\","));
  // A stream that ended well has none.
  ASSERT_TRUE(exited_with(cli({"write", "fine"}, "ok").first, 0));
  EXPECT_THAT(cli({"stat", "fine", "--json"}).second, HasSubstr("\"abort_reason\":null"));
}

TEST(CliIdentity, VersionsAndTheDaemonsStatus) {
  TestDaemon daemon({"--max-streams-per-user", "7", "--default-max-readers", "5"});
  auto [vs, version] = run_cli(daemon, {"--version"});
  EXPECT_TRUE(exited_with(vs, 0)) << vs;
  EXPECT_EQ(version, std::string("shmstream ") + shmstream::version() + "\n");
  Child shmstreamd = Child::spawn({bin_dir() + "/shmstreamd", "--version"}, false, true);
  EXPECT_EQ(shmstreamd.read_line(10s), std::string("shmstreamd ") + shmstream::version());
  EXPECT_TRUE(exited_with(shmstreamd.wait(10s), 0));

  auto client = connect_to(daemon);
  auto kept = client.create("kept").value();
  ASSERT_TRUE(kept.append(std::string(1 << 20, 'k')).ok());
  auto other = client.create("other").value();
  auto info = client.daemon_info();
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_EQ(info->version, shmstream::version());
  EXPECT_EQ(info->pid, static_cast<uint32_t>(daemon.pid()));
  EXPECT_EQ(info->uid, geteuid());
  EXPECT_EQ(info->socket, daemon.socket_path());
  EXPECT_EQ(info->streams, 2u);
  EXPECT_GE(info->memory_bytes, uint64_t{1} << 20);
  EXPECT_EQ(info->max_streams_per_user, 7u);
  EXPECT_EQ(info->default_max_readers, 5u);
  EXPECT_GE(info->connections, 1u);
  const auto now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  EXPECT_LE(info->started_unix_ns, static_cast<uint64_t>(now_ns));
  EXPECT_GT(info->started_unix_ns, static_cast<uint64_t>(now_ns) - 600'000'000'000ULL);

  auto [ss, status] = run_cli(daemon, {"daemon", "status"});
  EXPECT_TRUE(exited_with(ss, 0)) << ss;
  EXPECT_THAT(status, HasSubstr(std::string("shmstreamd ") + shmstream::version() + ", pid " +
                                std::to_string(daemon.pid())));
  EXPECT_THAT(status, HasSubstr("socket:        " + daemon.socket_path() + "\n"));
  EXPECT_THAT(status, HasSubstr("streams:       2 live, 0 removed but still held\n"));
  EXPECT_THAT(status, HasSubstr("per user 7 streams"));
  auto [js, json] = run_cli(daemon, {"daemon", "status", "--json"});
  EXPECT_TRUE(exited_with(js, 0)) << js;
  EXPECT_THAT(json, HasSubstr("\"pid\":" + std::to_string(daemon.pid()) + ","));
  EXPECT_THAT(json, HasSubstr("\"max_streams_per_user\":7,"));
  EXPECT_THAT(json, HasSubstr("\"streams\":2,"));
  // A missing stream is missing from this daemon: its errors name the socket.
  const std::string where = " (daemon at " + daemon.socket_path() + ")";
  EXPECT_THAT(client.stat("missing").status().message(), HasSubstr(where));
  EXPECT_THAT(client.open("missing").status().message(), HasSubstr(where));
  EXPECT_THAT(client.remove("missing").message(), HasSubstr(where));
  auto [cs, cat] = run_cli(daemon, {"cat", "missing"}, "", 30s, /*with_stderr=*/true);
  EXPECT_TRUE(exited_with(cs, 1)) << cs;
  EXPECT_THAT(cat, HasSubstr("stream \"missing\"")) << cat;
  EXPECT_THAT(cat, HasSubstr(where)) << cat;
}

TEST_F(Cli, UsageErrorsExitTwoWithOneLineAndAHint) {
  for (auto [args, said] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{}, "shmstream: no command given (see `shmstream --help`)\n"},
           {{"frobnicate"}, "shmstream: unknown command \"frobnicate\" (see `shmstream --help`)\n"},
           {{"write"}, "shmstream: NAME is required (see `shmstream write --help`)\n"},
           {{"ls", "--bogus"},
            "shmstream: The following argument was not expected: --bogus (see `shmstream ls "
            "--help`)\n"},
           {{"cat", "x", "--offset", "abc"},
            "shmstream: Could not convert: --offset = abc (see `shmstream cat --help`)\n"},
           {{"bridge"}, "shmstream: A subcommand is required (see `shmstream bridge --help`)\n"},
           {{"daemon", "status", "extra"},
            "shmstream: The following argument was not expected: extra (see `shmstream daemon "
            "status --help`)\n"}}) {
    auto [status, out] = run_cli(daemon_, args, "", 30s, /*with_stderr=*/true);
    EXPECT_TRUE(exited_with(status, 2)) << status;
    EXPECT_EQ(out, said);
  }
  // --help and --version are no errors.
  EXPECT_TRUE(exited_with(cli({"--help"}).first, 0));
  EXPECT_TRUE(exited_with(cli({"cat", "--help"}).first, 0));
  // The daemon says its usage errors alike.
  std::vector<std::string> argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1",
                                   bin_dir() + "/shmstreamd", "--no-such-option"};
  Child daemon = Child::spawn(argv, false, true);
  EXPECT_EQ(daemon.read_line(10s),
            "shmstreamd: The following argument was not expected: --no-such-option (see "
            "`shmstreamd --help`)");
  EXPECT_TRUE(exited_with(daemon.wait(10s), 2));
}

TEST_F(Cli, RmTakesSeveralNamesAndReportsEachItCannotRemove) {
  for (const char* name : {"a", "b", "c"}) {
    ASSERT_TRUE(exited_with(cli({"write", name}, "x").first, 0));
  }
  auto [status, out] = run_cli(daemon_, {"rm", "a", "missing", "c"}, "", 30s, true);
  EXPECT_TRUE(exited_with(status, 1)) << status;  // one of them failed...
  EXPECT_THAT(out, HasSubstr("shmstream: stream \"missing\""));
  EXPECT_EQ(client_->stat("a").status().code(), ErrorCode::kNotFound);  // ...the others went
  EXPECT_EQ(client_->stat("c").status().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(client_->stat("b").ok());
  EXPECT_TRUE(exited_with(cli({"rm", "b"}).first, 0));
  EXPECT_EQ(client_->stat("b").status().code(), ErrorCode::kNotFound);
}

TEST_F(Cli, CatWaitsIdlesCountsStartsAtTheEndAndSkipsOverruns) {
  const std::string shmstream = bin_dir() + "/shmstream";
  // --wait: a reader started before its producer.
  Child early = Child::spawn({shmstream, "cat", "--wait", "late"}, false, true, daemon_.env());
  ASSERT_TRUE(exited_with(cli({"write", "late"}, "hello\n").first, 0));
  EXPECT_EQ(early.read_line(30s), "hello");
  EXPECT_TRUE(exited_with(early.wait(30s), 0));
  // --idle-timeout: ends cleanly while the stream is still open.
  auto open = client_->create("open").value();
  ASSERT_TRUE(open.append("abc").ok());
  auto [is, idle] = cli({"cat", "open", "--idle-timeout", "0.2"});
  EXPECT_TRUE(exited_with(is, 0)) << is;
  EXPECT_EQ(idle, "abc");
  // --from-end: only what comes after it started (it waits at offset 3 before "new" is written).
  Child from_end =
      Child::spawn({shmstream, "cat", "open", "--from-end"}, false, true, daemon_.env());
  ASSERT_TRUE(eventually([&] {
    auto info = client_->stat("open").value();
    return info.attached.size() == 1 && info.attached[0].position == 3;
  }));
  ASSERT_TRUE(open.append("new\n").ok());
  ASSERT_TRUE(open.close().ok());
  EXPECT_EQ(from_end.read_line(30s), "new");
  EXPECT_TRUE(exited_with(from_end.wait(30s), 0));
  // -n/--max-records.
  ASSERT_TRUE(exited_with(cli({"write", "five", "--records"}, "1\n2\n3\n4\n5\n").first, 0));
  auto [ns, two] = cli({"cat", "five", "-n", "2"});
  EXPECT_TRUE(exited_with(ns, 0)) << ns;
  EXPECT_EQ(two, "1\n2\n");
  auto [nb, bytes_n] = run_cli(daemon_, {"cat", "open", "-n", "2"}, "", 30s, true);
  EXPECT_TRUE(exited_with(nb, 1)) << nb;
  EXPECT_THAT(bytes_n, HasSubstr("--max-records applies to records streams"));
  // --offset past the end of an ended stream: an error, not a wait for ever.
  auto [ps, past] = run_cli(daemon_, {"cat", "five", "--offset", "100000"}, "", 30s, true);
  EXPECT_TRUE(exited_with(ps, 1)) << ps;
  EXPECT_THAT(past, HasSubstr("offset 100000 is past its end"));
  // --skip-overrun: a drop-oldest ring overwrote offset 0; cat jumps to the oldest and says so.
  CreateOptions ring;
  ring.retention = Retention::kDropOldest;
  ring.ring_capacity = 4096;
  auto wrapped = client_->create("wrapped", ring).value();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(wrapped.append(std::string(4096, 'a' + i)).ok());
  ASSERT_TRUE(wrapped.close().ok());
  auto [fs, failed] = run_cli(daemon_, {"cat", "wrapped", "--offset", "0"}, "", 30s, true);
  EXPECT_TRUE(exited_with(fs, 1)) << fs;  // without the option: the overrun is an error
  auto [ks, kept] =
      run_cli(daemon_, {"cat", "wrapped", "--offset", "0", "--skip-overrun"}, "", 30s, true);
  EXPECT_TRUE(exited_with(ks, 0)) << ks;
  EXPECT_THAT(kept, HasSubstr("stream \"wrapped\": skipped 8192 bytes overwritten before they "
                              "were read (offsets 0 to 8192)\n"));
  EXPECT_THAT(kept, HasSubstr(std::string(4096, 'c')));
  EXPECT_EQ(kept.find("aaaa"), std::string::npos);  // nothing overwritten is delivered
  EXPECT_EQ(kept.find("bbbb"), std::string::npos);
}

TEST_F(Cli, CatJsonKeepsRecordsWithNewlinesApartAndCarriesBinaryAsBase64) {
  std::vector<std::string> records = {"a\nb \"q\"", "", std::string("\xff\xfe\x00", 3),
                                      "\xc3\xa9t\xc3\xa9"};
  ASSERT_TRUE(exited_with(
      cli({"write", "mixed", "--records", "--format=len"}, len_framed(records)).first, 0));
  auto [status, out] = cli({"cat", "mixed", "--json"});
  ASSERT_TRUE(exited_with(status, 0)) << status;
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u) << out;  // one line per record, the newline inside kept escaped
  EXPECT_THAT(lines[0], HasSubstr("{\"offset\":0,\"length\":7,\"time_unix_ns\":"));
  EXPECT_THAT(lines[0], HasSubstr(",\"data\":\"a\\nb \\\"q\\\"\"}"));
  EXPECT_THAT(lines[1], HasSubstr("\"length\":0,"));
  EXPECT_THAT(lines[1], HasSubstr("\"data\":\"\"}"));
  EXPECT_THAT(lines[2], HasSubstr("\"length\":3,"));
  EXPECT_THAT(lines[2], HasSubstr("\"data_base64\":\"//4A\"}"));  // not UTF-8
  EXPECT_THAT(lines[3], HasSubstr("\"data\":\"\xc3\xa9t\xc3\xa9\"}"));
  ASSERT_TRUE(exited_with(cli({"write", "plain"}, "x").first, 0));
  auto [bs, bytes] = run_cli(daemon_, {"cat", "plain", "--json"}, "", 30s, true);
  EXPECT_TRUE(exited_with(bs, 1)) << bs;
  EXPECT_THAT(bytes, HasSubstr("--json applies to records streams"));
}

TEST_F(Cli, LsAlignsItsColumnsWhateverTheNamesAndPutsDetailsBelowTheTable) {
  const std::string long_name(60, 'n');
  ASSERT_TRUE(exited_with(cli({"write", long_name}, std::string(3 << 20, 'x')).first, 0));
  ASSERT_TRUE(exited_with(cli({"write", "s"}, "abc").first, 0));
  OpenOptions as_cursor;
  as_cursor.cursor = "audit";
  auto reader = client_->open("s", as_cursor).value();
  auto [status, out] = cli({"ls"});
  ASSERT_TRUE(exited_with(status, 0)) << status;
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_GE(lines.size(), 4u) << out;
  // Every table line has its STATE column where the header has it.
  const size_t state_at = lines[0].find("STATE");
  ASSERT_NE(state_at, std::string::npos) << out;
  EXPECT_GT(state_at, long_name.size()) << out;
  for (size_t i = 1; i <= 2; ++i) EXPECT_EQ(lines[i].substr(state_at, 6), "closed") << out;
  EXPECT_EQ(lines[1].rfind(long_name, 0), 0u) << out;  // sorted by name: "nnn..." < "s"
  EXPECT_THAT(lines[1], HasSubstr(" 3.0 MiB ")) << out;
  EXPECT_THAT(lines[2], HasSubstr(" 3 B ")) << out;
  // The cursor's line comes after the table, named.
  EXPECT_EQ(lines[3].rfind("s: cursor audit", 0), 0u) << out;
  // --bytes: raw numbers.
  auto [rs, raw] = cli({"ls", "--bytes"});
  EXPECT_THAT(raw, HasSubstr(" " + std::to_string(3 << 20) + " ")) << raw;
}

TEST_F(Cli, RecordsOfRandomSizesReachEightSubscriberProcessesWholeAndInOrder) {
  // 0 bytes to 1 MiB each, random contents; the framed input doubles as the expected output.
  std::vector<std::string> records;
  uint64_t state = 0x5eed;
  auto next = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  for (int i = 0; i < 40; ++i) {
    size_t size = i == 0 ? 0 : i == 1 ? (1 << 20) : next() % ((1 << 20) + 1);
    std::string r(size, '\0');
    fill_random(next(), 0, reinterpret_cast<std::byte*>(r.data()), size);
    records.push_back(std::move(r));
  }
  const std::string framed = len_framed(records);
  Child writer =
      Child::spawn({bin_dir() + "/shmstream", "write", "rnd", "--records", "--format=len"}, true,
                   false, daemon_.env());
  ASSERT_TRUE(eventually([&] { return client_->stat("rnd").ok(); }));
  std::vector<Child> subscribers;
  std::vector<std::string> outs(8);
  std::vector<std::thread> drains;
  auto subscribe = [&](int i) {
    subscribers.push_back(Child::spawn({bin_dir() + "/shmstream", "cat", "rnd", "--format=len"},
                                       false, true, daemon_.env()));
    drains.emplace_back(
        [&outs, fd = subscribers.back().stdout_fd(), i] { outs[i] = read_all(fd); });
  };
  for (int i = 0; i < 4; ++i) subscribe(i);  // before the first record
  ASSERT_TRUE(eventually([&] { return client_->stat("rnd").value().readers == 4; }));
  const size_t half = framed.size() / 2;
  ASSERT_EQ(::write(writer.stdin_fd(), framed.data(), half), static_cast<ssize_t>(half));
  for (int i = 4; i < 8; ++i) subscribe(i);  // midway
  size_t off = half;
  while (off < framed.size()) {
    ssize_t n = ::write(writer.stdin_fd(), framed.data() + off, framed.size() - off);
    ASSERT_GT(n, 0);
    off += static_cast<size_t>(n);
  }
  writer.close_stdin();
  ASSERT_TRUE(exited_with(writer.wait(30s), 0));
  for (auto& c : subscribers) EXPECT_TRUE(exited_with(c.wait(30s), 0));
  for (auto& d : drains) d.join();
  const uint64_t want = [&] {
    Digest d;
    d.update(framed.data(), framed.size());
    return d.value();
  }();
  for (int i = 0; i < 8; ++i) {
    Digest d;
    d.update(outs[i].data(), outs[i].size());
    EXPECT_EQ(outs[i].size(), framed.size()) << "subscriber " << i;
    EXPECT_EQ(d.value(), want) << "subscriber " << i;
  }
}

// `cat --cursor` killed midway (blocked writing to a full pipe) and started again: every line
// reaches stdout at least once, in order; only the last unconfirmed write may come again.
TEST_F(Cli, ACatWithACursorKilledMidwayResumesWithNothingLost) {
  constexpr int kLines = 200'000;
  CreateOptions options;
  options.records = true;
  auto producer = client_->create("log", options).value();
  for (int i = 0; i < kLines; ++i) ASSERT_TRUE(producer.publish("line " + std::to_string(i)).ok());
  ASSERT_TRUE(producer.close().ok());
  std::string first;
  {
    Child cat = Child::spawn({bin_dir() + "/shmstream", "cat", "log", "--cursor", "tail"}, false,
                             true, daemon_.env());
    // Take a quarter of the output, and at least its first confirmed write (with a small pipe,
    // as when the user's pipe buffers are over their limit and cat cannot enlarge it, that
    // write completes only as we read), then kill it while it waits for the pipe to drain.
    auto confirmed = [&] { return client_->stat("log").value().cursors.at(0).position > 0; };
    while (std::count(first.begin(), first.end(), '\n') < kLines / 4 || !confirmed()) {
      char buf[65536];
      ssize_t n = ::read(cat.stdout_fd(), buf, sizeof(buf));
      ASSERT_GT(n, 0) << "cat ended early";
      first.append(buf, static_cast<size_t>(n));
    }
    cat.kill(SIGKILL);
    EXPECT_TRUE(WIFSIGNALED(cat.wait(10s)));
    first += read_all(cat.stdout_fd());  // what it wrote before it died
  }
  first.resize(first.rfind('\n') + 1);  // a write cut short by the kill
  auto held = client_->stat("log").value().cursors;
  ASSERT_EQ(held.size(), 1u);
  EXPECT_GT(held[0].position, 0u);
  auto [status, second] = cli({"cat", "log", "--cursor", "tail"});
  ASSERT_TRUE(exited_with(status, 0)) << status;
  std::istringstream lines(first + second);
  int next = 0;
  size_t repeated_bytes = 0;
  for (std::string line; std::getline(lines, line);) {
    int index = std::stoi(line.substr(5));
    ASSERT_EQ(line, "line " + std::to_string(index));
    ASSERT_LE(index, next) << "line " << next << " was lost";
    if (index == next) {
      ++next;
    } else {
      repeated_bytes += line.size() + 1;
    }
  }
  EXPECT_EQ(next, kLines);
  // cat confirms each write of at most 1 MiB: at most that much comes again.
  EXPECT_LE(repeated_bytes, size_t{1} << 20) << "resumed far behind what it had confirmed";
  // Everything is confirmed now: no lag.
  auto info = client_->stat("log").value();
  EXPECT_EQ(info.cursors[0].position, info.bytes);
}

// stat (and its JSON) count a records stream's records, and show the write rate the daemon
// measures, the age of the last write it saw and the memory the stream's files take.
TEST_F(Cli, StatShowsRecordCountsWriteRateLastWriteAndMemory) {
  CreateOptions options;
  options.records = true;
  auto producer = client_->create("m", options).value();
  auto idle = client_->create("idle").value();
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(producer.publish(std::string(1000, 'r')).ok());
  // The daemon samples lengths every 50 ms, rates over a second.
  ASSERT_TRUE(eventually([&] { return client_->stat("m").value().write_rate_bytes_per_s > 0; }));
  auto info = client_->stat("m").value();
  EXPECT_EQ(info.record_count, 100u);
  ASSERT_TRUE(info.last_write_age.has_value());
  EXPECT_LE(info.write_rate_bytes_per_s, static_cast<double>(info.bytes))
      << "a rate over at least a second cannot exceed what was written";
  EXPECT_GE(info.allocated_bytes, info.bytes) << "tmpfs pages hold every committed byte";
  // No more writes: the rate falls to 0 and the last write gets older.
  ASSERT_TRUE(eventually([&] { return client_->stat("m").value().write_rate_bytes_per_s == 0; }));
  auto later = client_->stat("m").value();
  ASSERT_TRUE(later.last_write_age.has_value());
  EXPECT_GT(*later.last_write_age, *info.last_write_age);
  EXPECT_EQ(later.record_count, 100u);

  auto [status, text] = cli({"stat", "m"});
  EXPECT_TRUE(exited_with(status, 0)) << status;
  EXPECT_THAT(text, HasSubstr("records:       100\n"));
  EXPECT_THAT(text, HasSubstr("writing:       0 B/s; last write "));
  EXPECT_THAT(text, HasSubstr("stored in:     shared memory, taking "));
  auto [json_status, json] = cli({"stat", "m", "--json"});
  EXPECT_TRUE(exited_with(json_status, 0)) << json_status;
  EXPECT_THAT(json, HasSubstr("\"record_count\":100,"));
  EXPECT_THAT(json, HasSubstr("\"write_rate_bytes_per_s\":0.0,"));
  EXPECT_THAT(json, ::testing::ContainsRegex("\"last_write_age_ms\":[0-9]+,"));
  EXPECT_THAT(json, HasSubstr("\"allocated_bytes\":"));

  // Never written: no last write, and a bytes stream counts no records.
  auto [idle_status, idle_text] = cli({"stat", "idle"});
  EXPECT_THAT(idle_text, HasSubstr("no write seen by this daemon"));
  EXPECT_THAT(idle_text, Not(HasSubstr("records:")));
  auto [idle_json_status, idle_json] = cli({"stat", "idle", "--json"});
  EXPECT_THAT(idle_json, HasSubstr("\"record_count\":0,"));
  EXPECT_THAT(idle_json, HasSubstr("\"last_write_age_ms\":null,"));
}

// deploy/bash-completion/shmstream: commands, subcommands, options (from --help), option values
// and the daemon's stream names.
TEST_F(Cli, BashCompletionOffersCommandsOptionsValuesAndStreamNames) {
  auto alpha = client_->create("alpha").value();
  auto beta = client_->create("beta").value();
  // The words of a command line, the last one being completed; returns the sorted offers.
  auto offers = [&](std::vector<std::string> words) {
    std::string array;
    for (const auto& w : words) array += " '" + w + "'";
    const std::string script = std::string("source ") + SHMSTREAM_SOURCE_DIR +
                               "/deploy/bash-completion/shmstream; COMP_WORDS=('" + bin_dir() +
                               "/shmstream'" + array +
                               "); COMP_CWORD=" + std::to_string(words.size()) +
                               "; _shmstream; printf '%s\\n' \"${COMPREPLY[@]}\" | sort";
    Child bash = Child::spawn({"/bin/bash", "--norc", "-c", script}, false, true, daemon_.env());
    std::string out = read_all(bash.stdout_fd());
    EXPECT_TRUE(exited_with(bash.wait(30s), 0)) << script;
    return out;
  };
  EXPECT_EQ(offers({"c"}), "cat\n");
  EXPECT_EQ(offers({"daemon", "s"}), "status\nstop\n");
  EXPECT_EQ(offers({"cat", "--from-"}), "--from-end\n");
  EXPECT_EQ(offers({"cat", "--ex"}), "--exec\n");
  EXPECT_EQ(offers({"write", "x", "--retention", "d"}), "drop-oldest\n");
  EXPECT_EQ(offers({"cat", ""}), "alpha\nbeta\n");
  EXPECT_EQ(offers({"rm", "alpha", "b"}), "beta\n");
  EXPECT_EQ(offers({"--no-autostart", "stat", "al"}), "alpha\n");
}

// `cat --cursor ID --exec CMD`: a CMD that fails, and one killed midway, commit nothing; the
// next run delivers their records again. Every record reaches a CMD that succeeded exactly once,
// in order, none lost; --batch hands several records to one run.
TEST_F(Cli, CatExecCommitsARecordOnlyAfterItsCommandSucceeded) {
  constexpr int kJobs = 20;
  CreateOptions options;
  options.records = true;
  auto producer = client_->create("jobs", options).value();
  std::vector<uint64_t> offsets;
  for (int i = 0; i < kJobs; ++i) {
    offsets.push_back(producer.committed());
    ASSERT_TRUE(producer.publish("job " + std::to_string(i)).ok());
  }
  ASSERT_TRUE(producer.close().ok());
  const std::string dir = daemon_.dir();
  // Fails on job 5 the first time, SIGKILLs itself on job 11 the first time; records what it
  // took (with its offset) only when it succeeds.
  const std::string script =
      "rec=$(cat); n=${rec#job }; "
      "if [ \"$n\" = 5 ] && [ ! -e " +
      dir + "/failed ]; then : > " + dir +
      "/failed; exit 3; fi; "
      "if [ \"$n\" = 11 ] && [ ! -e " +
      dir + "/killed ]; then : > " + dir +
      "/killed; "
      "kill -9 $$; fi; "
      "echo \"$rec@$SHMSTREAM_OFFSET:$SHMSTREAM_RECORDS\" >> " +
      dir + "/delivered";
  const std::vector<std::string> args = {"cat",         "jobs",   "--cursor", "worker",
                                         "--no-follow", "--exec", script};
  auto cursor_at = [&] { return client_->stat("jobs").value().cursors.at(0).position; };

  auto [failed, failed_err] = run_cli(daemon_, args, "", 30s, true);
  EXPECT_TRUE(exited_with(failed, 1)) << failed;
  EXPECT_THAT(failed_err,
              HasSubstr("--exec command exited with status 3 on 1 record(s) at offsets " +
                        std::to_string(offsets[5])));
  EXPECT_THAT(failed_err, HasSubstr("cursor \"worker\" stays at " + std::to_string(offsets[5])));
  EXPECT_EQ(cursor_at(), offsets[5]);

  auto [killed, killed_err] = run_cli(daemon_, args, "", 30s, true);
  EXPECT_TRUE(exited_with(killed, 1)) << killed;
  EXPECT_THAT(killed_err, HasSubstr("was killed by signal 9 (SIGKILL)"));
  EXPECT_EQ(cursor_at(), offsets[11]);

  auto [done, done_out] = cli(args);
  EXPECT_TRUE(exited_with(done, 0)) << done;
  EXPECT_EQ(done_out, "") << "with --exec, nothing goes to stdout";
  EXPECT_EQ(cursor_at(), client_->stat("jobs").value().bytes);

  std::string expected;
  for (int i = 0; i < kJobs; ++i) {
    expected += "job " + std::to_string(i) + "@" + std::to_string(offsets[i]) + ":1\n";
  }
  std::ifstream delivered(dir + "/delivered");
  std::string got((std::istreambuf_iterator<char>(delivered)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, expected);

  // --batch 8: runs of 8, 8 and 4 records, each run's records on its stdin one per line.
  auto [batched, batched_out] =
      cli({"cat", "jobs", "--cursor", "batches", "--no-follow", "--batch", "8", "--exec",
           "echo \"$SHMSTREAM_OFFSET $SHMSTREAM_END $SHMSTREAM_RECORDS $(wc -l)\" >> " + dir +
               "/batches"});
  EXPECT_TRUE(exited_with(batched, 0)) << batched;
  std::ifstream batches(dir + "/batches");
  std::string runs((std::istreambuf_iterator<char>(batches)), std::istreambuf_iterator<char>());
  const uint64_t end = client_->stat("jobs").value().bytes;
  EXPECT_EQ(runs, std::to_string(offsets[0]) + " " + std::to_string(offsets[8]) + " 8 8\n" +
                      std::to_string(offsets[8]) + " " + std::to_string(offsets[16]) + " 8 8\n" +
                      std::to_string(offsets[16]) + " " + std::to_string(end) + " 4 4\n");
  // --batch needs --exec, and a records stream.
  auto [lone, lone_err] = run_cli(daemon_, {"cat", "jobs", "--batch", "2"}, "", 30s, true);
  EXPECT_TRUE(exited_with(lone, 2)) << lone_err;
}

}  // namespace
}  // namespace shmstream::test
