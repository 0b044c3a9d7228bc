// shmstream-bench — shmstream against its baselines, side by side in one run, in separate
// processes as real users would run them. Prints a table, or one JSON object per line (--json):
// {"scenario","metric","value","baseline","baseline_value","ratio", parameters...}.
// Ratios are what to compare: machines are shared and noisy, absolute figures drift.
//
// Uses only the public client API, plus raw pipes, sockets and futexes for the baselines.
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/harness.hpp"
#include "shmstream/client.hpp"

namespace shmstream::bench {
namespace {
// ---------------------------------------------------------------------------------------------
// A private daemon for the run.

pid_t start_daemon(Options& o, std::string& dir) {
  char tmpl[] = "/tmp/shmstream-bench-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) die("mkdtemp");
  dir = tmpl;
  o.socket = dir + "/ctl.sock";
  std::string daemon =
      (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "shmstreamd").string();
  int ready[2];
  if (pipe(ready) != 0) die("pipe");
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    close(ready[0]);
    dup2(ready[1], 3);
    // --ephemeral: however the bench ends (its death sends the daemon SIGTERM), the daemon
    // removes every stream it made.
    execl(daemon.c_str(), "shmstreamd", "--foreground", "--ephemeral", "--socket", o.socket.c_str(),
          "--ready-fd", "3", "--log-level", "warn", nullptr);
    _exit(127);
  }
  close(ready[1]);
  char byte;
  if (read(ready[0], &byte, 1) != 1) die("could not start " + daemon);
  close(ready[0]);
  return pid;
}

}  // namespace
}  // namespace shmstream::bench

int main(int argc, char** argv) {
  using namespace shmstream::bench;
  CLI::App app{
      "shmstream-bench: shmstream against pipes, sockets, memcpy and futexes, in one run.\n"
      "Reports each figure next to its baseline and their ratio."};
  Options o;
  std::vector<std::string> only;
  app.add_flag("--json", o.json, "One JSON object per line");
  app.add_flag("--quick", o.quick, "Small volumes: the whole run in well under a minute (CI)");
  app.add_option("--repeat", o.repeat, "Runs per figure (the median is reported)")
      ->capture_default_str();
  app.add_option("--ring", o.ring,
                 "Ring capacity of the throughput streams, in bytes (0: unbounded streams)")
      ->capture_default_str();
  app.add_option("--dump", o.dump, "Write latency samples (ns) to this directory, for plots");
  app.add_option(
      "--scenario", only,
      "Run only these: throughput, fanout, cli, records, cursor, idle, latency, spin, event_loop, "
      "memory, iceoryx, control, bridge");
  CLI11_PARSE(app, argc, argv);
  if (o.quick) {
    o.bytes = 128ULL << 20;
    o.latency_samples = 2000;
    o.repeat = 3;
  }
  signal(SIGPIPE, SIG_IGN);
  std::string dir;
  pid_t daemon = start_daemon(o, dir);
  // In this order; --scenario picks some.
  const std::pair<const char*, void (*)(const Options&)> scenarios[] = {
      {"throughput", scenario_throughput},
      {"fanout", scenario_fanout},
      {"cli", scenario_cli},
      {"records", scenario_records},
      {"cursor", scenario_cursor},
      {"idle", scenario_idle_readers},
      {"latency", scenario_latency},
      {"spin", scenario_latency_spin},
      {"event_loop", scenario_latency_event_loop},
      {"memory", scenario_memory},
      {"iceoryx", scenario_iceoryx},
      {"control", scenario_control},
      {"bridge", scenario_bridge}};
  for (const auto& [name, run] : scenarios) {
    if (only.empty() || std::find(only.begin(), only.end(), name) != only.end()) run(o);
  }
  kill(daemon, SIGTERM);
  waitpid(daemon, nullptr, 0);
  std::filesystem::remove_all(dir);
  return 0;
}
