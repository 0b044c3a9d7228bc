// shmstream-bench — shmstream against its baselines, side by side in one run, in separate
// processes as real users would run them. Prints a table, or one JSON object per line (--json):
// {"scenario","metric","value","baseline","baseline_value","ratio", parameters...}.
// Ratios are what to compare: machines are shared and noisy, absolute figures drift.
//
// Uses only the public client API, plus raw pipes, sockets and futexes for the baselines.
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shmstream/client.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  bool json = false;
  bool quick = false;
  int repeat =
      5;  // each figure is the median of this many runs, shmstream and baseline alternating
  uint64_t bytes = 1ULL << 30;  // stream volume per throughput run
  size_t chunk = 64 << 10;      // append / write size
  uint64_t ring = 4 << 20;      // ring capacity of the throughput streams (0 = unbounded)
  int latency_samples = 20000;
  std::string socket;  // the private daemon's
};

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "shmstream-bench: %s\n", message.c_str());
  std::exit(1);
}

template <typename T>
T take(shmstream::Result<T> result, const char* what) {
  if (!result.ok()) die(std::string(what) + ": " + result.status().to_string());
  return std::move(result.value());
}

void check(const shmstream::Status& s, const char* what) {
  if (!s.ok()) die(std::string(what) + ": " + s.to_string());
}

// ---------------------------------------------------------------------------------------------
// Processes: every party runs in a forked child. The parent creates no threads (no Client)
// before forking, so forking is safe; children connect on their own.

struct Party {
  pid_t pid;
  int ready_fd;   // child writes one byte when set up
  int result_fd;  // child writes its result (a double) at the end
};

// Forks `body`; it gets `go_fd` to block on (EOF = start) and returns a figure for the parent.
Party fork_party(int go_read_fd, const std::function<double(int go_fd)>& body) {
  int ready[2], result[2];
  if (pipe(ready) != 0 || pipe(result) != 0) die("pipe");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive an interrupted benchmark
    close(ready[0]);
    close(result[0]);
    // Tell the parent we are set up only once body() asks (it calls ready_signal()).
    setenv("SHMSTREAM_BENCH_READY_FD", std::to_string(ready[1]).c_str(), 1);
    double value = body(go_read_fd);
    if (write(result[1], &value, sizeof(value)) != sizeof(value)) _exit(1);
    _exit(0);
  }
  close(ready[1]);
  close(result[1]);
  return Party{pid, ready[0], result[0]};
}

// In a child: report "set up", then block until the parent starts everyone at once.
void ready_and_wait(int go_fd) {
  int fd = std::atoi(std::getenv("SHMSTREAM_BENCH_READY_FD"));
  char byte = 1;
  if (write(fd, &byte, 1) != 1) _exit(1);
  close(fd);
  while (read(go_fd, &byte, 1) > 0) {
  }
}

// Runs the parties: waits until all are set up, starts them together, waits for all to end.
// Returns the wall time from start to the last exit, and each party's result.
struct RunResult {
  double seconds;
  std::vector<double> results;
};

