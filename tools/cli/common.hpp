// tools/cli/common.hpp — what the `shmstream` subcommands share: how a subcommand is wired into
// the command line, leaving with a message, the option types every command parses alike
// (sizes, durations, retentions, modes), and writing to file descriptors.
//
// Each subcommand lives in its own file (write.cpp, cat.cpp, ...) and registers itself through
// an add_*() function; shmstream.cpp only wires them.
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "shmstream/client.hpp"

namespace shmstream_cli {

inline constexpr size_t kChunk = 1 << 20;  // bytes moved per read/write system call

// One subcommand, registered on the app with its options.
struct Command {
  Command(CLI::App* app_in, std::function<void()> prepare_in,
          std::function<int(shmstream::Client&)> run_in, std::function<int()> run_alone_in = {})
      : app(app_in),
        prepare(std::move(prepare_in)),
        run(std::move(run_in)),
        run_alone(std::move(run_alone_in)) {}

  CLI::App* app = nullptr;
  // Checks that need no daemon, after parsing (may fail()); optional.
  std::function<void()> prepare;
  // Runs the command with a connected client; returns the exit code.
  std::function<int(shmstream::Client&)> run;
  // Instead of run: a command that needs no daemon (gc).
  std::function<int()> run_alone;
  // Whether it may start a daemon when none answers (read-only commands say none runs).
  bool starts_daemon = true;
  // With no daemon running, it has nothing to do: it says so and exits 0 (daemon stop).
  bool none_is_done = false;
};

// A command that only looks: it never starts a daemon (ls, stat, top, daemon status).
inline Command looking(Command command) {
  command.starts_daemon = false;
  return command;
}

// Prints "shmstream: <message>" (ending a progress line first) and exits with status 1.
[[noreturn]] void fail(const std::string& message);
// fail()s with the status's message unless it is ok.
void check(const shmstream::Status& status);
// The value, or fail()s with the error's message.
template <typename T>
T take(shmstream::Result<T> result) {
  if (!result.ok()) fail(result.status().message());
  return std::move(result).value();
}

// Writes all of `bytes` to fd; false on a broken pipe or error (errno says which).
bool write_all(int fd, std::span<const std::byte> bytes);
bool is_pipe(int fd);

// A --seconds option (fractions allowed) as milliseconds.
std::chrono::milliseconds milliseconds_of(double seconds);

// Records framing on stdin/stdout: one per line, or a u32 little-endian length then the bytes.
enum class Format { kLine, kLen, kJson };  // kJson: cat --json only
// Adds `--format line|len` (`what` describes it) to `app`.
CLI::Option* add_format_option(CLI::App* app, Format* format, const std::string& what);

// Adds a size option ("4096", "64K", "16M", "1G", "2GiB": binary multiples) to `app`.
CLI::Option* add_size_option(CLI::App* app, const std::string& name, uint64_t* bytes,
                             const std::string& what);
// Adds `--retention unbounded|drop-oldest|block` and `--capacity SIZE` to `app`; `whose`
// ("", "NAME's ") starts their descriptions.
struct RingOptions {
  shmstream::Retention retention = shmstream::Retention::kUnbounded;
  uint64_t capacity = 0;
  // The ring capacity they ask for (0: unbounded); fail()s on a bad pair.
  uint64_t ring_capacity() const;
};
void add_ring_options(CLI::App* app, RingOptions* ring, const std::string& whose);
// Adds `--mode owner|group|everyone` to `app`.
void add_mode_option(CLI::App* app, shmstream::StreamMode* mode, const std::string& what);

}  // namespace shmstream_cli
