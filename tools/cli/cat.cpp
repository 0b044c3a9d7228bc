// `shmstream cat NAME`: copies a stream to stdout straight from the mapping, following it until
// it ends; records one per line (or length-framed); optionally as a named cursor.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "terminal.hpp"

namespace shmstream_cli {
namespace {

// Hands `bytes` to the pipe at fd without copying them: the pipe references the pages of the
// mapping. Only for bytes that never change again (an unbounded stream's committed bytes; a
// ring's are overwritten). False on a broken pipe or error.
bool vmsplice_all(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    ssize_t n = ::vmsplice(fd, &iov, 1, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  return true;
}

struct CatOptions {
  std::string name;
  std::optional<uint64_t> offset;
  std::string cursor;
  bool no_follow = false;
  bool records = false;
  Format format = Format::kLine;
  bool format_given = false;
  bool from_end = false;                 // start at the committed end: new data only
  std::optional<uint64_t> max_records;   // stop after this many records
  std::optional<double> idle_timeout_s;  // end (exit 0) after this long with no new data
  bool wait = false;                     // wait for NAME to appear
  bool skip_overrun = false;             // rings: jump to the oldest offset, say what was lost
  bool json = false;                     // records as JSON lines
  std::string exec;                      // --exec: run this per batch instead of stdout
  uint64_t batch = 1;                    // --exec: records per run at most
  bool batch_given = false;
};

// Where cat's output goes: stdout, or one run of an --exec command per batch, the batch on its
// stdin. With a named cursor, a batch is committed once it was delivered: written into stdout
// (at least once to the pipe, not to whatever reads it) or taken by a command that exited 0
// (at least once to the command; exactly once unless cat itself dies between the command's
// exit and the commit).
class Sink {
 public:
  Sink(shmstream::Reader& reader, std::string command, std::string cursor)
      : reader_(reader), command_(std::move(command)), cursor_(std::move(cursor)) {
    // A command that leaves part of its input unread must not kill cat (its exit status says
    // whether it took the batch).
    if (!command_.empty()) signal(SIGPIPE, SIG_IGN);
  }
  bool execs() const { return !command_.empty(); }

  // Delivers `bytes`, which hold the stream's [first, end) as `records` records (0: bytes),
  // then commits `end` for a cursor. Exits cat quietly when stdout's reader went away; fails
  // when the command did not exit 0 (nothing committed: the next run delivers it again).
  void deliver(std::span<const std::byte> bytes, uint64_t first, uint64_t end, uint64_t records) {
    if (first == end && bytes.empty()) return;
    if (command_.empty()) {
      if (!write_all(STDOUT_FILENO, bytes)) {
        if (errno == EPIPE) std::exit(0);
        fail(std::string("writing stdout: ") + std::strerror(errno));
      }
    } else {
      run(bytes, first, end, records);
    }
    if (!cursor_.empty()) check(reader_.commit(end, 0));
  }

 private:
  // Runs `sh -c COMMAND` with `bytes` on its stdin and SHMSTREAM_* describing them in its
  // environment; fail()s unless it exits 0.
  void run(std::span<const std::byte> bytes, uint64_t first, uint64_t end, uint64_t records) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) fail(std::string("pipe: ") + std::strerror(errno));
    std::vector<std::string> env_strings = {
        "SHMSTREAM_STREAM=" + reader_.name(), "SHMSTREAM_OFFSET=" + std::to_string(first),
        "SHMSTREAM_END=" + std::to_string(end), "SHMSTREAM_RECORDS=" + std::to_string(records)};
    std::vector<char*> env;
    for (auto& e : env_strings) env.push_back(e.data());
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "SHMSTREAM_STREAM=", 17) != 0 &&
          std::strncmp(*e, "SHMSTREAM_OFFSET=", 17) != 0 &&
          std::strncmp(*e, "SHMSTREAM_END=", 14) != 0 &&
          std::strncmp(*e, "SHMSTREAM_RECORDS=", 18) != 0) {
        env.push_back(*e);
      }
    }
    env.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, p[0], STDIN_FILENO);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    const char* argv[] = {"/bin/sh", "-c", command_.c_str(), nullptr};
    pid_t child = 0;
    int rc = posix_spawn(&child, "/bin/sh", &actions, &attr, const_cast<char**>(argv), env.data());
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    ::close(p[0]);
    if (rc != 0) {
      ::close(p[1]);
      fail(std::string("cannot run /bin/sh for --exec: ") + std::strerror(rc));
    }
    // EPIPE: the command stopped reading; its exit status decides.
    (void)write_all(p[1], bytes);
    ::close(p[1]);
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
    const char* abbrev = WIFSIGNALED(status) ? sigabbrev_np(WTERMSIG(status)) : nullptr;
    const std::string how =
        WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                          : "was killed by signal " + std::to_string(WTERMSIG(status)) +
                                (abbrev != nullptr ? std::string(" (SIG") + abbrev + ")" : "");
    const std::string what = records != 0 ? std::to_string(records) + " record(s)"
                                          : std::to_string(end - first) + " bytes";
    fail("stream \"" + reader_.name() + "\": --exec command " + how + " on " + what +
         " at offsets " + std::to_string(first) + " to " + std::to_string(end) +
         (cursor_.empty() ? std::string()
                          : "; cursor \"" + cursor_ + "\" stays at " + std::to_string(first) +
                                ", the next run delivers them again"));
  }

  shmstream::Reader& reader_;
  std::string command_;
  std::string cursor_;
};