// `after_fork` runs in the parent once every party is forked: it drops the parent's copies of
// descriptors the parties must see closed (pipe write ends), or readers never see EOF.
RunResult run_parties(
    const std::vector<std::function<double(int)>>& bodies,
    const std::function<void()>& after_fork = [] {}) {
  int go[2];
  if (pipe(go) != 0) die("pipe");
  std::vector<Party> parties;
  for (const auto& body : bodies) {
    parties.push_back(fork_party(go[0], [&, go_write = go[1]](int go_fd) {
      close(go_write);
      return body(go_fd);
    }));
  }
  close(go[0]);
  after_fork();
  for (auto& p : parties) {
    char byte;
    if (read(p.ready_fd, &byte, 1) != 1) die("a benchmark process failed while setting up");
    close(p.ready_fd);
  }
  auto start = Clock::now();
  close(go[1]);  // EOF on the go pipe: everyone starts
  RunResult out;
  for (auto& p : parties) {
    double value = 0;
    if (read(p.result_fd, &value, sizeof(value)) != sizeof(value)) {
      die("a benchmark process failed");
    }
    out.results.push_back(value);
    close(p.result_fd);
  }
  out.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (auto& p : parties) {
    int status = 0;
    waitpid(p.pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("a benchmark process failed");
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Work shared by shmstream and the baselines.

// A 4 MiB random source the producers copy from (cache-friendly, like a real producer's buffer).
const std::vector<std::byte>& source() {
  static std::vector<std::byte> src = [] {
    std::vector<std::byte> v(4 << 20);
    std::mt19937_64 rng(42);
    for (size_t i = 0; i < v.size(); i += 8) {
      uint64_t x = rng();
      std::memcpy(v.data() + i, &x, 8);
    }
    return v;
  }();
  return src;
}

// "Reads every byte": the reader's work on whatever it received, identical for all transports.
uint64_t consume(const std::byte* p, size_t n, uint64_t acc) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    std::memcpy(&x, p + i, 8);
    acc += x;
  }
  for (; i < n; ++i) acc += static_cast<uint64_t>(p[i]);
  return acc;
}

std::span<const std::byte> chunk_at(uint64_t offset, size_t chunk) {
  const auto& src = source();
  size_t start = static_cast<size_t>(offset % (src.size() - chunk + 1)) & ~size_t{63};
  return std::span(src).subspan(start, chunk);
}

shmstream::Client connect_client(const Options& o) {
  shmstream::ClientOptions options;
  options.socket_path = o.socket;
  options.autostart = false;
  return take(shmstream::Client::connect(options), "connect");
}

void write_all(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n <= 0) die(std::string("write: ") + std::strerror(errno));
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
}

// A reader of a pipe or socket: reads into a chunk-sized buffer and consumes every byte.
double fd_reader(int fd, size_t chunk, int go_fd) {
  std::vector<std::byte> buf(chunk);
  ready_and_wait(go_fd);
  uint64_t acc = 0;
  ssize_t n;
  while ((n = read(fd, buf.data(), buf.size())) > 0) acc = consume(buf.data(), n, acc);
  return static_cast<double>(acc & 0xffff);
}

// A shmstream reader: zero-copy views, consumes every byte.
double stream_reader(const Options& o, const std::string& name, int go_fd) {
  auto client = connect_client(o);
  auto reader = take(client.open(name), "open");
  ready_and_wait(go_fd);
  uint64_t acc = 0;
  for (;;) {
    auto view = take(reader.next(1 << 20), "read");
    if (view.empty()) break;
    acc = consume(view.data(), view.size(), acc);
  }
  return static_cast<double>(acc & 0xffff);
}

// Removes `name` from a short-lived process (the parent holds no Client: it forks later).
void remove_stream(const Options& o, const std::string& name) {
  pid_t pid = fork();
  if (pid == 0) {
    auto client = connect_client(o);
    (void)client.remove(name, /*force=*/true);
    _exit(0);
  }
  waitpid(pid, nullptr, 0);
}

// The create-then-open handshake between one producer party and its reader parties: the
// producer creates the stream, then writes one byte per reader into the `created` pipe.
shmstream::Producer create_and_announce(shmstream::Client& client, const std::string& name,
                                        int created[2], int readers,
                                        const shmstream::CreateOptions& options = {}) {
  close(created[0]);
  auto producer = take(client.create(name, options), "create");
  std::string tokens(readers, 'c');
  if (write(created[1], tokens.data(), tokens.size()) != readers) _exit(1);
  close(created[1]);
  return producer;
}

// In a reader party: returns once the stream exists.
void await_created(int created[2]) {
  close(created[1]);
  char byte;
  if (read(created[0], &byte, 1) != 1) die("the producer failed to create the stream");
}

// ---------------------------------------------------------------------------------------------
// Reporting

