// Scenario `bridge`, against redis-benchmark on the same local redis-server in the same run
// (needs redis-server and redis-benchmark, Debian redis-server and redis-tools; without them it
// says it was skipped):
// - throughput: `shmstream bridge out` moving 1 KiB records from a stream into Redis, and
//   `bridge in` moving them back out into another stream, each against redis-benchmark's XADD
//   rate with the same payload, one connection and the same pipeline depth (the batch);
// - added latency: one record at a time from a stream through bridge out, Redis and bridge in
//   into another stream (publish to arrival), against redis-benchmark's XADD round trip
//   (one connection, no pipelining): what the bridges add on top of Redis.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.hpp"

namespace shmstream::bench {
namespace {

constexpr const char* kRedisServer = "/usr/bin/redis-server";
constexpr const char* kRedisBenchmark = "/usr/bin/redis-benchmark";
constexpr size_t kPayload = 1024;
constexpr int kBatch = 256;

int free_loopback_port() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    die("no free loopback port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// Starts argv with its stdout on `stdout_fd`, or with -1 its stdout and stderr on /dev/null;
// returns its pid.
pid_t start(const std::vector<std::string>& argv, int stdout_fd = -1) {
  pid_t pid = fork();
  if (pid == 0) {
    if (stdout_fd < 0) {
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 2);
      stdout_fd = null;
    }
    dup2(stdout_fd, 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  if (pid < 0) die("fork");
  return pid;
}

void wait_exit(pid_t pid, const std::string& what) {
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die(what + " failed");
}

// Runs argv to completion; returns its stdout (exits the benchmark if it fails).
std::string run(const std::vector<std::string>& argv) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) die("pipe");
  pid_t pid = start(argv, out[1]);
  close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  wait_exit(pid, argv[0]);
  return text;
}

std::string cli_path() {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "shmstream").string();
}

// Whether a Redis on this loopback port answers PING.
bool pong(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = false;
  if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      write(fd, "PING\r\n", 6) == 6) {
    char reply[8] = {};
    ok = read(fd, reply, 7) >= 5 && std::string(reply).rfind("+PONG", 0) == 0;
  }
  if (fd >= 0) close(fd);
  return ok;
}

