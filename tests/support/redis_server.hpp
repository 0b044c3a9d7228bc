// tests/support/redis_server.hpp — a private redis-server for bridge tests: a free loopback
// port, its own directory (append-only file, so a restart keeps the data), stopped and removed
// on destruction.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bridge/redis.hpp"
#include "support/harness.hpp"

namespace shmstream::test {

class RedisServer {
 public:
  // Skips nothing itself: check available() first.
  explicit RedisServer(std::string password = "");
  // In network namespace `netns` (see Netns), listening on `address` there.
  RedisServer(std::string password, std::string netns, std::string address);
  ~RedisServer();
  static bool available();  // redis-server is installed

  int port() const { return port_; }
  // redis://ADDRESS:PORT/KEY: never with the password (the bridges take it from the
  // environment, SHMSTREAM_REDIS_PASSWORD, or a file).
  std::string url(const std::string& key) const;
  const std::string& password() const { return password_; }
  // A connection for the test's own checks (made from within its namespace, if it has one).
  shmstream_cli::Redis connect() const;
  // SIGTERM (Redis flushes its append-only file), then start again on the same port and dir.
  void restart();
  void stop();
  void start();

 private:
  std::string dir_;
  std::string password_;
  std::string netns_;  // empty: this process's
  std::string address_ = "127.0.0.1";
  int port_ = 0;
  Child child_;
};

// Two network namespaces joined by a veth pair, 10.213.<n>.1 and .2 (two "hosts" on one
// machine); deleted on destruction. Needs root: ok() false (with why()) where it cannot be made.
class Netns {
 public:
  Netns();
  ~Netns();
  bool ok() const { return why_.empty(); }
  const std::string& why() const { return why_; }
  const std::string& first() const { return names_[0]; }
  const std::string& second() const { return names_[1]; }
  const std::string& first_address() const { return addresses_[0]; }
  const std::string& second_address() const { return addresses_[1]; }
  // `argv` run within namespace `name` ("ip netns exec NAME ...").
  static std::vector<std::string> exec_in(const std::string& name, std::vector<std::string> argv);
  // Runs `fn` on a thread that entered namespace `name` (sockets it makes stay in there).
  static void run_in(const std::string& name, const std::function<void()>& fn);

 private:
  std::string names_[2];
  std::string addresses_[2];
  std::string why_;
};

}  // namespace shmstream::test
