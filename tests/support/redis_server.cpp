#include "support/redis_server.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

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

RedisServer::RedisServer(std::string password) : password_(std::move(password)) {
  char tmpl[] = "/tmp/shmstream-test-redis.XXXXXX";
  dir_ = mkdtemp(tmpl);
  port_ = free_port();
  start();
}

RedisServer::~RedisServer() {
  stop();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string RedisServer::url(const std::string& key) const {
  std::string auth = password_.empty() ? "" : ":" + password_ + "@";
  return "redis://" + auth + "127.0.0.1:" + std::to_string(port_) + "/" + key;
}

shmstream_cli::Redis RedisServer::connect() const {
  auto url = shmstream_cli::parse_redis_url(this->url("")).value();
  return shmstream_cli::Redis::connect(url, std::chrono::seconds(5)).value();
}

void RedisServer::start() {
  std::vector<std::string> argv = {kRedisServer,
                                   "--port",
                                   std::to_string(port_),
                                   "--bind",
                                   "127.0.0.1",
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
  child_ = Child::spawn(argv, false, false);
  // Ready once it answers (a real query each time; connection refused until it listens).
  auto url = shmstream_cli::parse_redis_url(this->url("")).value();
  bool up = eventually(
      [&] {
        auto redis = shmstream_cli::Redis::connect(url, std::chrono::seconds(1));
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

}  // namespace shmstream::test