struct Figure {
  std::string scenario, metric, unit;
  double value;
  std::string baseline;
  double baseline_value;
  bool higher_is_better;
  std::string params;  // extra JSON members, e.g. "\"chunk\":65536"
};

void report(const Options& o, const Figure& f) {
  double ratio = f.baseline_value > 0 ? f.value / f.baseline_value : 0;
  if (o.json) {
    std::printf(
        "{\"scenario\":\"%s\",\"metric\":\"%s\",\"unit\":\"%s\",\"value\":%.6g,"
        "\"baseline\":\"%s\",\"baseline_value\":%.6g,\"ratio\":%.4f%s%s}\n",
        f.scenario.c_str(), f.metric.c_str(), f.unit.c_str(), f.value, f.baseline.c_str(),
        f.baseline_value, ratio, f.params.empty() ? "" : ",", f.params.c_str());
  } else {
    std::printf("%-22s %-18s %12.4g %-8s  vs %-22s %12.4g   ratio %6.2f%s\n", f.scenario.c_str(),
                f.metric.c_str(), f.value, f.unit.c_str(), f.baseline.c_str(), f.baseline_value,
                ratio, f.higher_is_better ? "" : " (lower is better)");
  }
  std::fflush(stdout);
}

// Runs each measurement `repeat` times, alternating between them (so that a noisy phase of the
// machine hits all of them alike), and returns each one's median.
std::vector<double> medians(const Options& o, const std::vector<std::function<double()>>& runs) {
  std::vector<std::vector<double>> samples(runs.size());
  for (int r = 0; r < o.repeat; ++r) {
    for (size_t i = 0; i < runs.size(); ++i) samples[i].push_back(runs[i]());
  }
  std::vector<double> out;
  for (auto& v : samples) {
    std::sort(v.begin(), v.end());
    out.push_back(v[v.size() / 2]);
  }
  return out;
}

double gbps(uint64_t bytes, double seconds) { return static_cast<double>(bytes) / seconds / 1e9; }

// ---------------------------------------------------------------------------------------------
// Scenario: 1 producer -> N readers, chunked appends, every reader consumes every byte.

// A blocking ring of o.ring bytes (pipe-like: the producer waits for slow readers), or an
// unbounded stream.
shmstream::CreateOptions throughput_stream(const Options& o) {
  shmstream::CreateOptions options;
  if (o.ring != 0) {
    options.retention = shmstream::Retention::kBlock;
    options.ring_capacity = o.ring;
  }
  return options;
}

double stream_fanout(const Options& o, int readers, const std::string& name) {
  // The producer creates the stream in a setup process first, so that readers can open it.
  std::vector<std::function<double(int)>> bodies;
  int created[2];
  if (pipe(created) != 0) die("pipe");
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto producer = create_and_announce(client, name, created, readers, throughput_stream(o));
    ready_and_wait(go_fd);
    for (uint64_t off = 0; off < o.bytes; off += o.chunk) {
      check(producer.append(chunk_at(off, o.chunk)), "append");
    }
    check(producer.close(), "close");
    return 0.0;
  });
  // Readers must open after the create; they wait for the producer's "created" byte.
  for (int i = 0; i < readers; ++i) {
    bodies.push_back([&](int go_fd) {
      await_created(created);
      return stream_reader(o, name, go_fd);
    });
  }
  RunResult r = run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  remove_stream(o, name);
  return gbps(o.bytes, r.seconds);
}

