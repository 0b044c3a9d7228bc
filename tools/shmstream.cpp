// shmstream — command-line client: write a stream from stdin, cat it to stdout, list, stat and
// remove streams. Uses only the public client API. See `shmstream --help`.
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bridge/bridge.hpp"
#include "shmstream/client.hpp"
#include "terminal.hpp"

extern char** environ;

namespace {

constexpr size_t kChunk = 1 << 20;  // bytes moved per read/write system call

[[noreturn]] void fail(const std::string& message) {
  shmstream_cli::end_progress_line();
  std::fprintf(stderr, "shmstream: %s\n", message.c_str());
  std::exit(1);
}

void check(const shmstream::Status& status) {
  if (!status.ok()) fail(status.message());
}

template <typename T>
T take(shmstream::Result<T> result) {
  if (!result.ok()) fail(result.status().message());
  return std::move(result.value());
}

// Writes all of `bytes` to fd; false on a broken pipe or error.
bool write_all(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  return true;
}

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

bool is_pipe(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string state_of(const shmstream::StreamInfo& info) {
  if (info.removing) return "removing";
  // Open, its producer dead: waiting (up to its resume grace) for a successor.
  if (info.awaiting_producer) return "orphaned";
  return shmstream::to_string(info.state);
}

// "unbounded", or e.g. "block:4M" for a ring of 4 MiB.
std::string retention_of(const shmstream::StreamInfo& info) {
  std::string out = shmstream::to_string(info.retention);
  if (info.retention == shmstream::Retention::kUnbounded) return out;
  uint64_t c = info.ring_capacity;
  if (c % (1 << 30) == 0) return out + ":" + std::to_string(c >> 30) + "G";
  if (c % (1 << 20) == 0) return out + ":" + std::to_string(c >> 20) + "M";
  if (c % (1 << 10) == 0) return out + ":" + std::to_string(c >> 10) + "K";
  return out + ":" + std::to_string(c);
}

uint64_t lag_of(const shmstream::StreamInfo& info, const shmstream::CursorInfo& cursor) {
  return info.bytes - std::min(info.bytes, cursor.position);
}

std::string cursors_json(const shmstream::StreamInfo& info) {
  std::string out = "[";
  for (const auto& c : info.cursors) {
    out += (out.size() > 1 ? "," : "") + std::string("{\"name\":") + json_string(c.name) +
           ",\"position\":" + std::to_string(c.position) +
           ",\"lag\":" + std::to_string(lag_of(info, c)) +
           ",\"reader_pid\":" + std::to_string(c.reader_pid) + "}";
  }
  return out + "]";
}

// "  cursor NAME  at P  lag L  held by pid N" (or "idle"), one line per cursor.
void print_cursors(const shmstream::StreamInfo& info, const char* indent) {
  for (const auto& c : info.cursors) {
    std::string holder = c.reader_pid != 0 ? "held by pid " + std::to_string(c.reader_pid) : "idle";
    std::printf("%scursor %-20s at %14llu  lag %14llu  %s\n", indent, c.name.c_str(),
                static_cast<unsigned long long>(c.position),
                static_cast<unsigned long long>(lag_of(info, c)), holder.c_str());
  }
}

// A uid or gid as its name, if it has one ("1000" otherwise).
std::string user_name(uint32_t uid) {
  if (const passwd* pw = getpwuid(uid); pw != nullptr) return pw->pw_name;
  return std::to_string(uid);
}
std::string group_name(uint32_t gid) {
  if (const group* gr = getgrgid(gid); gr != nullptr) return gr->gr_name;
  return std::to_string(gid);
}

std::string info_json(const shmstream::StreamInfo& info) {
  return "{\"name\":" + json_string(info.name) + ",\"state\":\"" + state_of(info) +
         "\",\"stream_state\":\"" + shmstream::to_string(info.state) +
         "\",\"bytes\":" + std::to_string(info.bytes) +
         ",\"readers\":" + std::to_string(info.readers) +
         ",\"producer_pid\":" + std::to_string(info.producer_pid) +
         ",\"producer_uid\":" + std::to_string(info.producer_uid) +
         ",\"owner\":" + json_string(user_name(info.producer_uid)) +
         ",\"owner_gid\":" + std::to_string(info.owner_gid) +
         ",\"group\":" + json_string(group_name(info.owner_gid)) + ",\"mode\":\"" +
         shmstream::to_string(info.mode) + "\"" +
         ",\"max_bytes\":" + std::to_string(info.max_bytes) +
         ",\"created_unix_ns\":" + std::to_string(info.created_unix_ns) + ",\"retention\":\"" +
         shmstream::to_string(info.retention) +
         "\",\"ring_capacity\":" + std::to_string(info.ring_capacity) +
         ",\"oldest\":" + std::to_string(info.oldest) +
         ",\"records\":" + (info.records ? "true" : "false") +
         ",\"max_readers\":" + std::to_string(info.max_readers) +
         ",\"slowest_reader\":" + std::to_string(info.slowest_reader) +
         ",\"directory\":" + json_string(info.directory) +
         ",\"origin\":" + std::to_string(info.origin) +
         ",\"resume_grace_ms\":" + std::to_string(info.resume_grace.count()) +
         ",\"awaiting_producer\":" + (info.awaiting_producer ? "true" : "false") +
         ",\"cursors\":" + cursors_json(info) + "}";
}

shmstream::Client connect(const std::string& socket, bool no_autostart) {
  shmstream::ClientOptions options;
  options.socket_path = socket;
  options.autostart = !no_autostart;
  return take(shmstream::Client::connect(options));
}

// A --seconds option (fractions allowed) as milliseconds.
std::chrono::milliseconds milliseconds_of(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// "4096", "64K", "16MiB", "1G": bytes, with binary suffixes.
std::optional<uint64_t> parse_size(const std::string& text) {
  size_t used = 0;
  uint64_t value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  std::string suffix = text.substr(used);
  for (auto& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suffix.ends_with("IB")) suffix.resize(suffix.size() - 2);
  if (suffix.ends_with("B")) suffix.resize(suffix.size() - 1);
  int shift = suffix.empty()  ? 0
              : suffix == "K" ? 10
              : suffix == "M" ? 20
              : suffix == "G" ? 30
                              : -1;
  if (shift < 0 || value > (UINT64_MAX >> shift)) return std::nullopt;
  return value << shift;
}

enum class Format { kLine, kLen };  // records: one per line, or u32 little-endian length + bytes

struct WriteOptions {
  uint64_t max_bytes = 0;
  shmstream::Retention retention = shmstream::Retention::kUnbounded;
  std::string capacity;  // ring capacity, with suffix
  uint32_t max_readers = 0;
  bool records = false;
  Format format = Format::kLine;
  bool persistent = false;
  std::string directory;
  shmstream::StreamMode mode = shmstream::StreamMode::kOwner;
  double resume_grace_seconds = 0;   // see CreateOptions::resume_grace
  bool resume = false;               // take over an orphaned NAME instead of creating it
  std::vector<std::string> command;  // after "--": run it and stream its stdout
};

// Fills `buf` from fd until full or EOF; returns the count, or -1 with errno.
ssize_t read_full(int fd, std::byte* buf, size_t size) {
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, buf + got, size - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

// Where `write` takes its input from, and what becomes of the stream at the end of it.
class Input {
 public:
  // Stdin, or CMD's stdout through a pipe.
  explicit Input(const std::vector<std::string>& command) {
    if (command.empty()) return;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) fail(std::string("pipe: ") + std::strerror(errno));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, p[1], STDOUT_FILENO);
    std::vector<char*> argv;
    for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    int rc = posix_spawnp(&child_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(p[1]);
    if (rc != 0) {
      ::close(p[0]);
      spawn_error_ = "cannot run " + command[0] + ": " + std::strerror(rc);
      return;
    }
    fd_ = p[0];
    what_ = command[0];
  }
  ~Input() {
    if (fd_ != STDIN_FILENO) ::close(fd_);
  }
  int fd() const { return fd_; }
  const std::string& spawn_error() const { return spawn_error_; }
  const std::string& what() const { return what_; }
  // Stops the command early (the stream failed); no-op for stdin.
  void stop() {
    if (child_ > 0) kill(child_, SIGTERM);
  }
  // After EOF: empty if the input ended well, else why not (the command's exit status), with
  // the exit code `write` should return.
  std::pair<std::string, int> finish() {
    if (child_ <= 0) return {"", 0};
    ::close(fd_);
    fd_ = STDIN_FILENO;
    int status = 0;
    while (waitpid(child_, &status, 0) < 0 && errno == EINTR) {
    }
    child_ = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {"", 0};
    if (WIFEXITED(status)) {
      return {what_ + " exited with status " + std::to_string(WEXITSTATUS(status)),
              WEXITSTATUS(status)};
    }
    return {what_ + " was killed by signal " + std::to_string(WTERMSIG(status)),
            128 + WTERMSIG(status)};
  }

 private:
  int fd_ = STDIN_FILENO;
  pid_t child_ = 0;
  std::string what_ = "stdin";
  std::string spawn_error_;
};

// Copies the input into a bytes stream, reading straight into the reserved span (no extra
// copy). Returns an error message, or empty at EOF.
// `chunk`: the most reserved at once (a ring's reservations must fit in it, and a quarter of it
// lets readers work on the rest meanwhile). `limit`: an unbounded stream's maximum size; input
// that ends exactly there closes the stream, one byte more is the stream's too_large error.
std::string copy_bytes(shmstream::Producer& producer, int fd, size_t chunk, uint64_t limit,
                       shmstream_cli::Progress& progress) {
  if (is_pipe(fd)) (void)fcntl(fd, F_SETPIPE_SZ, static_cast<int>(kChunk));
  for (;;) {
    progress.update(producer.committed());
    uint64_t room = limit - std::min(limit, producer.committed());
    if (room == 0) {
      std::byte extra;
      ssize_t n = ::read(fd, &extra, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return std::string("reading input: ") + std::strerror(errno);
      if (n == 0) return "";
      return producer.append(std::span(&extra, 1)).message();
    }
    auto span = producer.reserve(static_cast<size_t>(std::min<uint64_t>(chunk, room)));
    if (!span.ok()) return span.status().message();
    ssize_t n = ::read(fd, span->data(), span->size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::string("reading input: ") + std::strerror(errno);
    if (n == 0) return "";
    if (auto s = producer.commit(static_cast<size_t>(n)); !s.ok()) return s.message();
  }
}

// Publishes one record per input line (without its newline; a last line without one counts).
std::string copy_lines(shmstream::Producer& producer, int fd, shmstream_cli::Progress& progress) {
  std::vector<std::byte> buf(kChunk);
  size_t filled = 0;
  uint64_t consumed = 0;  // input bytes taken
  for (;;) {
    progress.update(consumed);
    if (filled == buf.size()) buf.resize(buf.size() * 2);  // a line longer than the buffer
    ssize_t n = ::read(fd, buf.data() + filled, buf.size() - filled);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::string("reading input: ") + std::strerror(errno);
    size_t end = filled + static_cast<size_t>(n);
    consumed += static_cast<uint64_t>(n);
    size_t start = 0;
    size_t scan = filled;
    filled = end;
    for (;;) {
      auto* nl = static_cast<std::byte*>(std::memchr(buf.data() + scan, '\n', end - scan));
      if (nl == nullptr) break;
      size_t stop = static_cast<size_t>(nl - buf.data());
      if (auto s = producer.publish(std::span(buf.data() + start, stop - start)); !s.ok()) {
        return s.message();
      }
      start = scan = stop + 1;
    }
    if (n == 0) {
      if (start < end) {
        if (auto s = producer.publish(std::span(buf.data() + start, end - start)); !s.ok()) {
          return s.message();
        }
      }
      return "";
    }
    std::memmove(buf.data(), buf.data() + start, end - start);
    filled = end - start;
  }
}

// Publishes records framed as a u32 little-endian length then that many bytes, each read
// straight into its reserved frame.
std::string copy_len_framed(shmstream::Producer& producer, int fd,
                            shmstream_cli::Progress& progress) {
  uint64_t consumed = 0;  // input bytes taken
  for (uint64_t index = 0;; ++index) {
    progress.update(consumed);
    unsigned char len_bytes[4];
    ssize_t got = read_full(fd, reinterpret_cast<std::byte*>(len_bytes), 4);
    if (got < 0) return std::string("reading input: ") + std::strerror(errno);
    if (got == 0) return "";
    if (got < 4) {
      return "truncated input: record " + std::to_string(index) + " has a " + std::to_string(got) +
             "-byte length prefix (4 expected)";
    }
    uint32_t length =
        static_cast<uint32_t>(len_bytes[0]) | static_cast<uint32_t>(len_bytes[1]) << 8 |
        static_cast<uint32_t>(len_bytes[2]) << 16 | static_cast<uint32_t>(len_bytes[3]) << 24;
    auto span = producer.reserve_record(length);
    if (!span.ok()) {
      return "record " + std::to_string(index) + " of " + std::to_string(length) +
             " bytes: " + span.status().message();
    }
    got = read_full(fd, span->data(), length);
    if (got < 0) return std::string("reading input: ") + std::strerror(errno);
    if (static_cast<uint32_t>(got) < length) {
      return "truncated input: record " + std::to_string(index) + " announces " +
             std::to_string(length) + " bytes, the input ends after " + std::to_string(got);
    }
    if (auto s = producer.commit_record(length); !s.ok()) return s.message();
    consumed += 4 + uint64_t{length};
  }
}

// The ring capacity of --retention and --capacity (0 for unbounded); exits on a bad pair.
uint64_t ring_capacity(shmstream::Retention retention, const std::string& capacity) {
  bool ring = retention != shmstream::Retention::kUnbounded;
  if (ring && capacity.empty()) {
    fail(std::string("--retention ") + shmstream::to_string(retention) + " needs --capacity BYTES");
  }
  if (!ring && !capacity.empty()) fail("--capacity needs --retention drop-oldest or block");
  if (!ring) return 0;
  auto bytes = parse_size(capacity);
  if (!bytes || *bytes == 0) {
    fail("--capacity takes a size such as 4096, 64K or 16M, not \"" + capacity + "\"");
  }
  return *bytes;
}

// Creates NAME and fills it from stdin or a command's stdout. The stream closes when the input
// ends well, and is aborted (readers see "producer died" after what was committed) when it
// does not: a read error, malformed framing, or a command that fails.
int cmd_write(shmstream::Client& client, const std::string& name, const WriteOptions& w) {
  shmstream::CreateOptions options;
  options.max_bytes = w.max_bytes;
  options.records = w.records;
  options.max_readers = w.max_readers;
  options.retention = w.retention;
  options.persistent = w.persistent;
  options.mode = w.mode;
  options.resume_grace = milliseconds_of(w.resume_grace_seconds);
  if (!w.directory.empty()) {
    std::error_code ec;
    options.directory = std::filesystem::absolute(w.directory, ec).lexically_normal().string();
    if (!std::filesystem::is_directory(options.directory, ec)) {
      fail("--dir " + w.directory + ": not an existing directory");
    }
  }
  options.ring_capacity = ring_capacity(w.retention, w.capacity);
  const bool ring = options.ring_capacity != 0;
  auto producer = take(w.resume ? client.resume(name) : client.create(name, options));
  Input input(w.command);
  if (!input.spawn_error().empty()) {
    (void)producer.abort();  // the stream is removed next; nothing to report
    (void)client.remove(name, /*force=*/true);
    fail(input.spawn_error() + " (stream \"" + name + "\" removed)");
  }
  size_t chunk =
      ring ? static_cast<size_t>(std::clamp<uint64_t>(options.ring_capacity / 4, 1, kChunk))
           : kChunk;
  uint64_t limit = ring ? UINT64_MAX : take(client.stat(name)).max_bytes;
  // On a terminal, a progress line (of the input file's size, when it is a file).
  struct stat input_stat {};
  uint64_t total = fstat(input.fd(), &input_stat) == 0 && S_ISREG(input_stat.st_mode)
                       ? static_cast<uint64_t>(input_stat.st_size)
                       : 0;
  shmstream_cli::Progress progress(name, "written", total);
  if (isatty(input.fd()) == 1) progress.disable();  // someone types the input: leave the line
  std::string error = !w.records ? copy_bytes(producer, input.fd(), chunk, limit, progress)
                      : w.format == Format::kLen ? copy_len_framed(producer, input.fd(), progress)
                                                 : copy_lines(producer, input.fd(), progress);
  progress.finish(w.records ? total : producer.committed());
  if (!error.empty()) input.stop();
  auto [failed, code] = input.finish();
  if (error.empty() && failed.empty()) {
    check(producer.close());
    return 0;
  }
  (void)producer.abort();  // the error below is what the user needs to see
  std::fprintf(stderr, "shmstream: %s (stream \"%s\" aborted at %llu bytes)\n",
               (error.empty() ? failed : error).c_str(), name.c_str(),
               static_cast<unsigned long long>(producer.committed()));
  return error.empty() ? code : 1;
}

// Copies the stream to stdout straight from the mapping; into a pipe, an unbounded stream's
// bytes are not even copied (vmsplice).
// With a named cursor (`cursor`), what reached stdout is committed after each write: a cat
// killed at any moment and started again repeats at most its last write (at least once).
int cat_bytes(shmstream::Reader& reader, uint64_t stop_at, bool splice, bool cursor,
              shmstream_cli::Progress& progress) {
  uint64_t start = reader.position();
  while (reader.position() < stop_at) {
    progress.update(reader.position() - start);
    auto view =
        reader.next(static_cast<size_t>(std::min<uint64_t>(kChunk, stop_at - reader.position())));
    if (!view.ok()) fail(view.status().message());
    if (view->empty()) break;  // clean end of stream
    if (!(splice ? vmsplice_all(STDOUT_FILENO, *view) : write_all(STDOUT_FILENO, *view))) {
      if (errno == EPIPE) return 0;
      fail(std::string("writing stdout: ") + std::strerror(errno));
    }
    if (cursor) check(reader.commit());
  }
  progress.finish(reader.position() - start);
  return 0;
}

// Prints each record as a line, or length-framed; output is batched into kChunk writes, and
// flushed whenever the reader would wait (so a live stream's records appear at once).
// With a named cursor, each flush commits the records it wrote (see cat_bytes()).
int cat_records(shmstream::Reader& reader, uint64_t stop_at, Format format, bool cursor,
                shmstream_cli::Progress& progress) {
  uint64_t start = reader.position();
  std::vector<std::byte> out;
  out.reserve(kChunk);
  uint64_t written_to = reader.position();  // the records in `out` end here
  auto flush = [&] {
    if (!write_all(STDOUT_FILENO, out)) {
      if (errno == EPIPE) std::exit(0);
      fail(std::string("writing stdout: ") + std::strerror(errno));
    }
    out.clear();
    if (cursor) check(reader.commit(written_to, 0));
  };
  while (reader.position() < stop_at) {
    progress.update(reader.position() - start);
    // Nothing more committed yet: show what we have before waiting.
    if (!out.empty() && reader.committed() <= reader.position()) flush();
    auto record = reader.next_record();
    if (!record.ok()) {
      flush();
      fail(record.status().message());
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
    out.insert(out.end(), data.begin(), data.end());
    if (format == Format::kLine) out.push_back(std::byte{'\n'});
    // A drop-oldest ring may have overwritten the record while we copied it.
    if (!reader.intact(**record)) {
      out.resize(mark);
      flush();
      fail("stream \"" + reader.name() + "\": record at offset " +
           std::to_string((*record)->offset) + " was overwritten while read (oldest now " +
           std::to_string(reader.oldest()) + ")");
    }
    written_to = reader.position();
    if (out.size() >= kChunk) flush();
  }
  flush();
  progress.finish(reader.position() - start);
  return 0;
}

int cmd_cat(shmstream::Client& client, const std::string& name, std::optional<uint64_t> offset,
            bool no_follow, bool records, std::optional<Format> format, const std::string& cursor) {
  shmstream::OpenOptions open_options;
  open_options.cursor = cursor;
  open_options.commit = shmstream::CommitMode::kExplicit;  // after each write to stdout
  auto reader = take(client.open(name, open_options));
  auto info = take(client.stat(name));
  if (records && !info.records) fail("stream \"" + name + "\" carries bytes, not records");
  if (format && !info.records)
    fail("--format applies to records streams; \"" + name + "\" carries bytes");
  if (offset) check(reader.seek(static_cast<int64_t>(*offset)));
  bool with_cursor = !cursor.empty();
  uint64_t stop_at = no_follow ? reader.committed() : UINT64_MAX;
  // Best effort: a bigger pipe takes more of the stream per system call.
  if (is_pipe(STDOUT_FILENO)) (void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, static_cast<int>(kChunk));
  // A progress line on the terminal, unless the output goes there too.
  shmstream_cli::Progress progress(name, "read",
                                   no_follow ? stop_at - std::min(stop_at, reader.position()) : 0);
  if (isatty(STDOUT_FILENO) == 1) progress.disable();
  if (info.records) {
    return cat_records(reader, stop_at, format.value_or(Format::kLine), with_cursor, progress);
  }
  bool splice = is_pipe(STDOUT_FILENO) && info.retention == shmstream::Retention::kUnbounded;
  return cat_bytes(reader, stop_at, splice, with_cursor, progress);
}

int cmd_ls(shmstream::Client& client, bool json) {
  auto streams = take(client.list());
  if (json) {
    std::string out = "[";
    for (size_t i = 0; i < streams.size(); ++i) {
      out += (i ? "," : "") + info_json(streams[i]);
    }
    std::printf("%s]\n", out.c_str());
    return 0;
  }
  std::printf("%-24s %-9s %-8s %-12s %14s %14s %7s %8s %-12s %s\n", "NAME", "STATE", "KIND",
              "RETENTION", "OLDEST", "BYTES", "READERS", "PID", "OWNER", "MODE");
  for (const auto& s : streams) {
    std::printf("%-24s %-9s %-8s %-12s %14llu %14llu %7u %8u %-12s %s\n", s.name.c_str(),
                state_of(s).c_str(), s.records ? "records" : "bytes", retention_of(s).c_str(),
                static_cast<unsigned long long>(s.oldest), static_cast<unsigned long long>(s.bytes),
                s.readers, s.producer_pid, user_name(s.producer_uid).c_str(),
                shmstream::to_string(s.mode));
    if (!s.directory.empty()) std::printf("  persistent in %s\n", s.directory.c_str());
    print_cursors(s, "  ");
  }
  return 0;
}

int cmd_stat(shmstream::Client& client, const std::string& name, bool json) {
  auto info = take(client.stat(name));
  if (json) {
    std::printf("%s\n", info_json(info).c_str());
    return 0;
  }
  time_t created = static_cast<time_t>(info.created_unix_ns / 1'000'000'000);
  char when[64];
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", std::localtime(&created));
  std::printf(
      "name:          %s\nstate:         %s\nkind:          %s\nretention:     %s\n"
      "oldest:        %llu\nbytes:         %llu\nreaders:       %u (at most %u; slowest at %llu)\n"
      "producer pid:  %u\nproducer uid:  %u\nmax bytes:     %llu\ncreated:       %s\n",
      info.name.c_str(), state_of(info).c_str(), info.records ? "records" : "bytes",
      retention_of(info).c_str(), static_cast<unsigned long long>(info.oldest),
      static_cast<unsigned long long>(info.bytes), info.readers, info.max_readers,
      static_cast<unsigned long long>(info.slowest_reader), info.producer_pid, info.producer_uid,
      static_cast<unsigned long long>(info.max_bytes), when);
  std::printf("owner:         %s (uid %u), group %s (gid %u)\nmode:          %s\n",
              user_name(info.producer_uid).c_str(), info.producer_uid,
              group_name(info.owner_gid).c_str(), info.owner_gid, shmstream::to_string(info.mode));
  std::printf("stored in:     %s\n",
              info.directory.empty() ? "shared memory" : info.directory.c_str());
  if (info.resume_grace.count() != 0) {
    std::printf("resume grace:  %lld ms%s\n", static_cast<long long>(info.resume_grace.count()),
                info.awaiting_producer ? " (its producer died: awaiting a successor)" : "");
  }
  if (info.origin != 0) {
    std::printf("origin:        offset 0 here is offset %llu of the stream it republishes\n",
                static_cast<unsigned long long>(info.origin));
  }
  print_cursors(info, "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shmstream: shared-memory streams. One producer appends; any number of readers\n"
      "read the same bytes zero-copy, each at its own offset, live or replayed."};
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the subcommand
  std::string socket = shmstream::Client::default_socket_path();
  bool no_autostart = false;
  app.add_option("--socket", socket, "Control socket of shmstreamd (env SHMSTREAM_SOCKET)")
      ->capture_default_str();
  app.add_flag("--no-autostart", no_autostart, "Do not start shmstreamd if none answers");

  std::string name;
  auto* write = app.add_subcommand(
      "write",
      "Create NAME and copy stdin into it, or with `-- CMD ARGS...` the output of CMD; close at "
      "the end of the input (abort if CMD fails)");
  WriteOptions w;
  std::string write_format;
  write->add_option("NAME", name, "Stream name")->required();
  write->add_option("--max-bytes", w.max_bytes, "Longest the stream may grow (default: daemon's)");
  const std::map<std::string, shmstream::Retention> retentions = {
      {"unbounded", shmstream::Retention::kUnbounded},
      {"drop-oldest", shmstream::Retention::kDropOldest},
      {"block", shmstream::Retention::kBlock}};
  std::string retention = "unbounded";
  write->add_option("--retention", retention, "unbounded, drop-oldest or block")
      ->capture_default_str()
      ->check(CLI::IsMember(retentions));
  write->add_option("--capacity", w.capacity, "Ring capacity for drop-oldest/block (64K, 16M...)");
  write->add_option("--max-readers", w.max_readers, "Readers allowed at once (default: daemon's)");
  const std::map<std::string, shmstream::StreamMode> modes = {
      {"owner", shmstream::StreamMode::kOwner},
      {"group", shmstream::StreamMode::kGroup},
      {"everyone", shmstream::StreamMode::kEveryone}};
  write
      ->add_option("--mode", w.mode,
                   "Who may read it: owner (0600), group (0640: your primary group) or everyone "
                   "(0644); the owner and root always may, and only they may remove it")
      ->transform(CLI::CheckedTransformer(modes))
      ->default_str("owner");
  write->add_flag("--records", w.records, "A records stream: one record per input line");
  write
      ->add_option("--resume-grace", w.resume_grace_seconds,
                   "If this writer dies, keep NAME open this many seconds for another "
                   "`write --resume` to go on where it stopped (readers wait on)")
      ->check(CLI::Range(0.0, 86400.0));
  write->add_flag("--resume", w.resume,
                  "Take over NAME, whose writer died within its resume grace, and append at its "
                  "committed end (instead of creating NAME)");
  write->add_flag("--persistent", w.persistent,
                  "Keep it on disk, in the daemon's persistent directory: it survives a daemon "
                  "restart and a reboot");
  write->add_option("--dir", w.directory,
                    "Keep it on disk in this directory (implies --persistent)");
  write
      ->add_option("--format", write_format,
                   "Records framing: line (default) or len (u32 little-endian length + bytes)")
      ->check(CLI::IsMember({"line", "len"}));

  auto* cat = app.add_subcommand(
      "cat", "Copy stream NAME to stdout, following it until closed (records: one per line)");
  std::optional<uint64_t> offset;
  std::string cursor;
  bool no_follow = false;
  bool cat_records_flag = false;
  std::string cat_format;
  cat->add_option("NAME", name, "Stream name")->required();
  auto* offset_option =
      cat->add_option("--offset", offset, "Start at this byte offset (records: a record's offset)");
  cat->add_option("--cursor", cursor,
                  "Read as this named cursor: resume where it left off; what reaches stdout is "
                  "committed after each write (at least once)")
      ->excludes(offset_option);
  cat->add_flag("--no-follow", no_follow, "Stop at what is committed now instead of waiting");
  cat->add_flag("--records", cat_records_flag, "Expect a records stream (fail if it is not)");
  cat->add_option("--format", cat_format,
                  "Records output: line (default) or len (u32 little-endian length + bytes)")
      ->check(CLI::IsMember({"line", "len"}));

  auto* ls = app.add_subcommand("ls", "List streams: name, state, bytes, readers, producer pid");
  bool json = false;
  ls->add_flag("--json", json, "Print a JSON array");

  auto* stat = app.add_subcommand("stat", "Show one stream");
  stat->add_option("NAME", name, "Stream name")->required();
  stat->add_flag("--json", json, "Print a JSON object");

  auto* top = app.add_subcommand(
      "top",
      "Live view of every stream: write rate, readers and their lag, retention use, state; "
      "q quits");
  shmstream_cli::TopOptions top_options;
  double interval_seconds = 1.0;
  top->add_flag("--once", top_options.once,
                "Print one frame as plain text and exit (rates over one interval), for scripts");
  top->add_option("--interval", interval_seconds, "Seconds between frames")
      ->capture_default_str()
      ->check(CLI::Range(0.05, 3600.0));

  auto* bridge = app.add_subcommand(
      "bridge", "Carry streams through Redis Streams to other machines: bridge out, bridge in");
  bridge->require_subcommand(1);
  auto* bridge_out = bridge->add_subcommand(
      "out",
      "Follow stream NAME into the Redis stream KEY until NAME ends, exactly once across "
      "restarts of the bridge and of Redis (entry IDs carry the offsets); reads as the named "
      "cursor bridge:KEY, so `ls` and `top` show its lag. Plain TCP: anyone on the network path "
      "can read or alter the data and the password; keep Redis on a trusted network");
  shmstream_cli::BridgeOutOptions bridge_options;
  std::string bridge_to;
  std::string bridge_chunk = "64K";
  bridge_out->add_option("NAME", name, "Local stream")->required();
  bridge_out->add_option("--to", bridge_to, "redis://[:PASSWORD@]HOST[:PORT]/KEY")->required();
  bridge_out->add_option("--maxlen", bridge_options.maxlen,
                         "Trim the Redis stream to about this many entries (XADD MAXLEN ~ N)");
  bridge_out->add_option("--chunk", bridge_chunk, "Byte streams: most bytes per Redis entry")
      ->capture_default_str();
  bridge_out->add_option("--batch", bridge_options.batch, "Entries per pipelined round trip")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));

  auto* bridge_in = bridge->add_subcommand(
      "in",
      "Follow the Redis stream KEY (written by `bridge out`) into the local stream NAME until "
      "its end, exactly once: NAME is created with a resume grace, and a restarted bridge "
      "resumes it where it stopped. Local readers fan it out zero-copy. Plain TCP, as for out");
  shmstream_cli::BridgeInOptions bridge_in_options;
  std::string bridge_from;
  double bridge_grace_seconds = 30;
  bridge_in->add_option("KEY", bridge_in_options.key, "Redis stream key")->required();
  bridge_in->add_option("--from", bridge_from, "redis://[:PASSWORD@]HOST[:PORT]")->required();
  bridge_in->add_option("--as", name, "Local stream to create (or resume)")->required();
  bridge_in
      ->add_option("--grace", bridge_grace_seconds,
                   "Seconds NAME stays open for a restarted bridge after this one dies")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
  bridge_in->add_option("--batch", bridge_in_options.batch, "Most entries per XREAD")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  bridge_in->add_option("--max-bytes", bridge_in_options.max_bytes,
                        "Longest NAME may grow (default: daemon's)");
  std::string bridge_in_retention = "unbounded";
  std::string bridge_in_capacity;
  bridge_in
      ->add_option("--retention", bridge_in_retention,
                   "NAME's retention: unbounded, drop-oldest or block (as for write)")
      ->capture_default_str()
      ->check(CLI::IsMember(retentions));
  bridge_in->add_option("--capacity", bridge_in_capacity,
                        "NAME's ring capacity for drop-oldest/block (64K, 16M...)");
  bridge_in
      ->add_option("--mode", bridge_in_options.mode,
                   "Who may read NAME: owner, group or everyone (as for write)")
      ->transform(CLI::CheckedTransformer(modes))
      ->default_str("owner");

  auto* rm = app.add_subcommand("rm", "Remove a stream; current readers may finish");
  bool force = false;
  rm->add_option("NAME", name, "Stream name")->required();
  rm->add_flag("--force", force, "Cancel it at once: every reader and the producer fail");
  std::string rm_cursor;
  rm->add_option("--cursor", rm_cursor,
                 "Remove only this named cursor of the stream (it stops holding a block ring)")
      ->excludes("--force");

  // `write NAME -- CMD ARGS...`: everything after the first "--" is the command, untouched.
  std::vector<char*> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    if (std::strcmp(args[i], "--") == 0) {
      w.command.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      args.resize(i);
      if (w.command.empty()) {
        std::fprintf(stderr, "shmstream: nothing after \"--\": give the command to run\n");
        return 2;
      }
      break;
    }
  }
  try {
    app.parse(static_cast<int>(args.size()), args.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!w.command.empty() && !*write) {
    std::fprintf(stderr, "shmstream: only `write` runs a command (after \"--\")\n");
    return 2;
  }
  auto to_format = [](const std::string& f) { return f == "len" ? Format::kLen : Format::kLine; };
  if (!write_format.empty() && !w.records) fail("--format needs --records");
  w.retention = retentions.at(retention);
  w.format = to_format(write_format);

  if (*bridge_out) {
    auto url = shmstream_cli::parse_redis_url(bridge_to);
    if (!url.ok()) fail("--to " + url.status().message());
    if (url->key.empty()) fail("--to " + bridge_to + ": no key (redis://HOST:PORT/KEY)");
    auto chunk = parse_size(bridge_chunk);
    if (!chunk || *chunk == 0 || *chunk > (64u << 20)) {
      fail("--chunk takes a size from 1 to 64M, not \"" + bridge_chunk + "\"");
    }
    bridge_options.name = name;
    bridge_options.to = *url;
    bridge_options.chunk = static_cast<size_t>(*chunk);
  }

  if (*bridge_in) {
    auto url = shmstream_cli::parse_redis_url(bridge_from);
    if (!url.ok()) fail("--from " + url.status().message());
    if (!url->key.empty() && url->key != bridge_in_options.key) {
      fail("--from " + bridge_from + " names key \"" + url->key + "\", not KEY \"" +
           bridge_in_options.key + "\"");
    }
    bridge_in_options.from = *url;
    bridge_in_options.name = name;
    bridge_in_options.retention = retentions.at(bridge_in_retention);
    bridge_in_options.ring_capacity =
        ring_capacity(bridge_in_options.retention, bridge_in_capacity);
    bridge_in_options.grace = milliseconds_of(bridge_grace_seconds);
  }

  auto client = connect(socket, no_autostart);
  if (*write) return cmd_write(client, name, w);
  if (*bridge_out) return shmstream_cli::run_bridge_out(client, bridge_options);
  if (*bridge_in) return shmstream_cli::run_bridge_in(client, bridge_in_options);
  if (*cat) {
    std::optional<Format> format;
    if (!cat_format.empty()) format = to_format(cat_format);
    return cmd_cat(client, name, offset, no_follow, cat_records_flag, format, cursor);
  }
  if (*ls) return cmd_ls(client, json);
  if (*top) {
    top_options.interval = milliseconds_of(interval_seconds);
    return shmstream_cli::run_top(client, top_options);
  }
  if (*stat) return cmd_stat(client, name, json);
  if (*rm) {
    check(rm_cursor.empty() ? client.remove(name, force) : client.remove_cursor(name, rm_cursor));
    return 0;
  }
  return 1;
}
