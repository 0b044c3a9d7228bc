// `shmstream write NAME [-- CMD ARGS...]`: creates a stream and fills it from stdin, or from
// the output of CMD; the stream closes when the input ends well, and is aborted when it does not.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "terminal.hpp"

extern char** environ;

namespace shmstream_cli {
namespace {

struct WriteOptions {
  uint64_t max_bytes = 0;
  RingOptions ring;
  uint32_t max_readers = 0;
  bool records = false;
  Format format = Format::kLine;
  bool persistent = false;
  std::string directory;
  shmstream::StreamMode mode = shmstream::StreamMode::kOwner;
  double resume_grace_seconds = 0;   // see CreateOptions::resume_grace
  double stall_limit_seconds = 0;    // see CreateOptions::stall_limit
  bool resume = false;               // take over an orphaned NAME instead of creating it
  std::vector<std::string> command;  // after "--": run it and stream its stdout
  std::string name;
};

// The signal (SIGINT, SIGTERM, SIGHUP) that interrupted `write`, 0 if none: the input loops
// stop, waits for room end (g_interrupt), and the stream is aborted saying so.
volatile sig_atomic_t g_signal = 0;
shmstream::Cancellation g_interrupt;

void on_signal(int signal) {
  g_signal = signal;
  g_interrupt.cancel();  // an atomic store and a futex wake: async-signal-safe
}

// The code of the error a copy function returned last: kTooLarge is the stream's size limit.
shmstream::ErrorCode g_last_code = shmstream::ErrorCode::kOk;

std::string failed(const shmstream::Status& status) {
  g_last_code = status.code();
  return status.message();
}

// Fills `buf` from fd until full or EOF; returns the count, or -1 with errno.
ssize_t read_full(int fd, std::byte* buf, size_t size) {
  size_t got = 0;
  while (got < size) {
    ssize_t n = ::read(fd, buf + got, size - got);
    if (n < 0 && errno == EINTR && g_signal == 0) continue;
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
  // After EOF: whether the input ended well; if not, why (the command's exit status or
  // signal), and the exit code `write` should return (as a shell would).
  struct Ending {
    std::optional<shmstream::AbortReason> why;  // none: it ended well
    int exit_code = 0;
  };
  Ending finish() {
    if (child_ <= 0) return {};
    ::close(fd_);
    fd_ = STDIN_FILENO;
    int status = 0;
    while (waitpid(child_, &status, 0) < 0 && errno == EINTR) {
    }
    child_ = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return {};
    if (WIFEXITED(status)) {
      return {shmstream::AbortReason{shmstream::AbortKind::kExitStatus, WEXITSTATUS(status), what_},
              WEXITSTATUS(status)};
    }
    return {shmstream::AbortReason{shmstream::AbortKind::kSignal, WTERMSIG(status), what_},
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
                       Progress& progress) {
  if (is_pipe(fd)) (void)fcntl(fd, F_SETPIPE_SZ, static_cast<int>(kChunk));
  for (;;) {
    progress.update(producer.committed());
    uint64_t room = limit - std::min(limit, producer.committed());
    if (room == 0) {
      std::byte extra;
      ssize_t n = ::read(fd, &extra, 1);
      if (n < 0 && errno == EINTR && g_signal == 0) continue;
      if (n < 0) return std::string("reading input: ") + std::strerror(errno);
      if (n == 0) return "";
      return failed(producer.append(std::span(&extra, 1)));
    }
    auto span = producer.reserve(static_cast<size_t>(std::min<uint64_t>(chunk, room)),
                                 shmstream::kForever, &g_interrupt);
    if (!span.ok()) return failed(span.status());
    ssize_t n = ::read(fd, span->data(), span->size());
    if (n < 0 && errno == EINTR && g_signal == 0) continue;
    // EFAULT: the kernel could not write into the reservation: the segment file shrank under
    // our mapping (commit() names it when the header went too).
    if (n < 0 && errno == EFAULT) {
      shmstream::Status s = producer.commit(0);
      return s.ok() ? std::string("stream \"") + producer.name() +
                          "\": its segment file shrank under the producer's mapping"
                    : failed(s);
    }
    if (n < 0) return std::string("reading input: ") + std::strerror(errno);
    if (n == 0) return "";
    if (auto s = producer.commit(static_cast<size_t>(n)); !s.ok()) return failed(s);
  }
}

// Publishes one record per input line (without its newline; a last line without one counts).
std::string copy_lines(shmstream::Producer& producer, int fd, Progress& progress) {
  std::vector<std::byte> buf(kChunk);
  size_t filled = 0;
  uint64_t consumed = 0;  // input bytes taken
  for (;;) {
    progress.update(consumed);
    if (filled == buf.size()) buf.resize(buf.size() * 2);  // a line longer than the buffer
    ssize_t n = ::read(fd, buf.data() + filled, buf.size() - filled);
    if (n < 0 && errno == EINTR && g_signal == 0) continue;
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
      if (auto s = producer.publish(std::span(buf.data() + start, stop - start),
                                    shmstream::kForever, &g_interrupt);
          !s.ok()) {
        return failed(s);
      }
      start = scan = stop + 1;
    }
    if (n == 0) {
      if (start < end) {
        if (auto s = producer.publish(std::span(buf.data() + start, end - start),
                                      shmstream::kForever, &g_interrupt);
            !s.ok()) {
          return failed(s);
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
std::string copy_len_framed(shmstream::Producer& producer, int fd, Progress& progress) {
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
    auto span = producer.reserve_record(length, shmstream::kForever, &g_interrupt);
    if (!span.ok()) {
      return "record " + std::to_string(index) + " of " + std::to_string(length) +
             " bytes: " + failed(span.status());
    }
    got = read_full(fd, span->data(), length);
    if (got < 0) return std::string("reading input: ") + std::strerror(errno);
    if (static_cast<uint32_t>(got) < length) {
      return "truncated input: record " + std::to_string(index) + " announces " +
             std::to_string(length) + " bytes, the input ends after " + std::to_string(got);
    }
    if (auto s = producer.commit_record(length); !s.ok()) return failed(s);
    consumed += 4 + uint64_t{length};
  }
}

// Creates NAME and fills it from stdin or a command's stdout. The stream closes when the input
// ends well, and is aborted (readers see "producer died" after what was committed) when it
// does not: a read error, malformed framing, or a command that fails.
int cmd_write(shmstream::Client& client, const std::string& name, const WriteOptions& w) {
  shmstream::CreateOptions options;
  options.max_bytes = w.max_bytes;
  options.records = w.records;
  options.max_readers = w.max_readers;
  options.retention = w.ring.retention;
  options.persistent = w.persistent;
  options.mode = w.mode;
  options.resume_grace = milliseconds_of(w.resume_grace_seconds);
  options.stall_limit = milliseconds_of(w.stall_limit_seconds);
  if (!w.directory.empty()) {
    std::error_code ec;
    options.directory = std::filesystem::absolute(w.directory, ec).lexically_normal().string();
    if (!std::filesystem::is_directory(options.directory, ec)) {
      fail("--dir " + w.directory + ": not an existing directory");
    }
  }
  options.ring_capacity = w.ring.ring_capacity();
  const bool ring = options.ring_capacity != 0;
  auto producer = take(w.resume ? client.resume(name) : client.create(name, options));
  // Interrupted, the stream is aborted saying so (not left to look like a crash).
  struct sigaction action {};
  action.sa_handler = on_signal;  // no SA_RESTART: a blocked read returns EINTR
  sigemptyset(&action.sa_mask);
  for (int signal : {SIGINT, SIGTERM, SIGHUP}) sigaction(signal, &action, nullptr);
  Input input(w.command);
  if (!input.spawn_error().empty()) {
    (void)producer.abort(input.spawn_error());  // removed next; nothing to report
    (void)client.remove(name, /*force=*/true);
    std::fprintf(stderr, "shmstream: %s (stream \"%s\" removed)\n", input.spawn_error().c_str(),
                 name.c_str());
    return 127;  // as a shell says a command cannot be run
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
  Progress progress(name, "written", total);
  if (isatty(input.fd()) == 1) progress.disable();  // someone types the input: leave the line
  std::string error = !w.records ? copy_bytes(producer, input.fd(), chunk, limit, progress)
                      : w.format == Format::kLen ? copy_len_framed(producer, input.fd(), progress)
                                                 : copy_lines(producer, input.fd(), progress);
  progress.finish(w.records ? total : producer.committed());
  if (!error.empty() || g_signal != 0) input.stop();
  auto ending = input.finish();
  if (error.empty() && g_signal == 0 && !ending.why) {
    check(producer.close());
    return 0;
  }
  // Why, for the stream's readers: our interruption, the stream's size limit, what went wrong
  // with the input, or the command's ending.
  shmstream::AbortReason why;
  int exit_code = 1;
  if (g_signal != 0) {
    why = {shmstream::AbortKind::kInterrupted, g_signal, ""};
    exit_code = 128 + g_signal;
  } else if (!error.empty() && g_last_code == shmstream::ErrorCode::kTooLarge) {
    why = {shmstream::AbortKind::kSizeLimit, 0,
           ring ? "a record larger than the ring" : "max bytes " + std::to_string(limit)};
  } else if (!error.empty()) {
    why = shmstream::AbortReason::because(error);
  } else {
    why = *ending.why;
    exit_code = ending.exit_code;
  }
  (void)producer.abort(why);  // the error below is what the user needs to see
  std::fprintf(stderr, "shmstream: %s (stream \"%s\" aborted at %llu bytes)\n",
               error.empty() || g_signal != 0 ? why.describe().c_str() : error.c_str(),
               name.c_str(), static_cast<unsigned long long>(producer.committed()));
  return exit_code;
}

}  // namespace

Command add_write(CLI::App& app, const std::vector<std::string>& command) {
  auto* write = app.add_subcommand(
      "write",
      "Create NAME and copy stdin into it, or with `-- CMD ARGS...` the output of CMD; close at "
      "the end of the input (abort if CMD fails)");
  auto w = std::make_shared<WriteOptions>();
  write->add_option("NAME", w->name, "Stream name")->required();
  add_size_option(write, "--max-bytes", &w->max_bytes,
                  "Longest the stream may grow (default: daemon's)");
  add_ring_options(write, &w->ring, "");
  write->add_option("--max-readers", w->max_readers, "Readers allowed at once (default: daemon's)");
  add_mode_option(write, &w->mode,
                  "Who may read it: owner (0600), group (0640: your primary group) or everyone "
                  "(0644); the owner and root always may, and only they may remove it");
  write->add_flag("--records", w->records, "A records stream: one record per input line");
  write
      ->add_option("--resume-grace", w->resume_grace_seconds,
                   "If this writer dies, keep NAME open this many seconds for another "
                   "`write --resume` to go on where it stopped (readers wait on)")
      ->check(CLI::Range(0.0, 86400.0));
  write
      ->add_option("--stall-limit", w->stall_limit_seconds,
                   "block rings: a reader (or an idle --cursor) that keeps this writer waiting "
                   "for room longer than this many seconds is evicted: it stops holding the "
                   "ring, and its next read fails saying so (default: never)")
      ->check(CLI::Range(0.0, 86400.0));
  write->add_flag("--resume", w->resume,
                  "Take over NAME, whose writer died within its resume grace, and append at its "
                  "committed end (instead of creating NAME)");
  write->add_flag("--persistent", w->persistent,
                  "Keep it on disk, in the daemon's persistent directory: it survives a daemon "
                  "restart and a reboot");
  write->add_option("--dir", w->directory,
                    "Keep it on disk in this directory (implies --persistent)");
  auto* format = add_format_option(write, &w->format, "Records framing");
  auto prepare = [w, format, &command] {
    if (format->count() != 0 && !w->records) fail("--format needs --records");
    w->command = command;
    (void)w->ring.ring_capacity();  // a bad --retention/--capacity pair fails before connecting
  };
  return Command{write, prepare,
                 [w](shmstream::Client& client) { return cmd_write(client, w->name, *w); }};
}

}  // namespace shmstream_cli
