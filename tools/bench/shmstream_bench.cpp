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
// A private daemon for the run, gone with the run however it ends: a failure (die() exits)
// stops it through atexit, a signal through the handler below, the bench's own death through
// PR_SET_PDEATHSIG; --ephemeral makes it remove its streams as it stops. What a SIGKILL of both
// leaves, `shmstream gc` removes.

pid_t g_daemon = -1;
pid_t g_bench = -1;  // the process that started it: a forked child that exits leaves it alone
char g_dir[64] = {};

// Async-signal-safe: the daemon stopped, then the files it keeps beside its socket removed.
void stop_daemon() {
  if (getpid() != g_bench) return;
  if (g_daemon > 0) {
    kill(g_daemon, SIGTERM);
    waitpid(g_daemon, nullptr, 0);
    g_daemon = -1;
  }
  if (g_dir[0] != '\0') {
    int dir = open(g_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    // All it keeps there, and the iceoryx scenario's RouDi configuration.
    for (const char* file :
         {"ctl.sock", "ctl.sock.lock", "ctl.sock.log", "ctl.sock.key", "roudi.toml"}) {
      if (dir >= 0) unlinkat(dir, file, 0);
    }
    if (dir >= 0) close(dir);
    rmdir(g_dir);
    g_dir[0] = '\0';
  }
}

void stop_on_signal(int signo) {
  stop_daemon();
  signal(signo, SIG_DFL);
  raise(signo);
}

pid_t start_daemon(Options& o) {
  std::strcpy(g_dir, "/tmp/shmstream-bench-XXXXXX");
  if (mkdtemp(g_dir) == nullptr) die("mkdtemp");
  o.socket = std::string(g_dir) + "/ctl.sock";
  std::string daemon =
      (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "shmstreamd").string();
  int ready[2];
  if (pipe(ready) != 0) die("pipe");
  // The defaults a user's daemon has, but for --ephemeral.
  std::vector<std::string> args = {"shmstreamd", "--foreground", "--ephemeral",
                                   "--socket",   o.socket,       "--ready-fd",
                                   "3",          "--log-level",  "warn"};
  if (!o.segment_dir.empty()) args.insert(args.end(), {"--segment-dir", o.segment_dir});
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    close(ready[0]);
    dup2(ready[1], 3);
    execv(daemon.c_str(), argv.data());
    _exit(127);
  }
  close(ready[1]);
  g_daemon = pid;
  g_bench = getpid();
  std::atexit(stop_daemon);
  for (int signo : {SIGINT, SIGTERM, SIGHUP}) signal(signo, stop_on_signal);
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
  app.add_option("--segment-dir", o.segment_dir,
                 "Segment directory of the bench's private daemon (default: its default)");
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
  start_daemon(o);
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
  stop_daemon();
  return 0;
}
