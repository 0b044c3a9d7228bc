// The benchmark's harness: options, forked parties started together, the work shared by
// shmstream and its baselines, and reporting. Header-only: one binary, several scenario files.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "shmstream/client.hpp"

namespace shmstream::bench {

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
  std::string socket;       // the private daemon's
  std::string segment_dir;  // the private daemon's --segment-dir (empty: its default)
  std::string dump;         // if set, latency samples are written here (for tools/bench/plot)
};

[[noreturn]] inline void die(const std::string& message) {
  std::fprintf(stderr, "shmstream-bench: %s\n", message.c_str());
  std::exit(1);
}

template <typename T>
inline T take(shmstream::Result<T> result, const char* what) {
  if (!result.ok()) die(std::string(what) + ": " + result.status().to_string());
  return std::move(result.value());
}

inline void check(const shmstream::Status& s, const char* what) {
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

// A party whose libraries must see the process exit (iceoryx deregisters from RouDi in a static
// destructor) sets this; the party then ends with exit() rather than _exit().
inline bool exit_cleanly = false;

// Forks `body`; it gets `go_fd` to block on (EOF = start) and returns a figure for the parent.
inline Party fork_party(int go_read_fd, const std::function<double(int go_fd)>& body) {
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
    if (exit_cleanly) std::exit(0);
    _exit(0);
  }
  close(ready[1]);
  close(result[1]);
  return Party{pid, ready[0], result[0]};
}

// In a child: report "set up", then block until the parent starts everyone at once.
inline void ready_and_wait(int go_fd) {
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
inline RunResult run_parties(
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
inline const std::vector<std::byte>& source() {
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
inline uint64_t consume(const std::byte* p, size_t n, uint64_t acc) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    std::memcpy(&x, p + i, 8);
    acc += x;
  }
  for (; i < n; ++i) acc += static_cast<uint64_t>(p[i]);
  return acc;
}

inline std::span<const std::byte> chunk_at(uint64_t offset, size_t chunk) {
  const auto& src = source();
  size_t start = static_cast<size_t>(offset % (src.size() - chunk + 1)) & ~size_t{63};
  return std::span(src).subspan(start, chunk);
}

inline shmstream::Client connect_client(const Options& o) {
  shmstream::ClientOptions options;
  options.socket_path = o.socket;
  options.autostart = false;
  return take(shmstream::Client::connect(options), "connect");
}

inline void write_all(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n <= 0) die(std::string("write: ") + std::strerror(errno));
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
}

// Reads fd to its end into a chunk-sized buffer, consuming every byte.
inline double drain(int fd, size_t chunk) {
  std::vector<std::byte> buf(chunk);
  uint64_t acc = 0;
  ssize_t n;
  while ((n = read(fd, buf.data(), buf.size())) > 0) acc = consume(buf.data(), n, acc);
  return static_cast<double>(acc & 0xffff);
}

// A reader party of a pipe or socket: once started, drains it.
inline double fd_reader(int fd, size_t chunk, int go_fd) {
  ready_and_wait(go_fd);
  return drain(fd, chunk);
}