// Whether `s` is valid UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    // How many continuation bytes follow (4: not a lead byte).
    const size_t extra = c < 0x80             ? 0
                         : (c & 0xE0) == 0xC0 ? 1
                         : (c & 0xF0) == 0xE0 ? 2
                         : (c & 0xF8) == 0xF0 ? 3
                                              : 4;
    if (extra == 4 || s.size() - i <= extra) return false;
    uint32_t cp = extra == 0 ? c : c & (0x3F >> extra);
    for (size_t k = 1; k <= extra; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      cp = cp << 6 | (next & 0x3F);
    }
    static constexpr uint32_t kLeast[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kLeast[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

std::string base64(std::span<const std::byte> data) {
  static constexpr char kDigits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  for (size_t i = 0; i < data.size(); i += 3) {
    uint32_t group = std::to_integer<uint32_t>(data[i]) << 16;
    if (i + 1 < data.size()) group |= std::to_integer<uint32_t>(data[i + 1]) << 8;
    if (i + 2 < data.size()) group |= std::to_integer<uint32_t>(data[i + 2]);
    out += kDigits[group >> 18 & 63];
    out += kDigits[group >> 12 & 63];
    out += i + 1 < data.size() ? kDigits[group >> 6 & 63] : '=';
    out += i + 2 < data.size() ? kDigits[group & 63] : '=';
  }
  return out;
}

// One record as a JSON line: {"offset":N,"length":L,"time_unix_ns":T,"data":"..."}, the payload
// as a string when it is UTF-8, else as "data_base64". `time_unix_ns`: when cat read it.
std::string json_record(const shmstream::Record& record) {
  const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  std::string_view text(reinterpret_cast<const char*>(record.data.data()), record.data.size());
  std::string out = "{\"offset\":" + std::to_string(record.offset) +
                    ",\"length\":" + std::to_string(record.data.size()) +
                    ",\"time_unix_ns\":" + std::to_string(now);
  out += valid_utf8(text) ? ",\"data\":" + shmstream::json_quote(text)
                          : ",\"data_base64\":\"" + base64(record.data) + "\"";
  return out + "}\n";
}

// How cat_bytes and cat_records wait and stop.
struct Pace {
  shmstream::Timeout idle = shmstream::kForever;  // kTimeout past it ends the copy, cleanly
  uint64_t max_records = UINT64_MAX;
  bool skip_overrun = false;
};

// Whether a failed read ends the copy cleanly (idle timeout), moves on (an overrun skipped: the
// reader now at the oldest offset, the loss said on stderr), or fails.
enum class After { kStop, kGoOn };
After on_read_error(shmstream::Reader& reader, const shmstream::Status& status, const Pace& pace) {
  if (status.code() == shmstream::ErrorCode::kTimeout && pace.idle != shmstream::kForever) {
    return After::kStop;
  }
  if (status.code() == shmstream::ErrorCode::kOverrun && pace.skip_overrun) {
    const uint64_t from = reader.position();
    const uint64_t to = status.offset();
    check(reader.seek(static_cast<int64_t>(to)));
    std::fprintf(stderr,
                 "shmstream: stream \"%s\": skipped %llu bytes overwritten before they "
                 "were read (offsets %llu to %llu)\n",
                 reader.name().c_str(), static_cast<unsigned long long>(to - std::min(to, from)),
                 static_cast<unsigned long long>(from), static_cast<unsigned long long>(to));
    return After::kGoOn;
  }
  fail(status.message());
}

// Copies the stream to stdout straight from the mapping; into a pipe, an unbounded stream's
// bytes are not even copied (vmsplice). With --exec, each command run gets what was committed
// when it started (up to kChunk bytes).
// With a named cursor, what reached stdout (or a command that exited 0) is committed after each
// write: a cat killed at any moment and started again repeats at most its last write.
int cat_bytes(shmstream::Reader& reader, uint64_t stop_at, bool splice, Sink& sink,
              const Pace& pace, Progress& progress) {
  uint64_t start = reader.position();
  while (reader.position() < stop_at) {
    progress.update(reader.position() - start);
    const uint64_t first = reader.position();
    auto view = reader.next(
        static_cast<size_t>(std::min<uint64_t>(kChunk, stop_at - reader.position())), pace.idle);
    if (!view.ok() && on_read_error(reader, view.status(), pace) == After::kGoOn) continue;
    if (!view.ok()) break;     // idle: a clean end
    if (view->empty()) break;  // clean end of stream
    if (splice) {
      if (!vmsplice_all(STDOUT_FILENO, *view)) {
        if (errno == EPIPE) return 0;
        fail(std::string("writing stdout: ") + std::strerror(errno));
      }
      sink.deliver({}, first, reader.position(), 0);  // commits
    } else {
      sink.deliver(*view, first, reader.position(), 0);
    }
  }
  progress.finish(reader.position() - start);
  return 0;
}

// Prints each record as a line, or length-framed; output is batched into kChunk writes (with
// --exec: `batch` records per command), and delivered whenever the reader would wait (so a live
// stream's records appear at once). With a named cursor, each delivery commits its records.
int cat_records(shmstream::Reader& reader, uint64_t stop_at, Format format, Sink& sink,
                uint64_t batch, const Pace& pace, Progress& progress) {
  uint64_t start = reader.position();
  std::vector<std::byte> out;
  out.reserve(sink.execs() ? 0 : kChunk);
  uint64_t batch_from = reader.position();  // the records in `out` start here
  uint64_t written_to = reader.position();  // and end here
  uint64_t in_batch = 0;                    // how many there are
  auto flush = [&] {
    sink.deliver(out, batch_from, written_to, in_batch);
    out.clear();
    batch_from = written_to;
    in_batch = 0;
  };
  for (uint64_t count = 0; reader.position() < stop_at && count < pace.max_records; ++count) {
    progress.update(reader.position() - start);
    // Nothing more committed yet: deliver what we have before waiting.
    if (in_batch != 0 && reader.committed() <= reader.position()) flush();
    auto record = reader.next_record(pace.idle);
    if (!record.ok()) {
      if (in_batch != 0) flush();
      if (on_read_error(reader, record.status(), pace) == After::kStop) break;
      batch_from = written_to = reader.position();
      --count;  // nothing delivered
      continue;
    }
    if (!*record) break;  // clean end of stream
    auto data = (*record)->data;
    size_t mark = out.size();
    if (format == Format::kLen) {
      auto length = static_cast<uint32_t>(data.size());
      const std::byte prefix[4] = {std::byte(length), std::byte(length >> 8),
                                   std::byte(length >> 16), std::byte(length >> 24)};
      out.insert(out.end(), prefix, prefix + 4);
    }
    if (format == Format::kJson) {
      std::string line = json_record(**record);
      auto bytes = std::as_bytes(std::span(line));
      out.insert(out.end(), bytes.begin(), bytes.end());
    } else {
      out.insert(out.end(), data.begin(), data.end());
    }
    if (format == Format::kLine) out.push_back(std::byte{'\n'});
    // A drop-oldest ring may have overwritten the record while we copied it.
    if (!reader.intact(**record)) {
      out.resize(mark);
      if (in_batch != 0) flush();
      fail("stream \"" + reader.name() + "\": record at offset " +
           std::to_string((*record)->offset) + " was overwritten while read (oldest now " +
           std::to_string(reader.oldest()) + ")");
    }
    written_to = reader.position();
    ++in_batch;
    if (sink.execs() ? in_batch >= batch : out.size() >= kChunk) flush();
  }
  if (in_batch != 0) flush();
  progress.finish(reader.position() - start);
  return 0;
}

int cmd_cat(shmstream::Client& client, const CatOptions& c) {
  const std::string& name = c.name;
  const std::string& cursor = c.cursor;
  const std::optional<uint64_t>& offset = c.offset;
  const bool no_follow = c.no_follow;
  shmstream::OpenOptions open_options;
  open_options.cursor = cursor;
  open_options.commit = shmstream::CommitMode::kExplicit;  // after each write to stdout
  auto opened = client.open(name, open_options);
  // --wait: until it appears (asked again and again, at most every 100 ms).
  for (auto pause = std::chrono::milliseconds(1);
       c.wait && !opened.ok() && opened.status().code() == shmstream::ErrorCode::kNotFound;
       pause = std::min(pause * 2, std::chrono::milliseconds(100))) {
    std::this_thread::sleep_for(pause);
    opened = client.open(name, open_options);
  }
  auto reader = take(std::move(opened));
  auto info = take(client.stat(name));
  if (c.records && !info.records) fail("stream \"" + name + "\" carries bytes, not records");
  if (c.format_given && !info.records)
    fail("--format applies to records streams; \"" + name + "\" carries bytes");
  if (c.json && !info.records) {
    fail("--json applies to records streams; \"" + name + "\" carries bytes");
  }
  if (c.max_records && !info.records) {
    fail("--max-records applies to records streams; \"" + name + "\" carries bytes");
  }
  if (c.batch_given && !info.records) {
    fail("--batch applies to records streams; \"" + name + "\" carries bytes");
  }
  if (offset) {
    // Past the end of a stream that ended, nothing will ever come: say so.
    if (info.state != shmstream::StreamState::kOpen && *offset > reader.committed()) {
      fail("stream \"" + name + "\": offset " + std::to_string(*offset) + " is past its end (" +
           std::to_string(reader.committed()) + " bytes; it is " +
           shmstream::to_string(info.state) + ")");
    }
    check(reader.seek(static_cast<int64_t>(*offset)));
  }
  if (c.from_end) check(reader.seek(0, shmstream::Whence::kEnd));
  Pace pace;
  if (c.idle_timeout_s) {
    pace.idle = std::chrono::duration_cast<shmstream::Timeout>(
        std::chrono::duration<double>(*c.idle_timeout_s));
  }
  pace.max_records = c.max_records.value_or(UINT64_MAX);
  pace.skip_overrun = c.skip_overrun;
  Sink sink(reader, c.exec, cursor);
  uint64_t stop_at = no_follow ? reader.committed() : UINT64_MAX;
  // Best effort: a bigger pipe takes more of the stream per system call.
  if (is_pipe(STDOUT_FILENO)) (void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, static_cast<int>(kChunk));
  // A progress line on the terminal, unless the output goes there too.
  Progress progress(name, "read", no_follow ? stop_at - std::min(stop_at, reader.position()) : 0);
  if (isatty(STDOUT_FILENO) == 1) progress.disable();
  if (info.records) {
    return cat_records(reader, stop_at, c.json ? Format::kJson : c.format, sink, c.batch, pace,
                       progress);
  }
  bool splice =
      !sink.execs() && is_pipe(STDOUT_FILENO) && info.retention == shmstream::Retention::kUnbounded;
  return cat_bytes(reader, stop_at, splice, sink, pace, progress);
}

}  // namespace

Command add_cat(CLI::App& app) {
  auto* cat = app.add_subcommand(
      "cat", "Copy stream NAME to stdout, following it until closed (records: one per line)");
  auto c = std::make_shared<CatOptions>();
  cat->add_option("NAME", c->name, "Stream name")->required();
  auto* offset = cat->add_option("--offset", c->offset,
                                 "Start at this byte offset (records: a record's offset)");
  cat->add_option("--cursor", c->cursor,
                  "Read as this named cursor: resume where it left off; what reaches stdout is "
                  "committed after each write (at least once)")
      ->excludes(offset);
  cat->add_flag("--no-follow", c->no_follow, "Stop at what is committed now instead of waiting");
  cat->add_flag("--from-end", c->from_end,
                "Start at the end: only what is written from now on (live streams)")
      ->excludes(offset);
  cat->add_option("-n,--max-records", c->max_records, "Stop after this many records");
  cat->add_option("--idle-timeout", c->idle_timeout_s,
                  "End (exit 0) once no new data came for this many seconds")
      ->check(CLI::Range(0.0, 86400.0 * 365));
  cat->add_flag("--wait", c->wait, "Wait for NAME to appear instead of failing");
  cat->add_flag("--skip-overrun", c->skip_overrun,
                "drop-oldest rings: when the stream overwrote what was to be read next, jump to "
                "the oldest offset kept and say on stderr how much was lost (instead of "
                "failing)");
  cat->add_flag("--records", c->records, "Expect a records stream (fail if it is not)");
  auto* format = add_format_option(cat, &c->format, "Records output");
  cat->add_flag("--json", c->json,
                "Records as JSON lines: offset, length, time read and the payload (\"data\", or "
                "\"data_base64\" when it is not UTF-8)")
      ->excludes(format);
  auto* exec = cat->add_option(
      "--exec", c->exec,
      "Run CMD (with sh -c) for each record, or each --batch of them, on its stdin, instead of "
      "writing stdout; with --cursor, commit after CMD exits 0, stop (committing nothing more) "
      "when it fails. CMD sees SHMSTREAM_STREAM, SHMSTREAM_OFFSET, SHMSTREAM_END and "
      "SHMSTREAM_RECORDS");
  exec->type_name("CMD");
  auto* batch = cat->add_option("--batch", c->batch, "With --exec: up to N records per CMD run")
                    ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 32))
                    ->needs(exec);
  auto prepare = [c, format, batch] {
    c->format_given = format->count() != 0;
    c->batch_given = batch->count() != 0;
  };
  return Command{cat, prepare, [c](shmstream::Client& client) { return cmd_cat(client, *c); }};
}

}  // namespace shmstream_cli
