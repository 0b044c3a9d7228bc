// tools/bridge/common.hpp — what bridge out and bridge in share: entry IDs, Redis error
// replies, connecting with retries, and giving up with a message.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "bridge/redis.hpp"

namespace shmstream_cli::bridge {

// A Redis stream entry ID, "<ms>-<seq>" (bridge.hpp says what the bridge puts in them).
struct EntryId {
  uint64_t ms = 0;
  uint64_t seq = 0;
};
std::optional<EntryId> parse_id(std::string_view text);
std::string id_text(uint64_t ms, uint64_t seq);

// An error reply that means "not now" (a Redis still loading its data after a restart, busy
// with a script, a replica without its master): kUnavailable, to retry. Else kProtocol.
shmstream::Status error_reply(const Redis& redis, const char* command, const RedisReply& reply);

// Whether `key` holds a stream (false: nothing yet); kInvalidArgument if it holds anything else.
shmstream::Result<bool> holds_stream(Redis& redis, const std::string& key);

// Connects, retrying with backoff while Redis is unavailable (saying so once per outage); any
// other failure (a refused password) ends the program.
Redis connect_retrying(const RedisUrl& url, std::chrono::milliseconds timeout);

// Prints "shmstream: bridge: <message>" and exits with status 1, after running the cleanup
// set with on_give_up() (what a bridge undoes when it fails).
[[noreturn]] void give_up(const std::string& message);
void on_give_up(std::function<void()> cleanup);

}  // namespace shmstream_cli::bridge