// A shmstream reader: zero-copy views, consumes every byte.
inline double stream_reader(const Options& o, const std::string& name, int go_fd) {
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
inline void remove_stream(const Options& o, const std::string& name) {
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
inline shmstream::Producer create_and_announce(shmstream::Client& client, const std::string& name,
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
inline void await_created(int created[2]) {
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

inline void report(const Options& o, const Figure& f) {
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

// Where the host has put the guest's two vCPUs decides the figures of transfers between them:
// the one-way latency of a cache line between two processes, median of 2,000 (latency_bench.cpp).
// This guest shows two ranges, 55-75 ns (near) and 195-290 ns (far), and moves between them.
double line_latency_ns();
inline constexpr double kNearLineNs = 150;

// Each measurement's figures in the order they ran and, if asked for, the placement measured
// just before each run.
struct Runs {
  std::vector<std::vector<double>> figures;  // [measurement][run]
  std::vector<std::vector<double>> line_ns;  // line_latency_ns() before each (with `placement`)
};

// Runs each measurement `repeat` times, alternating between them (so that a noisy phase of the
// machine hits all of them alike).
inline Runs alternating_runs(const Options& o, const std::vector<std::function<double()>>& runs,
                             bool placement = false) {
  Runs out{std::vector<std::vector<double>>(runs.size()),
           std::vector<std::vector<double>>(runs.size())};
  for (int r = 0; r < o.repeat; ++r) {
    for (size_t i = 0; i < runs.size(); ++i) {
      if (placement) out.line_ns[i].push_back(line_latency_ns());
      out.figures[i].push_back(runs[i]());
    }
  }
  return out;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// alternating_runs(), reduced to each measurement's median.
inline std::vector<double> medians(const Options& o,
                                   const std::vector<std::function<double()>>& runs) {
  std::vector<double> out;
  for (auto& v : alternating_runs(o, runs).figures) out.push_back(median(std::move(v)));
  return out;
}

// The figures of measurement `i` in runs whose vCPUs were near (or far) apart.
inline std::vector<double> placed(const Runs& runs, size_t i, bool near) {
  std::vector<double> out;
  for (size_t r = 0; r < runs.figures[i].size(); ++r) {
    if ((runs.line_ns[i][r] < kNearLineNs) == near) out.push_back(runs.figures[i][r]);
  }
  return out;
}

// A JSON array of figures, for a report's params ("name":[1.5,2.25]).
inline std::string json_array(const std::string& name, const std::vector<double>& values) {
  std::string out = "\"" + name + "\":[";
  for (size_t i = 0; i < values.size(); ++i) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%s%.4g", i == 0 ? "" : ",", values[i]);
    out += buf;
  }
  return out + "]";
}

// Measurement `i`'s figures and placements, for a report's params ("<name>_runs":[...],
// "<name>_line_ns":[...]).
inline std::string json_runs(const std::string& name, const Runs& runs, size_t i) {
  return json_array(name + "_runs", runs.figures[i]) + "," +
         json_array(name + "_line_ns", runs.line_ns[i]);
}

// Reports f.scenario + "_near_cpus" and "_far_cpus": the median of measurement `value` over the
// runs of that placement, against measurement `baseline` over the same placement's runs (or all
// of its runs, if none had it). A placement no run of `value` had is left out.
inline void report_by_placement(const Options& o, const Figure& f, const Runs& runs, size_t value,
                                size_t baseline) {
  for (bool near : {true, false}) {
    std::vector<double> mine = placed(runs, value, near);
    if (mine.empty()) continue;
    std::vector<double> theirs = placed(runs, baseline, near);
    if (theirs.empty()) theirs = runs.figures[baseline];
    Figure g = f;
    g.scenario += near ? "_near_cpus" : "_far_cpus";
    g.value = median(mine);
    g.baseline_value = median(theirs);
    g.params +=
        (g.params.empty() ? "" : ",") + std::string("\"runs\":") + std::to_string(mine.size());
    report(o, g);
  }
}

inline double gbps(uint64_t bytes, double seconds) {
  return static_cast<double>(bytes) / seconds / 1e9;
}

struct Percentiles {
  double p50, p99, p999;
};

inline Percentiles percentiles(std::vector<double> v) {
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

// With --dump: writes the samples (ns) of one latency series to <dump>/<series>.txt, one per
// line, for the plots. Returns the samples, to be reduced to percentiles.
inline std::vector<double> dumped(const Options& o, const std::string& series,
                                  std::vector<double> samples) {
  if (o.dump.empty()) return samples;
  std::string path = o.dump + "/" + series + ".txt";
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) die("cannot write " + path);
  for (double ns : samples) std::fprintf(f, "%.0f\n", ns);
  std::fclose(f);
  return samples;
}

// The scenarios, one file per family.
void scenario_throughput(const Options& o);          // throughput_bench.cpp
void scenario_fanout(const Options& o);              // throughput_bench.cpp
void scenario_cli(const Options& o);                 // cli_bench.cpp
void scenario_records(const Options& o);             // records_bench.cpp
void scenario_cursor(const Options& o);              // records_bench.cpp
void scenario_idle_readers(const Options& o);        // records_bench.cpp
void scenario_latency(const Options& o);             // latency_bench.cpp
void scenario_latency_spin(const Options& o);        // latency_bench.cpp
void scenario_latency_event_loop(const Options& o);  // latency_bench.cpp
void scenario_memory(const Options& o);              // memory_bench.cpp
void scenario_iceoryx(const Options& o);
void scenario_control(const Options& o);
void scenario_bridge(const Options& o);

// The shared-memory floor (floor_bench.cpp): the same transfers through a bare ring in shared
// memory, no library. Bytes: GB/s to `readers` readers; records: records per second.
double floor_fanout(const Options& o, int readers);
double floor_records(const Options& o, uint64_t count, size_t record_bytes);

}  // namespace shmstream::bench
