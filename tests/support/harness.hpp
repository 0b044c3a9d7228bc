// tests/support/harness.hpp — helpers for multi-process tests: a private shmstreamd per test,
// child processes with pipes, deterministic data, and waits with deadlines (never bare sleeps).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "shmstream/client.hpp"

namespace shmstream::test {

// Directory of the built executables (shmstream, shmstreamd, test helpers).
std::string bin_dir();

// A running child process; killed (SIGKILL) and reaped on destruction if still running.
class Child {
 public:
  Child() = default;
  Child(Child&& other) noexcept;
  Child& operator=(Child&& other) noexcept;
  ~Child();

  // Starts argv[0] (a path) with stdin/stdout connected to pipes of ours (or /dev/null when the
  // flag is false); stderr is inherited.
  // `fd3`, if not -1, is passed to the child as its fd 3.
  static Child spawn(const std::vector<std::string>& argv, bool pipe_stdin, bool pipe_stdout,
                     const std::vector<std::string>& extra_env = {}, int fd3 = -1);

  pid_t pid() const { return pid_; }
  int pidfd() const { return pidfd_; }          // readable once the child exits
  int stdin_fd() const { return stdin_fd_; }    // write end, -1 if not piped
  int stdout_fd() const { return stdout_fd_; }  // read end, -1 if not piped
  void close_stdin();
  // Reads one '\n'-terminated line from stdout, or "" at EOF / deadline.
  std::string read_line(std::chrono::milliseconds timeout);
  // Reads lines until one equals `want` (true) or EOF / deadline (false).
  bool wait_for_line(const std::string& want, std::chrono::milliseconds timeout);
  // Waits for exit; returns the wait status, or -1 on timeout.
  int wait(std::chrono::milliseconds timeout);
  void kill(int signo);

 private:
  pid_t pid_ = -1;
  int pidfd_ = -1;
  int stdin_fd_ = -1;
  int stdout_fd_ = -1;
  std::string pending_;  // bytes read past the last line
};

// Whether file name (or path) `name` is a stream's segment, not one of its side files (its
// reader table "<segment>.t", a reader page "<segment>.r<16 hex digits>").
bool is_segment_file(const std::string& name);

// A private shmstreamd on a fresh socket in a fresh directory. Stops it on destruction and
// checks that no segment file of it is left in /dev/shm.
class TestDaemon {
 public:
  TestDaemon();
  // With more shmstreamd options (e.g. {"--segment-dir", DIR}).
  explicit TestDaemon(std::vector<std::string> extra_args);
  ~TestDaemon();
  const std::string& socket_path() const { return socket_path_; }
  const std::string& dir() const { return dir_; }
  pid_t pid() const { return child_.pid(); }
  bool alive();
  // Segment files of this daemon now in /dev/shm.
  std::vector<std::string> segment_files() const;
  // Environment that points the CLI at this daemon.
  std::vector<std::string> env() const;
  // Stops the daemon (SIGTERM); returns its wait status.
  int stop();
  // Stops it and starts a new one on the same socket (which adopts the old one's streams).
  void restart();
  // Kills it with SIGKILL and starts a new one on the same socket.
  void crash_and_restart();
  // The same in two steps, to act while no daemon runs.
  void kill_without_restart();
  void start_again() { start(); }
  // Its persistent directory (shmstreamd --persist-dir).
  std::string persist_dir() const { return dir_ + "/persist"; }

 private:
  void start();

  std::string dir_;
  std::string socket_path_;
  std::vector<std::string> extra_args_;
  Child child_;
};

// A client of `daemon` (autostart off, so a dead daemon is an error, not a new daemon).
Client connect_to(const TestDaemon& daemon);

// A fresh directory /tmp/shmstream-TAG-XXXXXX, removed with everything in it at destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Reads fd until EOF (or an error) and returns everything read.
std::string read_all(int fd);

// Runs the shmstream CLI against `daemon` with `input` on its stdin (/dev/null if empty);
// returns {wait status, stdout}. Fails (status -1) if it runs longer than `timeout`. With
// `with_stderr`, stderr comes in the output too.
std::pair<int, std::string> run_cli(const TestDaemon& daemon, const std::vector<std::string>& args,
                                    const std::string& input = "",
                                    std::chrono::milliseconds timeout = std::chrono::seconds(30),
                                    bool with_stderr = false);

// Deterministic pseudo-random bytes (splitmix64) and a fast 64-bit digest.
void fill_random(uint64_t seed, uint64_t offset, std::byte* out, size_t length);
class Digest {
 public:
  void update(const void* data, size_t length);
  uint64_t value() const;
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t state_ = 0x9e3779b97f4a7c15ULL;
  uint64_t bytes_ = 0;
  unsigned char tail_[8] = {};
  size_t tail_len_ = 0;
};
uint64_t digest_of_random(uint64_t seed, uint64_t length);

// Polls `condition` until true or the deadline; each poll is a real query (not a timed guess).
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Forks a child that writes one byte at `address`; true if the kernel killed it with SIGSEGV.
bool write_faults(const std::byte* address);

// True once thread `tid` of this process sleeps in the futex_waitv system call.
bool thread_sleeps_in_futex(pid_t tid);

// Starts a thread running `fn` (a blocking wait) and returns once it sleeps in the futex.
std::thread blocked_thread(std::function<void()> fn);

}  // namespace shmstream::test