// Baseline: the same through pipes (1 MiB pipe buffers), tee-style into `readers` pipes.
double pipe_fanout(const Options& o, int readers) {
  std::vector<int> write_ends, read_ends;
  for (int i = 0; i < readers; ++i) {
    int p[2];
    if (pipe(p) != 0) die("pipe");
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    read_ends.push_back(p[0]);
    write_ends.push_back(p[1]);
  }
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    for (int fd : read_ends) close(fd);
    ready_and_wait(go_fd);
    for (uint64_t off = 0; off < o.bytes; off += o.chunk) {
      for (int fd : write_ends) write_all(fd, chunk_at(off, o.chunk));
    }
    for (int fd : write_ends) close(fd);
    return 0.0;
  });
  for (int i = 0; i < readers; ++i) {
    bodies.push_back([&, i](int go_fd) {
      for (int fd : write_ends) close(fd);
      return fd_reader(read_ends[i], o.chunk, go_fd);
    });
  }
  RunResult r = run_parties(bodies, [&] {
    for (int fd : read_ends) close(fd);
    for (int fd : write_ends) close(fd);
  });
  return gbps(o.bytes, r.seconds);
}

double socket_1x1(const Options& o) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    close(sv[1]);
    ready_and_wait(go_fd);
    for (uint64_t off = 0; off < o.bytes; off += o.chunk) write_all(sv[0], chunk_at(off, o.chunk));
    close(sv[0]);
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    close(sv[0]);
    return fd_reader(sv[1], o.chunk, go_fd);
  });
  RunResult r = run_parties(bodies, [&] {
    close(sv[0]);
    close(sv[1]);
  });
  return gbps(o.bytes, r.seconds);
}

double memcpy_1core(const Options& o) {
  std::vector<std::byte> dst(64 << 20);
  std::memset(dst.data(), 0, dst.size());  // pre-faulted
  auto start = Clock::now();
  for (uint64_t off = 0; off < o.bytes; off += o.chunk) {
    auto src = chunk_at(off, o.chunk);
    std::memcpy(dst.data() + off % (dst.size() - o.chunk), src.data(), src.size());
  }
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  volatile auto sink = dst[12345];
  (void)sink;
  return gbps(o.bytes, seconds);
}

void scenario_throughput(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) +
                       ",\"chunk\":" + std::to_string(o.chunk) + ",\"readers\":1" +
                       ",\"repeat\":" + std::to_string(o.repeat);
  auto m = medians(
      o, {[&] { return stream_fanout(o, 1, "bench-1x1"); }, [&] { return pipe_fanout(o, 1); },
          [&] { return socket_1x1(o); }, [&] { return memcpy_1core(o); }});
  double shm = m[0], pipe = m[1], sock = m[2], mem = m[3];
  report(o, {"1x1_throughput", "bytes_per_s", "GB/s", shm, "pipe_1MiB", pipe, true, params});
  report(o,
         {"1x1_throughput", "bytes_per_s", "GB/s", shm, "unix_stream_socket", sock, true, params});
  report(o, {"1x1_throughput", "bytes_per_s", "GB/s", shm, "memcpy_1core", mem, true, params});
}

void scenario_fanout(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) +
                       ",\"chunk\":" + std::to_string(o.chunk) + ",\"readers\":4";
  auto m = medians(
      o, {[&] { return stream_fanout(o, 4, "bench-1x4"); }, [&] { return pipe_fanout(o, 4); }});
  double shm = m[0], tee = m[1];
  report(o,
         {"1x4_fanout", "stream_bytes_per_s", "GB/s", shm, "tee_into_4_pipes", tee, true, params});
}

// ---------------------------------------------------------------------------------------------
// Scenario: small records, one subscriber keeping up. Baseline: one SOCK_SEQPACKET message per
// record.

constexpr size_t kRecordSize = 64;

