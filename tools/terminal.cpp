#include "terminal.hpp"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <vector>

namespace shmstream_cli {

namespace {

// `value` in the largest of `units` (each `base` times the previous) that keeps it >= 1.
template <size_t N>
std::string scaled(double value, double base, const char* const (&units)[N]) {
  size_t unit = 0;
  while (value >= base && unit + 1 < N) {
    value /= base;
    ++unit;
  }
  char out[32];
  std::snprintf(out, sizeof out, unit == 0 ? "%.0f %s" : "%.1f %s", value, units[unit]);
  return out;
}

}  // namespace

std::string human_bytes(double bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  return scaled(bytes, 1024, kUnits);
}

std::string human_rate(double bytes_per_second) {
  static const char* const kUnits[] = {"B/s", "kB/s", "MB/s", "GB/s", "TB/s"};
  return scaled(bytes_per_second, 1000, kUnits);
}

// ---------------------------------------------------------------------------------------------
// Progress

namespace {
constexpr auto kProgressPeriod = std::chrono::milliseconds(200);
bool progress_line_open = false;  // a progress line was drawn and not ended
}  // namespace

void end_progress_line() {
  if (progress_line_open) std::fputc('\n', stderr);
  progress_line_open = false;
}

Progress::Progress(std::string name, std::string verb, uint64_t total)
    : name_(std::move(name)),
      verb_(std::move(verb)),
      total_(total),
      enabled_(isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      next_(start_ + kProgressPeriod) {}

Progress::~Progress() { end_progress_line(); }

void Progress::finish(uint64_t done) {
  if (enabled_) draw(done, std::chrono::steady_clock::now());
}

void Progress::draw(uint64_t done, std::chrono::steady_clock::time_point now) {
  double seconds = std::chrono::duration<double>(now - start_).count();
  std::string line = name_ + ": " + human_bytes(static_cast<double>(done));
  if (total_ != 0) {
    char percent[16];
    std::snprintf(
        percent, sizeof percent, " (%.0f%%)",
        100.0 * static_cast<double>(std::min(done, total_)) / static_cast<double>(total_));
    line += " of " + human_bytes(static_cast<double>(total_)) + percent;
  }
  line += " " + verb_;
  if (seconds > 0) line += ", " + human_rate(static_cast<double>(done) / seconds);
  // \r back to the line's start, \x1b[K erases what a longer previous line left.
  std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
  progress_line_open = true;
  next_ = now + kProgressPeriod;
}

// ---------------------------------------------------------------------------------------------
// top

namespace {

// The terminal in raw mode (no echo, one key at a time) while `top` runs; restored on exit,
// also by SIGINT/SIGTERM.
termios saved_termios;
bool raw_mode = false;

void restore_terminal() {
  if (!raw_mode) return;
  tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
  // Show the cursor again, leave the alternate screen.
  const char kRestore[] = "\x1b[?25h\x1b[?1049l";
  (void)!write(STDOUT_FILENO, kRestore, sizeof kRestore - 1);
  raw_mode = false;
}

void on_signal(int signo) {
  restore_terminal();
  signal(signo, SIG_DFL);
  raise(signo);
}

void enter_raw_mode() {
  if (isatty(STDIN_FILENO) != 1 || tcgetattr(STDIN_FILENO, &saved_termios) != 0) return;
  termios raw = saved_termios;
  raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
  raw.c_cc[VMIN] = 1;
  raw.c_cc[VTIME] = 0;
  if (tcsetattr(STDIN_FILENO, TCSANOW, &raw) != 0) return;
  raw_mode = true;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  signal(SIGHUP, on_signal);
  // Alternate screen (the shell's screen comes back on exit), hidden cursor.
  std::fputs("\x1b[?1049h\x1b[?25l", stdout);
}

// One sample of every stream, to compute rates between two.
struct Sample {
  std::chrono::steady_clock::time_point when;
  std::map<uint64_t, uint64_t> bytes;  // by stream id
};

std::string retention_text(const shmstream::StreamInfo& s) {
  if (s.retention == shmstream::Retention::kUnbounded) return "unbounded";
  return std::string(shmstream::to_string(s.retention)) + " " +
         human_bytes(static_cast<double>(s.ring_capacity));
}

// How much of what the stream may keep it keeps: a ring's bytes held / capacity (for a block
// ring, held back by its slowest reader); an unbounded stream's length / its maximum.
double retention_use(const shmstream::StreamInfo& s) {
  if (s.retention == shmstream::Retention::kUnbounded) {
    return s.max_bytes == 0 ? 0 : static_cast<double>(s.bytes) / static_cast<double>(s.max_bytes);
  }
  if (s.ring_capacity == 0) return 0;
  uint64_t held = s.retention == shmstream::Retention::kBlock
                      ? s.bytes - std::min(s.bytes, s.slowest_reader)
                      : s.bytes - std::min(s.bytes, s.oldest);
  return std::min(1.0, static_cast<double>(held) / static_cast<double>(s.ring_capacity));
}

std::string state_text(const shmstream::StreamInfo& s) {
  std::string state = !s.damage.empty()     ? "corrupt"
                      : s.awaiting_producer ? "orphaned"
                                            : shmstream::to_string(s.state);
  return state + (s.removing ? ", removed" : "");
}

// One frame: a header line, then a line per stream and a line per reader.
std::vector<std::string> frame(const std::vector<shmstream::StreamInfo>& streams,
                               const Sample& before, const Sample& now, bool live) {
  std::vector<std::string> lines;
  char line[512];
  time_t wall = time(nullptr);
  char when[32];
  std::strftime(when, sizeof when, "%H:%M:%S", std::localtime(&wall));
  double seconds = std::chrono::duration<double>(now.when - before.when).count();
  std::snprintf(line, sizeof line, "shmstream top - %s - %zu stream%s - rates over %.1f s%s", when,
                streams.size(), streams.size() == 1 ? "" : "s", seconds, live ? " - q quits" : "");
  lines.push_back(line);
  lines.push_back("");
  std::snprintf(line, sizeof line, "%-24s %-17s %12s %11s %-22s %5s %7s %11s", "NAME", "STATE",
                "RATE", "BYTES", "RETENTION", "USE", "READERS", "MAX LAG");
  lines.push_back(line);
  for (const auto& s : streams) {
    std::string rate = "-";  // the first frame, or a stream new since the last one
    if (auto it = before.bytes.find(s.stream_id); it != before.bytes.end() && seconds > 0) {
      rate = human_rate(static_cast<double>(s.bytes - std::min(s.bytes, it->second)) / seconds);
    }
    uint64_t max_lag = 0;
    for (const auto& r : s.attached)
      max_lag = std::max(max_lag, s.bytes - std::min(s.bytes, r.position));
    std::snprintf(line, sizeof line, "%-24s %-17s %12s %11s %-22s %4.0f%% %7u %11s", s.name.c_str(),
                  state_text(s).c_str(), rate.c_str(),
                  human_bytes(static_cast<double>(s.bytes)).c_str(), retention_text(s).c_str(),
                  100 * retention_use(s), s.readers,
                  human_bytes(static_cast<double>(max_lag)).c_str());
    lines.push_back(line);
    if (std::string stall = shmstream::stall_text(s); !stall.empty()) lines.push_back("  " + stall);
    for (const auto& r : s.attached) {
      std::string who = "reader pid " + std::to_string(r.pid);
      if (!r.cursor.empty()) who += " cursor \"" + r.cursor + "\"";
      std::snprintf(
          line, sizeof line, "  %-40s at %-14llu lag %s", who.c_str(),
          static_cast<unsigned long long>(r.position),
          human_bytes(static_cast<double>(s.bytes - std::min(s.bytes, r.position))).c_str());
      lines.push_back(line);
    }
    for (const auto& c : s.cursors) {
      if (c.reader_pid != 0) continue;  // shown above with its reader
      std::snprintf(
          line, sizeof line, "  %-40s at %-14llu lag %s (no reader)",
          ("cursor \"" + c.name + "\"").c_str(), static_cast<unsigned long long>(c.position),
          human_bytes(static_cast<double>(s.bytes - std::min(s.bytes, c.position))).c_str());
      lines.push_back(line);
    }
  }
  if (streams.empty()) lines.push_back("(no streams)");
  return lines;
}

Sample sample_of(const std::vector<shmstream::StreamInfo>& streams) {
  Sample s{std::chrono::steady_clock::now(), {}};
  for (const auto& info : streams) s.bytes[info.stream_id] = info.bytes;
  return s;
}

// Waits up to `timeout` for a key; true if it was q (or Q, or Ctrl-C / Ctrl-D typed in raw
// mode, or stdin's end).
bool quit_key(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{STDIN_FILENO, POLLIN, 0};
    int n = poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if ((p.revents & (POLLIN | POLLHUP)) == 0) return false;
    char key;
    ssize_t got = read(STDIN_FILENO, &key, 1);
    if (got == 0) return true;  // stdin closed
    if (got == 1 && (key == 'q' || key == 'Q' || key == 3 || key == 4)) return true;
  }
}

// One frame as a JSON line: {"time_unix_ns":T,"interval_ms":I,"streams":[...]}, each stream the
// keys of `ls --json` and its write rate over the interval ("rate_bytes_per_s", null when the
// stream is new since the last sample).
std::string json_frame(const std::vector<shmstream::StreamInfo>& streams, const Sample& before,
                       const Sample& now) {
  const double seconds = std::chrono::duration<double>(now.when - before.when).count();
  const auto wall = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  std::string out = "{\"time_unix_ns\":" + std::to_string(wall) +
                    ",\"interval_ms\":" + std::to_string(std::llround(seconds * 1000)) +
                    ",\"streams\":[";
  for (size_t i = 0; i < streams.size(); ++i) {
    const auto& s = streams[i];
    std::string rate = "null";
    if (auto it = before.bytes.find(s.stream_id); it != before.bytes.end() && seconds > 0) {
      rate = std::to_string(
          std::llround(static_cast<double>(s.bytes - std::min(s.bytes, it->second)) / seconds));
    }
    std::string info = shmstream::to_json(s);
    info.pop_back();  // its closing brace: the rate joins its keys
    out += (i == 0 ? "" : ",") + info + ",\"rate_bytes_per_s\":" + rate + "}";
  }
  return out + "]}";
}

// Sleeps for `interval` (EINTR resumed).
void pause_for(std::chrono::milliseconds interval) {
  struct timespec pause {
    static_cast<time_t>(interval.count() / 1000),
        static_cast<long>(interval.count() % 1000) * 1000000
  };
  while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
  }
}

}  // namespace

