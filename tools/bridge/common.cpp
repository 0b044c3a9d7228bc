#include "bridge/common.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <utility>

#include "terminal.hpp"

namespace shmstream_cli::bridge {

using shmstream::ErrorCode;
using shmstream::Result;
using shmstream::Status;

std::optional<EntryId> parse_id(std::string_view text) {
  size_t dash = text.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  EntryId id;
  auto a = std::from_chars(text.data(), text.data() + dash, id.ms);
  auto b = std::from_chars(text.data() + dash + 1, text.data() + text.size(), id.seq);
  if (a.ec != std::errc() || b.ec != std::errc() || a.ptr != text.data() + dash ||
      b.ptr != text.data() + text.size()) {
    return std::nullopt;
  }
  return id;
}

std::string id_text(uint64_t ms, uint64_t seq) {
  return std::to_string(ms) + "-" + std::to_string(seq);
}

Status error_reply(const Redis& redis, const char* command, const RedisReply& reply) {
  for (const char* transient : {"LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN"}) {
    if (reply.text.rfind(transient, 0) == 0) {
      return Status(ErrorCode::kUnavailable, redis.describe() + ": " + reply.text);
    }
  }
  return Status(ErrorCode::kProtocol, redis.describe() + ": " + command + ": " + reply.text);
}

Result<bool> holds_stream(Redis& redis, const std::string& key) {
  auto type = redis.command({"TYPE", key});
  if (!type.ok()) return type.status();
  if (type->is_error()) return error_reply(redis, "TYPE", *type);
  if (type->text == "none") return false;
  if (type->text != "stream") {
    return Status(ErrorCode::kInvalidArgument, redis.describe() + ": key \"" + key + "\" holds a " +
                                                   type->text + ", not a stream");
  }
  return true;
}

Redis connect_retrying(const RedisUrl& url, std::chrono::milliseconds timeout) {
  auto delay = std::chrono::milliseconds(100);
  bool said = false;
  for (;;) {
    auto redis = Redis::connect(url, timeout);
    if (redis.ok()) {
      if (said) std::fprintf(stderr, "shmstream: bridge: %s is back\n", redis->describe().c_str());
      return std::move(redis.value());
    }
    if (redis.status().code() != ErrorCode::kUnavailable) give_up(redis.status().message());
    if (!said) {
      end_progress_line();
      std::fprintf(stderr, "shmstream: bridge: %s; retrying\n", redis.status().message().c_str());
      said = true;
    }
    std::this_thread::sleep_for(delay);
    delay = std::min(delay * 2, std::chrono::milliseconds(2000));
  }
}

namespace {
std::function<void()> g_cleanup;  // set by on_give_up(); the bridges are single-threaded
}  // namespace

void on_give_up(std::function<void()> cleanup) { g_cleanup = std::move(cleanup); }

void give_up(const std::string& message) {
  if (auto cleanup = std::exchange(g_cleanup, nullptr)) cleanup();
  end_progress_line();
  std::fprintf(stderr, "shmstream: bridge: %s\n", message.c_str());
  std::exit(1);
}

}  // namespace shmstream_cli::bridge