double stream_records(const Options& o, uint64_t count) {
  const std::string name = "bench-records";
  int created[2];
  if (pipe(created) != 0) die("pipe");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    shmstream::CreateOptions options;
    options.records = true;
    options.retention = shmstream::Retention::kBlock;
    options.ring_capacity = o.ring != 0 ? o.ring : 4 << 20;
    auto producer = create_and_announce(client, name, created, 1, options);
    ready_and_wait(go_fd);
    for (uint64_t i = 0; i < count; ++i) {
      check(producer.publish(chunk_at(i * kRecordSize, kRecordSize)), "publish");
    }
    check(producer.close(), "close");
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    await_created(created);
    auto client = connect_client(o);
    auto reader = take(client.open(name), "open");
    ready_and_wait(go_fd);
    uint64_t acc = 0, seen = 0;
    for (;;) {
      auto record = take(reader.next_record(), "next_record");
      if (!record) break;
      acc = consume(record->data.data(), record->data.size(), acc);
      ++seen;
    }
    if (seen != count) die("the records subscriber missed records");
    return static_cast<double>(acc & 0xffff);
  });
  RunResult r = run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  remove_stream(o, name);
  return static_cast<double>(count) / r.seconds;
}

double seqpacket_records(uint64_t count) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) die("socketpair");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    close(sv[1]);
    ready_and_wait(go_fd);
    for (uint64_t i = 0; i < count; ++i) {
      auto record = chunk_at(i * kRecordSize, kRecordSize);
      if (write(sv[0], record.data(), record.size()) != static_cast<ssize_t>(record.size())) {
        die("seqpacket write");
      }
    }
    close(sv[0]);
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    close(sv[0]);
    std::byte buf[kRecordSize];
    ready_and_wait(go_fd);
    uint64_t acc = 0, seen = 0;
    ssize_t n;
    while ((n = read(sv[1], buf, sizeof(buf))) > 0) {
      acc = consume(buf, static_cast<size_t>(n), acc);
      ++seen;
    }
    if (seen != count) die("the seqpacket reader missed records");
    return static_cast<double>(acc & 0xffff);
  });
  RunResult r = run_parties(bodies, [&] {
    close(sv[0]);
    close(sv[1]);
  });
  return static_cast<double>(count) / r.seconds;
}

void scenario_records(const Options& o) {
  const uint64_t count = o.quick ? 2'000'000 : 20'000'000;
  std::string params = "\"records\":" + std::to_string(count) +
                       ",\"record_bytes\":" + std::to_string(kRecordSize);
  auto m = medians(o, {[&] { return stream_records(o, count); },
                       [&] { return seqpacket_records(count); }});
  report(o, {"records_64B", "records_per_s", "M/s", m[0] / 1e6, "unix_seqpacket", m[1] / 1e6, true,
             params});
}

// ---------------------------------------------------------------------------------------------
// Scenario: the producer alone vs the producer with 16 readers blocked waiting (idle).

double producer_only(const Options& o, int idle_readers, const std::string& name) {
  int created[2];
  if (pipe(created) != 0) die("pipe");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto producer = create_and_announce(client, name, created, idle_readers);
    ready_and_wait(go_fd);
    auto start = Clock::now();
    for (uint64_t off = 0; off < o.bytes; off += o.chunk) {
      check(producer.append(chunk_at(off, o.chunk)), "append");
    }
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    check(producer.close(), "close");
    return gbps(o.bytes, seconds);
  });
  for (int i = 0; i < idle_readers; ++i) {
    bodies.push_back([&](int go_fd) {
      await_created(created);
      auto client = connect_client(o);
      auto reader = take(client.open(name), "open");
      ready_and_wait(go_fd);
      // Blocked for bytes that never come: woken only if the producer wakes everyone.
      auto s = reader.wait_for(UINT64_MAX);
      return s.code() == shmstream::ErrorCode::kEndOfStream ? 0.0 : 1.0;
    });
  }
  RunResult r = run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  remove_stream(o, name);
  return r.results[0];
}

void scenario_idle_readers(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) +
                       ",\"chunk\":" + std::to_string(o.chunk) + ",\"idle_readers\":16";
  auto m = medians(o, {[&] { return producer_only(o, 0, "bench-alone"); },
                       [&] { return producer_only(o, 16, "bench-idle"); }});
  double alone = m[0], with_idle = m[1];
  report(o, {"idle_readers", "producer_bytes_per_s", "GB/s", with_idle, "producer_alone", alone,
             true, params});
}

