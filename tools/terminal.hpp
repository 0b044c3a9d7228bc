// tools/terminal.hpp — what the CLI shows on a terminal: human-readable sizes, a progress line
// for long copies, and `shmstream top`'s live view.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "shmstream/client.hpp"

namespace shmstream_cli {

// "512 B", "1.5 KiB", "12.3 MiB", "2.0 GiB"...
std::string human_bytes(double bytes);
// "0 B/s", "812.3 MB/s" (decimal, as rates usually are).
std::string human_rate(double bytes_per_second);

// A progress line on stderr ("\r...") for write and cat, redrawn at most 5 times a second, and
// its final state when done; only when stderr is a terminal: silent when piped or redirected.
class Progress {
 public:
  // `verb` says what moves ("written", "read"); `total` is 0 when unknown.
  Progress(std::string name, std::string verb, uint64_t total);
  ~Progress();  // ends the line (if one was drawn)
  bool enabled() const { return enabled_; }
  void disable() { enabled_ = false; }
  // Cheap when not due: one clock read.
  void update(uint64_t done) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (now >= next_) draw(done, now);
  }
  void finish(uint64_t done);

 private:
  void draw(uint64_t done, std::chrono::steady_clock::time_point now);

  std::string name_;
  std::string verb_;
  uint64_t total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point next_;
};

// Ends a progress line left open (before an error message goes to stderr).
void end_progress_line();

struct TopOptions {
  bool once = false;                         // one frame, plain text, then exit
  bool json = false;                         // frames as JSON lines (see json_frame())
  std::chrono::milliseconds interval{1000};  // between frames (and --once's two samples)
};

// `shmstream top`: per stream its write rate, readers and their lag, retention use and state,
// refreshed every interval; `q` quits. Not on a terminal (or --once, --json): plain frames (or
// JSON lines) one per interval, no escape codes. Returns the exit code.
int run_top(shmstream::Client& client, const TopOptions& options);

}  // namespace shmstream_cli
