// `shmstream bridge out|in`: the command lines of the Redis bridges (bridge/ does the work).
#include "bridge/bridge.hpp"

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "cli/common.hpp"

namespace shmstream_cli {
namespace {

constexpr const char* kPasswordHelp =
    "A file holding the Redis password (its first line); else $SHMSTREAM_REDIS_PASSWORD, else "
    "$REDISCLI_AUTH. Never on the command line: every local user can read that (ps)";

// Parses `text` (the value of `option`) and gives it the password, which never comes from the
// command line: from `password_file`, else $SHMSTREAM_REDIS_PASSWORD, else $REDISCLI_AUTH (as
// redis-cli reads it). No message ever shows a password.
RedisUrl redis_url(const std::string& option, const std::string& text,
                   const std::string& password_file) {
  auto url = parse_redis_url(text);
  if (!url.ok()) fail(option + " " + url.status().message());
  if (!url->password.empty()) {
    fail(option + " \"" + redacted(text) +
         "\": a password on the command line is visible to every local user (ps, "
         "/proc/PID/cmdline); give it in $SHMSTREAM_REDIS_PASSWORD or a file (--password-file)");
  }
  if (!password_file.empty()) {
    std::ifstream in(password_file);
    if (!in || !std::getline(in, url->password)) {
      fail("--password-file " + password_file + ": cannot read a line from it");
    }
    if (!url->password.empty() && url->password.back() == '\r') url->password.pop_back();
    if (url->password.empty())
      fail("--password-file " + password_file + ": its first line is empty");
  } else if (const char* env = std::getenv("SHMSTREAM_REDIS_PASSWORD"); env != nullptr && *env) {
    url->password = env;
  } else if (const char* auth = std::getenv("REDISCLI_AUTH"); auth != nullptr && *auth) {
    url->password = auth;
  }
  return *url;
}

Command add_bridge_out(CLI::App* bridge) {
  struct OutCommand {
    BridgeOutOptions options;
    std::string to;
    std::string password_file;
    uint64_t chunk = 64 << 10;
  };
  auto* out = bridge->add_subcommand(
      "out",
      "Follow stream NAME into the Redis stream KEY until NAME ends, exactly once across "
      "restarts of the bridge and of Redis (entry IDs carry the offsets); reads as the named "
      "cursor bridge:KEY, so `ls` and `top` show its lag. Plain TCP: anyone on the network path "
      "can read or alter the data and the password; keep Redis on a trusted network");
  auto o = std::make_shared<OutCommand>();
  out->add_option("NAME", o->options.name, "Local stream")->required();
  out->add_option("--to", o->to, "redis://[USER@]HOST[:PORT]/KEY")->required();
  out->add_option("--password-file", o->password_file, kPasswordHelp);
  out->add_option("--maxlen", o->options.maxlen,
                  "Trim the Redis stream to about this many entries (XADD MAXLEN ~ N)");
  add_size_option(out, "--chunk", &o->chunk, "Byte streams: most bytes per Redis entry")
      ->default_str("64K");
  out->add_option("--batch", o->options.batch, "Entries per pipelined round trip")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  auto prepare = [o] {
    RedisUrl url = redis_url("--to", o->to, o->password_file);
    if (url.key.empty()) fail("--to " + redacted(o->to) + ": no key (redis://HOST:PORT/KEY)");
    if (o->chunk == 0 || o->chunk > (64u << 20)) {
      fail("--chunk takes a size from 1 to 64M, not " + std::to_string(o->chunk));
    }
    o->options.to = url;
    o->options.chunk = static_cast<size_t>(o->chunk);
  };
  return Command{out, prepare,
                 [o](shmstream::Client& client) { return run_bridge_out(client, o->options); }};
}

Command add_bridge_in(CLI::App* bridge) {
  struct InCommand {
    BridgeInOptions options;
    std::string from;
    std::string password_file;
    double grace_seconds = 30;
    RingOptions ring;
  };
  auto* in = bridge->add_subcommand(
      "in",
      "Follow the Redis stream KEY (written by `bridge out`) into the local stream NAME until "
      "its end, exactly once: NAME is created with a resume grace, and a restarted bridge "
      "resumes it where it stopped. Local readers fan it out zero-copy. Plain TCP, as for out");
  auto o = std::make_shared<InCommand>();
  in->add_option("KEY", o->options.key, "Redis stream key")->required();
  in->add_option("--from", o->from, "redis://[USER@]HOST[:PORT]")->required();
  in->add_option("--password-file", o->password_file, kPasswordHelp);
  in->add_option("--as", o->options.name, "Local stream to create (or resume)")->required();
  in->add_option("--grace", o->grace_seconds,
                 "Seconds NAME stays open for a restarted bridge after this one dies")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 86400.0));
  in->add_option("--batch", o->options.batch, "Most entries per XREAD")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  add_size_option(in, "--max-bytes", &o->options.max_bytes,
                  "Longest NAME may grow (default: daemon's)");
  add_ring_options(in, &o->ring, "NAME: ");
  add_mode_option(in, &o->options.mode,
                  "Who may read NAME: owner, group or everyone (as for write)");
  auto prepare = [o] {
    RedisUrl url = redis_url("--from", o->from, o->password_file);
    if (!url.key.empty() && url.key != o->options.key) {
      fail("--from " + redacted(o->from) + " names key \"" + url.key + "\", not KEY \"" +
           o->options.key + "\"");
    }
    o->options.from = url;
    o->options.retention = o->ring.retention;
    o->options.ring_capacity = o->ring.ring_capacity();
    o->options.grace = milliseconds_of(o->grace_seconds);
  };
  return Command{in, prepare,
                 [o](shmstream::Client& client) { return run_bridge_in(client, o->options); }};
}

}  // namespace

std::vector<Command> add_bridge(CLI::App& app) {
  auto* bridge = app.add_subcommand(
      "bridge", "Carry streams through Redis Streams to other machines: bridge out, bridge in");
  bridge->require_subcommand(1);
  return {add_bridge_out(bridge), add_bridge_in(bridge)};
}

}  // namespace shmstream_cli