// ---------------------------------------------------------------------------------------------
// Scenario: one-way latency, reader blocked in the futex. Ping-pong over two streams; one-way
// = round trip / 2. Baseline: a raw futex ping-pong between two processes.

struct Percentiles {
  double p50, p99, p999;
};

Percentiles percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))]; };
  return {at(0.50), at(0.99), at(0.999)};
}

// Latency samples (ns) written by a child into memory shared with the parent (a pipe would
// fill up and block the child while the parent waits for it to finish).
class SharedSamples {
 public:
  explicit SharedSamples(size_t count) : count_(count) {
    void* p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    data_ = static_cast<double*>(p);
  }
  ~SharedSamples() { munmap(data_, bytes()); }
  double* data() { return data_; }
  std::vector<double> take() const { return std::vector<double>(data_, data_ + count_); }

 private:
  size_t bytes() const { return count_ * sizeof(double); }
  size_t count_;
  double* data_;
};

// Between two pings of the blocked-latency scenarios the pinger pauses this long, so that the
// other side has given up polling and sleeps in the futex when the ping comes (a reader polls
// for a few microseconds before it sleeps).
constexpr auto kPingGap = 100us;

std::vector<double> stream_pingpong(const Options& o, bool spin) {
  const int n = o.latency_samples;
  SharedSamples samples(n);
  int created[2];
  if (pipe(created) != 0) die("pipe");
  std::vector<std::function<double(int)>> bodies;
  // Pinger: produces "ping", reads "pong".
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto ping = take(client.create("bench-ping"), "create");
    char byte;
    if (read(created[0], &byte, 1) != 1) die("pong side failed");  // "bench-pong" exists
    auto pong = take(client.open("bench-pong"), "open");
    if (spin) pong.set_wait_strategy(shmstream::WaitStrategy::kSpin);
    ready_and_wait(go_fd);
    uint64_t msg = 0;
    for (int i = 0; i < n; ++i) {
      if (!spin) std::this_thread::sleep_for(kPingGap);
      auto t0 = Clock::now();
      check(ping.append(std::as_bytes(std::span(&msg, 1))), "append");
      auto v = take(pong.next(8), "read");
      if (v.size() != 8) die("short pong");
      samples.data()[i] = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2;
      ++msg;
    }
    check(ping.close(), "close");
    return 0.0;
  });
  // Ponger: produces "pong", reads "ping".
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto pong = take(client.create("bench-pong"), "create");
    char byte = 1;
    if (write(created[1], &byte, 1) != 1) _exit(1);
    shmstream::Reader ping = [&] {
      for (;;) {  // the pinger creates "bench-ping" concurrently
        auto r = client.open("bench-ping");
        if (r.ok()) return std::move(r.value());
        if (r.status().code() != shmstream::ErrorCode::kNotFound) die(r.status().to_string());
        std::this_thread::yield();
      }
    }();
    if (spin) ping.set_wait_strategy(shmstream::WaitStrategy::kSpin);
    ready_and_wait(go_fd);
    for (int i = 0; i < n; ++i) {
      auto v = take(ping.next(8), "read");
      if (v.size() != 8) die("short ping");
      check(pong.append(v), "append");
    }
    check(pong.close(), "close");
    return 0.0;
  });
  run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  auto out = samples.take();
  remove_stream(o, "bench-ping");
  remove_stream(o, "bench-pong");
  return out;
}

long futex(std::atomic<uint32_t>* word, int op, uint32_t value) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, nullptr, nullptr, 0);
}

