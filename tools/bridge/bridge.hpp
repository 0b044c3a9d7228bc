// tools/bridge/bridge.hpp — `shmstream bridge out|in`: a stream carried through Redis Streams
// to other machines.
//
// Entry IDs carry the stream's offsets, so that Redis itself (which refuses an ID not larger
// than its last) makes the bridge exactly-once across crashes of the bridge, of Redis and of
// the network: an entry for the bytes [start, start + extent) has the ID
// "<start + 1>-<extent>" (a records stream: one record per entry, the extent its frame; a byte
// stream: a chunk per entry). The stream's end is an entry "<end + 1>-0" whose field "end" says
// how it ended (closed, aborted, cancelled). So the last ID Redis generated says where a
// bridge resumes, even after trimming (MAXLEN) removed the entries themselves.
// Fields: "d" the payload, "k" the stream's kind ("records" or "bytes").
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "bridge/redis.hpp"
#include "shmstream/client.hpp"

namespace shmstream_cli {

struct BridgeOutOptions {
  std::string name;                         // the local stream
  RedisUrl to;                              // with the key
  size_t chunk = 64 << 10;                  // byte streams: most bytes per entry
  size_t batch = 256;                       // entries per pipelined round trip
  uint64_t maxlen = 0;                      // approximate trimming (XADD MAXLEN ~ N); 0: none
  std::chrono::milliseconds timeout{5000};  // Redis connect and command timeout
};

// Follows the local stream into the Redis stream until the local stream ends (the end is
// bridged too). Reads as the named cursor "bridge:<key>", committed once Redis has the entries,
// so `ls` and `top` show how far behind the bridge is. Returns the exit code.
int run_bridge_out(shmstream::Client& client, const BridgeOutOptions& options);

struct BridgeInOptions {
  std::string key;                          // the Redis stream
  RedisUrl from;                            // its server (a key in the URL must name the same one)
  std::string name;                         // the local stream
  size_t batch = 256;                       // entries per XREAD
  std::chrono::milliseconds grace{30000};   // the local stream's resume grace
  std::chrono::milliseconds timeout{5000};  // Redis connect and command timeout
  uint64_t max_bytes = 0;                   // the local stream's; 0: the daemon's default
  shmstream::Retention retention = shmstream::Retention::kUnbounded;  // the local stream's
  uint64_t ring_capacity = 0;                                         // rings
  shmstream::StreamMode mode = shmstream::StreamMode::kOwner;
};

// Follows the Redis stream into the local stream NAME until its end marker, which ends NAME
// the same way. NAME is created with a resume grace and its origin (the Redis stream's offset
// of NAME's offset 0); a restarted bridge resumes NAME and goes on from origin + its committed
// length, so NAME gets every entry once, in order, across restarts of either. Entries trimmed
// from Redis before the bridge read them abort NAME (they are gone). Returns the exit code.
int run_bridge_in(shmstream::Client& client, const BridgeInOptions& options);

// The named cursor a bridge out to `key` reads as.
std::string bridge_cursor_name(const std::string& key);

}  // namespace shmstream_cli
