// `shmstream daemon status`: who the daemon is (version, pid, socket, uptime, configuration),
// its limits and what it holds. It never starts a daemon: it says that none runs.
#include <pwd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "terminal.hpp"

namespace shmstream_cli {
namespace {

std::string user_name(uint32_t uid) {
  passwd entry{};
  passwd* found = nullptr;
  char buf[1024];
  if (getpwuid_r(uid, &entry, buf, sizeof(buf), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

// "3d 4h", "2h 5m", "4m 10s", "12s".
std::string uptime_text(uint64_t started_unix_ns) {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  const int64_t up = std::max<int64_t>(0, now - static_cast<int64_t>(started_unix_ns / 1000000000));
  char out[64];
  if (up >= 86400) {
    std::snprintf(out, sizeof(out), "%lldd %lldh", static_cast<long long>(up / 86400),
                  static_cast<long long>(up % 86400 / 3600));
  } else if (up >= 3600) {
    std::snprintf(out, sizeof(out), "%lldh %lldm", static_cast<long long>(up / 3600),
                  static_cast<long long>(up % 3600 / 60));
  } else if (up >= 60) {
    std::snprintf(out, sizeof(out), "%lldm %llds", static_cast<long long>(up / 60),
                  static_cast<long long>(up % 60));
  } else {
    std::snprintf(out, sizeof(out), "%llds", static_cast<long long>(up));
  }
  return out;
}

int cmd_status(shmstream::Client& client, bool json) {
  auto info = take(client.daemon_info());
  if (json) {
    std::printf("%s\n", shmstream::to_json(info).c_str());
    return 0;
  }
  auto size = [](uint64_t bytes) { return human_bytes(static_cast<double>(bytes)); };
  std::printf("shmstreamd %s, pid %u, running as %s, up %s\n", info.version.c_str(), info.pid,
              user_name(info.uid).c_str(), uptime_text(info.started_unix_ns).c_str());
  std::printf("socket:        %s\n", info.socket.c_str());
  std::printf("config file:   %s\n", info.config_file.empty() ? "none" : info.config_file.c_str());
  std::printf("segments in:   %s\n", info.segment_dir.c_str());
  std::printf("persistent in: %s\n",
              info.persist_dir.empty() ? "(none of its own)" : info.persist_dir.c_str());
  std::printf("streams:       %u live, %u removed but still held\n", info.streams, info.removing);
  std::printf("holding:       %s of memory, %s on disk\n", size(info.memory_bytes).c_str(),
              size(info.disk_bytes).c_str());
  std::printf("connections:   %u\n", info.connections);
  std::printf("limits:        per user %u streams, %u connections, %s of memory%s\n",
              info.max_streams_per_user, info.max_connections_per_user,
              info.max_bytes_per_user == 0 ? "any amount" : size(info.max_bytes_per_user).c_str(),
              " (root and the daemon's user: no limit)");
  std::printf(
      "               %u connections in all; %s kept free; streams up to %s by default, rings "
      "up to %s; %u readers per stream by default; a client stalled %llu ms is dropped\n",
      info.max_connections, size(info.reserve_bytes).c_str(), size(info.default_max_bytes).c_str(),
      size(info.max_ring_bytes).c_str(), info.default_max_readers,
      static_cast<unsigned long long>(info.stall_limit_ms));
  return 0;
}

int cmd_stop(shmstream::Client& client, double timeout_s) {
  auto info = take(client.daemon_info());
  check(client.stop_daemon(
      std::chrono::duration_cast<shmstream::Timeout>(std::chrono::duration<double>(timeout_s))));
  std::fprintf(stderr,
               "shmstream: stopped shmstreamd (pid %u) at %s; its streams stay for the next one\n",
               info.pid, info.socket.c_str());
  return 0;
}

}  // namespace

std::vector<Command> add_daemon(CLI::App& app) {
  auto* daemon = app.add_subcommand("daemon", "The daemon itself: `daemon status`, `daemon stop`");
  daemon->require_subcommand(1);
  auto* status = daemon->add_subcommand(
      "status",
      "Who the daemon is (version, pid, socket, uptime, configuration file, directories), its "
      "limits and what it holds; never starts one");
  auto json = std::make_shared<bool>(false);
  status->add_flag("--json", *json, "Print a JSON object");
  auto* stop = daemon->add_subcommand(
      "stop",
      "Stop the daemon (your own; the system-wide one as root) and wait until it exited; its "
      "streams in memory stay for the next daemon. With none running, says so and exits 0");
  auto timeout = std::make_shared<double>(30.0);
  stop->add_option("--timeout", *timeout, "Seconds to wait for it to exit (then exit 1)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  Command stopping = looking(Command{
      stop, nullptr, [timeout](shmstream::Client& client) { return cmd_stop(client, *timeout); }});
  stopping.none_is_done = true;
  return {looking(Command{status, nullptr,
                          [json](shmstream::Client& client) { return cmd_status(client, *json); }}),
          stopping};
}

}  // namespace shmstream_cli