std::vector<double> futex_pingpong(const Options& o) {
  // Two words on a shared page: each side waits on its own word, wakes the other's.
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* words = new (page) std::atomic<uint32_t>[2] {};
  const int n = o.latency_samples;
  SharedSamples samples(n);
  auto wait_for_change = [](std::atomic<uint32_t>* w, uint32_t seen) {
    while (w->load(std::memory_order_acquire) == seen) futex(w, FUTEX_WAIT, seen);
  };
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    for (int i = 0; i < n; ++i) {
      std::this_thread::sleep_for(kPingGap);
      auto t0 = Clock::now();
      uint32_t seen = words[1].load(std::memory_order_acquire);
      words[0].fetch_add(1, std::memory_order_release);
      futex(&words[0], FUTEX_WAKE, 1);
      wait_for_change(&words[1], seen);
      samples.data()[i] = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2;
    }
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    uint32_t seen = 0;
    for (int i = 0; i < n; ++i) {
      wait_for_change(&words[0], seen);
      seen = words[0].load(std::memory_order_acquire);
      words[1].fetch_add(1, std::memory_order_release);
      futex(&words[1], FUTEX_WAKE, 1);
    }
    return 0.0;
  });
  run_parties(bodies);
  auto out = samples.take();
  munmap(page, 4096);
  return out;
}

// Baseline for busy-polling: two processes bounce a counter through two shared cache lines.
std::vector<double> spin_pingpong(const Options& o) {
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* ping = new (page) std::atomic<uint64_t>{0};
  auto* pong = new (static_cast<char*>(page) + 128) std::atomic<uint64_t>{0};
  const int n = o.latency_samples;
  SharedSamples samples(n);
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    for (uint64_t i = 1; i <= static_cast<uint64_t>(n); ++i) {
      auto t0 = Clock::now();
      ping->store(i, std::memory_order_release);
      while (pong->load(std::memory_order_acquire) != i) __builtin_ia32_pause();
      samples.data()[i - 1] =
          std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2;
    }
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    for (uint64_t i = 1; i <= static_cast<uint64_t>(n); ++i) {
      while (ping->load(std::memory_order_acquire) != i) __builtin_ia32_pause();
      pong->store(i, std::memory_order_release);
    }
    return 0.0;
  });
  run_parties(bodies);
  auto out = samples.take();
  munmap(page, 4096);
  return out;
}

void scenario_latency_spin(const Options& o) {
  std::string params = "\"samples\":" + std::to_string(o.latency_samples) + ",\"message\":8";
  auto shm = percentiles(stream_pingpong(o, /*spin=*/true));
  auto raw = percentiles(spin_pingpong(o));
  report(o, {"latency_busy_poll", "one_way_p50", "us", shm.p50 / 1e3, "cacheline_pingpong",
             raw.p50 / 1e3, false, params});
  report(o, {"latency_busy_poll", "one_way_p99", "us", shm.p99 / 1e3, "cacheline_pingpong",
             raw.p99 / 1e3, false, params});
}

void scenario_latency(const Options& o) {
  std::string params = "\"samples\":" + std::to_string(o.latency_samples) +
                       ",\"message\":8,\"gap_us\":" + std::to_string(kPingGap.count());
  auto shm = percentiles(stream_pingpong(o, /*spin=*/false));
  auto raw = percentiles(futex_pingpong(o));
  report(o, {"latency_blocked", "one_way_p50", "us", shm.p50 / 1e3, "futex_pingpong", raw.p50 / 1e3,
             false, params});
  report(o, {"latency_blocked", "one_way_p99", "us", shm.p99 / 1e3, "futex_pingpong", raw.p99 / 1e3,
             false, params});
  report(o, {"latency_blocked", "one_way_p99.9", "us", shm.p999 / 1e3, "futex_pingpong",
             raw.p999 / 1e3, false, params});
}

// ---------------------------------------------------------------------------------------------
// Scenario: a reader reading a long stream keeps its private memory small (it never copies).

// This process's anonymous (private) resident memory, in MiB, from /proc/self/status.
double rss_anon_mib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  char line[256];
  double kb = -1;
  while (f != nullptr && std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "RssAnon: %lf kB", &kb) == 1) break;
  }
  if (f != nullptr) std::fclose(f);
  return kb / 1024;
}

