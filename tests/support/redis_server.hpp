// tests/support/redis_server.hpp — a private redis-server for bridge tests: a free loopback
// port, its own directory (append-only file, so a restart keeps the data), stopped and removed
// on destruction.
#pragma once

#include <string>

#include "bridge/redis.hpp"
#include "support/harness.hpp"

namespace shmstream::test {

class RedisServer {
 public:
  // Skips nothing itself: check available() first.
  explicit RedisServer(std::string password = "");
  ~RedisServer();
  static bool available();  // redis-server is installed

  int port() const { return port_; }
  std::string url(const std::string& key) const;
  // A connection for the test's own checks.
  shmstream_cli::Redis connect() const;
  // SIGTERM (Redis flushes its append-only file), then start again on the same port and dir.
  void restart();
  void stop();
  void start();

 private:
  std::string dir_;
  std::string password_;
  int port_ = 0;
  Child child_;
};

}  // namespace shmstream::test
