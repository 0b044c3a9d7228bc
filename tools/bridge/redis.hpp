// tools/bridge/redis.hpp — the little of Redis the bridge needs: a URL, a synchronous
// connection (hiredis) with timeouts, single and pipelined commands, replies as values.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "shmstream/status.hpp"

struct redisContext;

namespace shmstream_cli {

// redis://[[user][:password]@]host[:port][/key] (the CLI takes no password here: see
// tools/cli/bridge.cpp). The key is everything after the first '/'
// after the host (it may contain '/'); percent-escapes are not decoded.
struct RedisUrl {
  std::string host;
  int port = 6379;
  std::string user;      // Redis 6 ACL user; empty: the default user
  std::string password;  // empty: no AUTH
  std::string key;
  std::string address() const { return host + ":" + std::to_string(port); }
};
shmstream::Result<RedisUrl> parse_redis_url(std::string_view url);
// `url` with its credentials, if any, shown as "***" (for messages and logs).
std::string redacted(std::string_view url);

// One reply (RESP2).
struct RedisReply {
  enum class Type { kString, kArray, kInteger, kNil, kStatus, kError };
  Type type = Type::kNil;
  std::string text;  // string, status and error replies
  long long integer = 0;
  std::vector<RedisReply> elements;
  bool is_error() const { return type == Type::kError; }
};

class Redis {
 public:
  // Connects (and authenticates) within `timeout`; commands then time out after `timeout`
  // too. kUnavailable if Redis does not answer, kPermissionDenied if AUTH fails.
  static shmstream::Result<Redis> connect(const RedisUrl& url, std::chrono::milliseconds timeout);
  Redis(Redis&&) noexcept;
  Redis& operator=(Redis&&) noexcept;
  ~Redis();

  // Sends one command and returns its reply (an error reply is a reply, not a failure). A
  // failure (kUnavailable) means the connection is gone: connect again.
  shmstream::Result<RedisReply> command(const std::vector<std::string>& argv);
  // Sends every command, then reads their replies in order (one round trip).
  shmstream::Result<std::vector<RedisReply>> pipeline(
      const std::vector<std::vector<std::string>>& commands);
  // "redis 127.0.0.1:6379".
  const std::string& describe() const { return describe_; }

 private:
  Redis(redisContext* context, std::string describe);
  shmstream::Status lost(const char* doing);

  struct Free {
    void operator()(redisContext* c) const;
  };
  std::unique_ptr<redisContext, Free> context_;
  std::string describe_;
};

}  // namespace shmstream_cli
