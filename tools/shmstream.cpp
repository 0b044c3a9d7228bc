// shmstream — command-line client: write a stream from stdin, cat it to stdout, list, stat and
// remove streams. Uses only the public client API. See `shmstream --help`.
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "shmstream/client.hpp"

namespace {

constexpr size_t kChunk = 1 << 20;  // bytes moved per read/write system call

[[noreturn]] void fail(const std::string& message) {
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
  return info.removing ? "removing" : shmstream::to_string(info.state);
}

std::string info_json(const shmstream::StreamInfo& info) {
  return "{\"name\":" + json_string(info.name) + ",\"state\":\"" + state_of(info) +
         "\",\"stream_state\":\"" + shmstream::to_string(info.state) +
         "\",\"bytes\":" + std::to_string(info.bytes) +
         ",\"readers\":" + std::to_string(info.readers) +
         ",\"producer_pid\":" + std::to_string(info.producer_pid) +
         ",\"producer_uid\":" + std::to_string(info.producer_uid) +
         ",\"max_bytes\":" + std::to_string(info.max_bytes) +
         ",\"created_unix_ns\":" + std::to_string(info.created_unix_ns) + "}";
}

shmstream::Client connect(const std::string& socket, bool no_autostart) {
  shmstream::ClientOptions options;
  options.socket_path = socket;
  options.autostart = !no_autostart;
  return take(shmstream::Client::connect(options));
}

// Copies stdin into the stream, reading straight into the reserved span (no extra copy).
int cmd_write(shmstream::Client& client, const std::string& name, uint64_t max_bytes) {
  shmstream::CreateOptions options;
  options.max_bytes = max_bytes;
  auto producer = take(client.create(name, options));
  if (is_pipe(STDIN_FILENO)) (void)fcntl(STDIN_FILENO, F_SETPIPE_SZ, static_cast<int>(kChunk));
  for (;;) {
    auto span = producer.reserve(kChunk);
    if (!span.ok()) {
      producer.abort();
      fail(span.status().message());
    }
    ssize_t n = ::read(STDIN_FILENO, span->data(), span->size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      std::string why = std::strerror(errno);
      producer.abort();
      fail("reading stdin: " + why + " (stream \"" + name + "\" aborted)");
    }
    if (n == 0) break;
    check(producer.commit(static_cast<size_t>(n)));
  }
  check(producer.close());
  return 0;
}

// Copies the stream to stdout straight from the mapping; into a pipe, an unbounded stream's
// bytes are not even copied (vmsplice).
int cmd_cat(shmstream::Client& client, const std::string& name, uint64_t offset, bool no_follow) {
  auto reader = take(client.open(name));
  bool splice = is_pipe(STDOUT_FILENO) &&
                take(client.stat(name)).retention == shmstream::Retention::kUnbounded;
  // Best effort: a bigger pipe takes more of the stream per system call.
  if (is_pipe(STDOUT_FILENO)) (void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, static_cast<int>(kChunk));
  check(reader.seek(static_cast<int64_t>(offset)));
  uint64_t stop_at = no_follow ? reader.committed() : UINT64_MAX;
  while (reader.position() < stop_at) {
    auto view =
        reader.next(static_cast<size_t>(std::min<uint64_t>(kChunk, stop_at - reader.position())));
    if (!view.ok()) fail(view.status().message());
    if (view->empty()) break;  // clean end of stream
    if (!(splice ? vmsplice_all(STDOUT_FILENO, *view) : write_all(STDOUT_FILENO, *view))) {
      if (errno == EPIPE) return 0;
      fail(std::string("writing stdout: ") + std::strerror(errno));
    }
  }
  return 0;
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
  std::printf("%-24s %-9s %14s %7s %8s\n", "NAME", "STATE", "BYTES", "READERS", "PID");
  for (const auto& s : streams) {
    std::printf("%-24s %-9s %14llu %7u %8u\n", s.name.c_str(), state_of(s).c_str(),
                static_cast<unsigned long long>(s.bytes), s.readers, s.producer_pid);
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
      "name:          %s\nstate:         %s\nbytes:         %llu\nreaders:       %u\n"
      "producer pid:  %u\nproducer uid:  %u\nmax bytes:     %llu\ncreated:       %s\n",
      info.name.c_str(), state_of(info).c_str(), static_cast<unsigned long long>(info.bytes),
      info.readers, info.producer_pid, info.producer_uid,
      static_cast<unsigned long long>(info.max_bytes), when);
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
  auto* write = app.add_subcommand("write", "Create NAME and copy stdin into it; close at EOF");
  uint64_t max_bytes = 0;
  write->add_option("NAME", name, "Stream name")->required();
  write->add_option("--max-bytes", max_bytes, "Longest the stream may grow (default: daemon's)");

  auto* cat = app.add_subcommand("cat", "Copy stream NAME to stdout, following it until closed");
  uint64_t offset = 0;
  bool no_follow = false;
  cat->add_option("NAME", name, "Stream name")->required();
  cat->add_option("--offset", offset, "Start at this byte offset")->capture_default_str();
  cat->add_flag("--no-follow", no_follow, "Stop at what is committed now instead of waiting");

  auto* ls = app.add_subcommand("ls", "List streams: name, state, bytes, readers, producer pid");
  bool json = false;
  ls->add_flag("--json", json, "Print a JSON array");

  auto* stat = app.add_subcommand("stat", "Show one stream");
  stat->add_option("NAME", name, "Stream name")->required();
  stat->add_flag("--json", json, "Print a JSON object");

  auto* rm = app.add_subcommand("rm", "Remove a stream; current readers may finish");
  bool force = false;
  rm->add_option("NAME", name, "Stream name")->required();
  rm->add_flag("--force", force, "Cancel it at once: every reader and the producer fail");

  CLI11_PARSE(app, argc, argv);

  auto client = connect(socket, no_autostart);
  if (*write) return cmd_write(client, name, max_bytes);
  if (*cat) return cmd_cat(client, name, offset, no_follow);
  if (*ls) return cmd_ls(client, json);
  if (*stat) return cmd_stat(client, name, json);
  if (*rm) {
    check(client.remove(name, force));
    return 0;
  }
  return 1;
}