// A throwaway redis-server without persistence.
class Redis {
 public:
  Redis()
      : port_(free_loopback_port()),
        dir_(std::filesystem::temp_directory_path() /
             ("shmstream-bench-redis." + std::to_string(getpid()))) {
    std::filesystem::create_directories(dir_);
    pid_ = fork();
    if (pid_ == 0) {
      std::string port = std::to_string(port_), dir = dir_.string(), log = dir + "/redis.log";
      execl(kRedisServer, kRedisServer, "--port", port.c_str(), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", dir.c_str(), "--logfile", log.c_str(), nullptr);
      _exit(127);
    }
    // Ready once a PING over TCP gets its +PONG (a benchmark may poll).
    for (int i = 0; !pong(port_); ++i) {
      if (i == 500) die("redis-server did not start");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~Redis() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  int port() const { return port_; }

 private:
  int port_;
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

// Records per second that `shmstream bridge out`, then `bridge in`, move (n prefilled records).
std::pair<double, double> bridge_rates(const Options& o, const Redis& redis, int n, int round) {
  auto client = connect_client(o);
  std::string name = "bench-bridge-" + std::to_string(round);
  shmstream::CreateOptions options;
  options.records = true;
  auto producer = take(client.create(name, options), "create");
  std::string payload(kPayload, 'x');
  for (int i = 0; i < n; ++i) check(producer.publish(payload), "publish");
  check(producer.close(), "close");
  std::string url = "redis://127.0.0.1:" + std::to_string(redis.port());
  auto timed = [](const std::vector<std::string>& argv) {
    auto start = std::chrono::steady_clock::now();
    run(argv);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  double out = timed({cli_path(), "--socket", o.socket, "bridge", "out", name, "--to",
                      url + "/" + name, "--batch", std::to_string(kBatch)});
  double in = timed({cli_path(), "--socket", o.socket, "bridge", "in", name, "--from", url, "--as",
                     name + "-copy", "--batch", std::to_string(kBatch)});
  (void)client.remove(name, true);
  (void)client.remove(name + "-copy", true);
  return {n / out, n / in};
}

// Round trips of redis-benchmark's XADD: records per second and the p50/p99 latency (ms), same
// payload, one connection, `pipeline` commands in flight.
struct RedisFigures {
  double rate = 0, p50_ms = 0, p99_ms = 0;
};
RedisFigures redis_benchmark(const Redis& redis, int n, int pipeline, int round) {
  std::string out =
      run({kRedisBenchmark, "-h", "127.0.0.1", "-p", std::to_string(redis.port()), "-n",
           std::to_string(n), "-c", "1", "-P", std::to_string(pipeline), "--csv", "XADD",
           "rb-" + std::to_string(round), "*", "d", std::string(kPayload, 'x')});
  // CSV: a header line, then "<command>","<rps>","<avg>","<min>","<p50>","<p95>","<p99>",...
  size_t last = out.rfind("\n\"", out.size() - 2);
  std::vector<double> fields;
  for (size_t at = out.find("\",\"", last == std::string::npos ? 0 : last); at != std::string::npos;
       at = out.find("\",\"", at + 3)) {
    fields.push_back(std::stod(out.substr(at + 3)));
  }
  if (fields.size() < 6) die("unexpected redis-benchmark output: " + out.substr(0, 200));
  return {fields[0], fields[3], fields[5]};
}

// One-way latencies (ns) of records published one at a time into a stream that bridge out
// carries into Redis and bridge in out of it into another stream, publish to arrival.
std::vector<double> bridge_latencies(const Options& o, const Redis& redis, int n) {
  auto client = connect_client(o);
  std::string name = "bench-bridge-latency";
  shmstream::CreateOptions options;
  options.records = true;
  auto producer = take(client.create(name, options), "create");
  std::string url = "redis://127.0.0.1:" + std::to_string(redis.port());
  pid_t out =
      start({cli_path(), "--socket", o.socket, "bridge", "out", name, "--to", url + "/" + name});
  pid_t in = start({cli_path(), "--socket", o.socket, "bridge", "in", name, "--from", url, "--as",
                    name + "-copy"});
  std::string payload(kPayload, 'x');
  check(producer.publish(payload), "publish");  // the bridge in creates its stream at the first
  std::optional<shmstream::Reader> reader;
  for (int i = 0; !reader; ++i) {
    auto opened = client.open(name + "-copy");
    if (opened.ok()) reader.emplace(std::move(opened.value()));
    if (i == 1000) die("bridge in did not create its stream");
    if (!reader) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto first = reader->next_record(std::chrono::seconds(10));
  if (!first.ok() || !*first) die("the first record did not arrive");
  std::vector<double> samples;
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    check(producer.publish(payload), "publish");
    auto record = reader->next_record(std::chrono::seconds(10));
    if (!record.ok() || !*record) die("a record did not arrive through the bridges");
    samples.push_back(std::chrono::duration<double, std::nano>(Clock::now() - t0).count());
  }
  check(producer.close(), "close");
  wait_exit(out, "bridge out");
  wait_exit(in, "bridge in");
  (void)client.remove(name, true);
  (void)client.remove(name + "-copy", true);
  return samples;
}

}  // namespace

void scenario_bridge(const Options& o) {
  if (access(kRedisServer, X_OK) != 0 || access(kRedisBenchmark, X_OK) != 0) {
    std::printf(
        "bridge: skipped (needs redis-server and redis-benchmark: Debian redis-server, "
        "redis-tools)\n");
    return;
  }
  Redis redis;
  const int n = o.quick ? 20000 : 200000;
  int round = 0;
  std::pair<double, double> bridged;
  auto m = medians(o, {[&] {
                         bridged = bridge_rates(o, redis, n, round++);
                         return bridged.first / 1e3;
                       },
                       [&] { return bridged.second / 1e3; },
                       [&] { return redis_benchmark(redis, n, kBatch, round++).rate / 1e3; }});
  std::string params = "\"records\":" + std::to_string(n) +
                       ",\"payload\":" + std::to_string(kPayload) +
                       ",\"pipeline\":" + std::to_string(kBatch);
  report(o, {"bridge_out_to_redis", "records_per_s", "k/s", m[0], "redis_benchmark_xadd", m[2],
             true, params});
  report(o, {"bridge_in_from_redis", "records_per_s", "k/s", m[1], "redis_benchmark_xadd", m[2],
             true, params});

  const int samples = o.quick ? 300 : 3000;
  Percentiles through =
      percentiles(dumped(o, "bridge_round_trip", bridge_latencies(o, redis, samples)));
  RedisFigures xadd = redis_benchmark(redis, samples * 4, 1, round++);
  std::string latency_params =
      "\"records\":" + std::to_string(samples) + ",\"payload\":" + std::to_string(kPayload);
  report(o, {"bridge_latency", "one_way_p50", "us", through.p50 / 1e3, "redis_benchmark_xadd_p50",
             xadd.p50_ms * 1e3, false, latency_params});
  report(o, {"bridge_latency", "one_way_p99", "us", through.p99 / 1e3, "redis_benchmark_xadd_p99",
             xadd.p99_ms * 1e3, false, latency_params});
}

}  // namespace shmstream::bench