int run_top(shmstream::Client& client, const TopOptions& options) {
  auto first = client.list();
  if (!first.ok()) {
    std::fprintf(stderr, "shmstream: %s\n", first.status().message().c_str());
    return 1;
  }
  Sample before = sample_of(*first);
  std::vector<shmstream::StreamInfo> streams = std::move(first.value());
  if (options.once || options.json || isatty(STDOUT_FILENO) != 1) {
    // Plain frames (or JSON lines) for scripts and pipes, no escape codes: each after an
    // interval (the rates'); --once stops after the first.
    for (;;) {
      pause_for(options.interval);
      auto again = client.list();
      if (!again.ok()) {
        std::fprintf(stderr, "shmstream: %s\n", again.status().message().c_str());
        return 1;
      }
      Sample now = sample_of(*again);
      if (options.json) {
        std::printf("%s\n", json_frame(*again, before, now).c_str());
      } else {
        for (const auto& l : frame(*again, before, now, false)) std::printf("%s\n", l.c_str());
      }
      if (options.once) return 0;
      if (std::fflush(stdout) != 0 || std::ferror(stdout)) return 0;  // the reader went away
      if (!options.json) std::printf("\n");
      before = now;
    }
  }
  enter_raw_mode();
  int status = 0;
  for (Sample now = before;;) {
    auto lines = frame(streams, before, now, true);
    before = now;
    winsize size{};
    size_t rows = 1000, cols = 1000;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_row > 0) {
      rows = size.ws_row;
      cols = size.ws_col;
    }
    std::string out = "\x1b[H";  // home; each line erases its rest, then clear below
    for (size_t i = 0; i < lines.size() && i < rows; ++i) {
      out += lines[i].substr(0, cols) + "\x1b[K" + (i + 1 < rows ? "\r\n" : "");
    }
    out += "\x1b[J";
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    if (quit_key(options.interval)) break;
    auto next = client.list();
    if (!next.ok()) {
      restore_terminal();
      std::fprintf(stderr, "shmstream: %s\n", next.status().message().c_str());
      status = 1;
      break;
    }
    streams = std::move(next.value());
    now = sample_of(streams);
  }
  restore_terminal();
  return status;
}

}  // namespace shmstream_cli