void scenario_memory(const Options& o) {
  const uint64_t bytes = o.quick ? (512ULL << 20) : (4ULL << 30);
  const std::string name = "bench-memory";
  int created[2];
  if (pipe(created) != 0) die("pipe");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto producer = create_and_announce(client, name, created, 1);
    ready_and_wait(go_fd);
    for (uint64_t off = 0; off < bytes; off += 1 << 20) {
      auto span = take(producer.reserve(1 << 20), "reserve");
      std::memcpy(span.data(), chunk_at(off, 1 << 20).data(), 1 << 20);
      check(producer.commit(1 << 20), "commit");
    }
    check(producer.close(), "close");
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    await_created(created);
    auto client = connect_client(o);
    auto reader = take(client.open(name), "open");
    ready_and_wait(go_fd);
    uint64_t acc = 0, total = 0;
    for (;;) {
      auto view = take(reader.next(1 << 20), "read");
      if (view.empty()) break;
      acc = consume(view.data(), view.size(), acc);
      total += view.size();
    }
    if (total != bytes || acc == 0) die("the memory reader missed bytes");
    return rss_anon_mib();
  });
  RunResult r = run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  remove_stream(o, name);
  report(o, {"reader_memory", "rss_anon", "MiB", r.results[1], "limit", 16.0, false,
             "\"stream_bytes\":" + std::to_string(bytes)});
}

// ---------------------------------------------------------------------------------------------
// A private daemon for the run.

pid_t start_daemon(Options& o, std::string& dir) {
  char tmpl[] = "/tmp/shmstream-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) die("mkdtemp");
  dir = tmpl;
  o.socket = dir + "/ctl.sock";
  std::string daemon =
      (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "shmstreamd").string();
  int ready[2];
  if (pipe(ready) != 0) die("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    close(ready[0]);
    dup2(ready[1], 3);
    execl(daemon.c_str(), "shmstreamd", "--foreground", "--socket", o.socket.c_str(), "--ready-fd",
          "3", "--log-level", "warn", nullptr);
    _exit(127);
  }
  close(ready[1]);
  char byte;
  if (read(ready[0], &byte, 1) != 1) die("could not start " + daemon);
  close(ready[0]);
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shmstream-bench: shmstream against pipes, sockets, memcpy and futexes, in one run.\n"
      "Reports each figure next to its baseline and their ratio."};
  Options o;
  std::vector<std::string> only;
  app.add_flag("--json", o.json, "One JSON object per line");
  app.add_flag("--quick", o.quick, "Small volumes: the whole run in well under a minute (CI)");
  app.add_option("--repeat", o.repeat, "Runs per figure (the median is reported)")
      ->capture_default_str();
  app.add_option("--ring", o.ring,
                 "Ring capacity of the throughput streams, in bytes (0: unbounded streams)")
      ->capture_default_str();
  app.add_option("--scenario", only,
                 "Run only these: throughput, fanout, records, idle, latency, spin, memory");
  CLI11_PARSE(app, argc, argv);
  if (o.quick) {
    o.bytes = 128ULL << 20;
    o.latency_samples = 2000;
    o.repeat = 3;
  }
  signal(SIGPIPE, SIG_IGN);
  std::string dir;
  pid_t daemon = start_daemon(o, dir);
  auto wanted = [&](const char* name) {
    return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
  };
  if (wanted("throughput")) scenario_throughput(o);
  if (wanted("fanout")) scenario_fanout(o);
  if (wanted("records")) scenario_records(o);
  if (wanted("idle")) scenario_idle_readers(o);
  if (wanted("latency")) scenario_latency(o);
  if (wanted("spin")) scenario_latency_spin(o);
  if (wanted("memory")) scenario_memory(o);
  kill(daemon, SIGTERM);
  waitpid(daemon, nullptr, 0);
  std::filesystem::remove_all(dir);
  return 0;
}
