// Scenario `bridge`: `shmstream bridge out` moving 1 KiB records from a stream into a local
// redis-server, against redis-benchmark's own XADD rate with the same payload, one connection
// and the same pipeline depth (the bridge's batch), in the same run. Needs redis-server and
// redis-benchmark (Debian: redis-server, redis-tools); without them it says it was skipped.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
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

// Runs argv to completion; returns its stdout (exits the benchmark if it fails).
std::string run(const std::vector<std::string>& argv) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) die("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die(argv[0] + " failed");
  return text;
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

// Records per second that `shmstream bridge out` moves into Redis (n prefilled records).
double bridge_rate(const Options& o, const Redis& redis, int n, int round) {
  auto client = connect_client(o);
  std::string name = "bench-bridge-" + std::to_string(round);
  shmstream::CreateOptions options;
  options.records = true;
  auto producer = take(client.create(name, options), "create");
  std::string payload(kPayload, 'x');
  for (int i = 0; i < n; ++i) check(producer.publish(payload), "publish");
  check(producer.close(), "close");
  std::string cli =
      (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "shmstream").string();
  auto start = std::chrono::steady_clock::now();
  run({cli, "--socket", o.socket, "bridge", "out", name, "--to",
       "redis://127.0.0.1:" + std::to_string(redis.port()) + "/" + name, "--batch",
       std::to_string(kBatch)});
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  (void)client.remove(name, true);
  return n / seconds;
}

// redis-benchmark's XADD rate: same payload, one connection, pipeline depth = the bridge's batch.
double redis_benchmark_rate(const Redis& redis, int n, int round) {
  std::string out =
      run({kRedisBenchmark, "-h", "127.0.0.1", "-p", std::to_string(redis.port()), "-n",
           std::to_string(n), "-c", "1", "-P", std::to_string(kBatch), "--csv", "XADD",
           "rb-" + std::to_string(round), "*", "d", std::string(kPayload, 'x')});
  // CSV: a header line, then "<command>","<rps>",...
  size_t last = out.rfind("\n\"", out.size() - 2);
  size_t field = out.find("\",\"", last == std::string::npos ? 0 : last);
  if (field == std::string::npos) die("unexpected redis-benchmark output: " + out.substr(0, 200));
  return std::stod(out.substr(field + 3));
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
  auto m = medians(o, {[&] { return bridge_rate(o, redis, n, round++) / 1e3; },
                       [&] { return redis_benchmark_rate(redis, n, round++) / 1e3; }});
  std::string params = "\"records\":" + std::to_string(n) +
                       ",\"payload\":" + std::to_string(kPayload) +
                       ",\"pipeline\":" + std::to_string(kBatch);
  report(o, {"bridge_out_to_redis", "records_per_s", "k/s", m[0], "redis_benchmark_xadd", m[1],
             true, params});
}

}  // namespace shmstream::bench
