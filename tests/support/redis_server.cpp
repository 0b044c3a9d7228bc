#include "support/redis_server.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <thread>

namespace shmstream::test {

namespace {

constexpr const char* kRedisServer = "/usr/bin/redis-server";

// A loopback port nobody listens on now (the kernel's pick; taken again a moment later).
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ADD_FAILURE() << "no free port";
  }
  int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

}  // namespace

bool RedisServer::available() { return access(kRedisServer, X_OK) == 0; }

RedisServer::RedisServer(std::string password)
    : RedisServer(std::move(password), "", "127.0.0.1") {}

RedisServer::RedisServer(std::string password, std::string netns, std::string address)
    : password_(std::move(password)), netns_(std::move(netns)), address_(std::move(address)) {
  char tmpl[] = "/tmp/shmstream-test-redis.XXXXXX";
  dir_ = mkdtemp(tmpl);
  port_ = free_port();  // a namespace of its own has every port free
  start();
}

RedisServer::~RedisServer() {
  stop();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string RedisServer::url(const std::string& key) const {
  return "redis://" + address_ + ":" + std::to_string(port_) + "/" + key;
}

namespace {

shmstream::Result<shmstream_cli::Redis> connect_in(const std::string& netns,
                                                   const std::string& url_text,
                                                   const std::string& password,
                                                   std::chrono::milliseconds timeout) {
  auto url = shmstream_cli::parse_redis_url(url_text).value();
  url.password = password;
  if (netns.empty()) return shmstream_cli::Redis::connect(url, timeout);
  shmstream::Result<shmstream_cli::Redis> out =
      shmstream::Status(shmstream::ErrorCode::kInternal, "");
  Netns::run_in(netns, [&] { out = shmstream_cli::Redis::connect(url, timeout); });
  return out;
}

}  // namespace

shmstream_cli::Redis RedisServer::connect() const {
  return connect_in(netns_, url(""), password_, std::chrono::seconds(5)).value();
}

void RedisServer::start() {
  std::vector<std::string> argv = {kRedisServer,
                                   "--port",
                                   std::to_string(port_),
                                   "--bind",
                                   address_,
                                   "--dir",
                                   dir_,
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "yes",
                                   "--appendfsync",
                                   "always",
                                   "--daemonize",
                                   "no",
                                   "--logfile",
                                   dir_ + "/redis.log"};
  if (!password_.empty()) argv.insert(argv.end(), {"--requirepass", password_});
  if (!netns_.empty()) argv = Netns::exec_in(netns_, argv);
  child_ = Child::spawn(argv, false, false);
  // Ready once it answers (a real query each time; connection refused until it listens).
  bool up = eventually(
      [&] {
        auto redis = connect_in(netns_, url(""), password_, std::chrono::seconds(1));
        if (!redis.ok()) return false;
        auto pong = redis->command({"PING"});  // "-LOADING ..." while it reads its data back
        return pong.ok() && pong->text == "PONG";
      },
      std::chrono::seconds(20));
  ASSERT_TRUE(up) << "redis-server did not answer on port " << port_ << "; see " << dir_
                  << "/redis.log";
}

void RedisServer::stop() {
  if (child_.pid() <= 0) return;
  child_.kill(SIGTERM);
  child_.wait(std::chrono::seconds(20));
  child_ = Child();
}

void RedisServer::restart() {
  stop();
  start();
}

namespace {

// Runs a command; true if it exited 0. Its output goes to `log`.
bool run(const std::vector<std::string>& argv, std::string* log) {
  std::vector<std::string> full = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1"};
  full.insert(full.end(), argv.begin(), argv.end());
  Child c = Child::spawn(full, false, true);
  std::string out = read_all(c.stdout_fd());
  int status = c.wait(std::chrono::seconds(20));
  if (log != nullptr) *log += out;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

constexpr const char* kIp = "/bin/ip";  // Debian iproute2

}  // namespace

Netns::Netns() {
  if (geteuid() != 0) {
    why_ = "needs root (network namespaces and a veth pair)";
    return;
  }
  if (access(kIp, X_OK) != 0) {
    why_ = std::string("needs ") + kIp + " (Debian iproute2; deploy/setup installs it)";
    return;
  }
  int n = getpid() % 200 + 1;  // 10.213.n.0/24: one subnet per test process
  std::string tag = std::to_string(getpid());
  names_[0] = "shmsA" + tag;
  names_[1] = "shmsB" + tag;
  addresses_[0] = "10.213." + std::to_string(n) + ".1";
  addresses_[1] = "10.213." + std::to_string(n) + ".2";
  std::string veth[2] = {"vA" + tag, "vB" + tag};
  std::string log;
  bool ok = run({kIp, "netns", "add", names_[0]}, &log) &&
            run({kIp, "netns", "add", names_[1]}, &log) &&
            run({kIp, "link", "add", veth[0], "type", "veth", "peer", "name", veth[1]}, &log);
  for (int i = 0; ok && i < 2; ++i) {
    ok = run({kIp, "link", "set", veth[i], "netns", names_[i]}, &log) &&
         run({kIp, "-n", names_[i], "addr", "add", addresses_[i] + "/24", "dev", veth[i]}, &log) &&
         run({kIp, "-n", names_[i], "link", "set", veth[i], "up"}, &log) &&
         run({kIp, "-n", names_[i], "link", "set", "lo", "up"}, &log);
  }
  if (!ok) why_ = "could not make two network namespaces joined by a veth pair: " + log;
}

Netns::~Netns() {
  for (const auto& name : names_) {
    if (!name.empty()) run({kIp, "netns", "delete", name}, nullptr);  // takes its veth end along
  }
}

std::vector<std::string> Netns::exec_in(const std::string& name, std::vector<std::string> argv) {
  argv.insert(argv.begin(), {kIp, "netns", "exec", name});
  return argv;
}

void Netns::run_in(const std::string& name, const std::function<void()>& fn) {
  std::thread thread([&] {
    int fd = open(("/var/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "cannot enter network namespace " << name << ": " << std::strerror(errno);
    } else {
      fn();
    }
    if (fd >= 0) close(fd);
  });
  thread.join();
}

}  // namespace shmstream::test
