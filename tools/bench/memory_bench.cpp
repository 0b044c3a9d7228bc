// Scenario memory: a reader of a long stream keeps its private memory small (it never copies).
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
// Scenario: a reader reading a long stream keeps its private memory small (it never copies).

// This process's anonymous (private) resident memory, in MiB, from /proc/self/status.
double rss_anon_mib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  char line[256];
  double kb = -1;
  while (f != nullptr && std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "RssAnon: %lf kB", &kb) == 1) break;
  }
  if (f != nullptr) std::fclose(f);
  return kb / 1024;
}

}  // namespace

void scenario_memory(const Options& o) {
  const uint64_t bytes = o.quick ? (512ULL << 20) : (4ULL << 30);
  const std::string name = "bench-memory";
  int created[2];
  if (pipe(created) != 0) die("pipe");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto producer = create_and_announce(client, name, created, 1);
    ready_and_wait(go_fd);
    for (uint64_t off = 0; off < bytes; off += 1 << 20) {
      auto span = take(producer.reserve(1 << 20), "reserve");
      std::memcpy(span.data(), chunk_at(off, 1 << 20).data(), 1 << 20);
      check(producer.commit(1 << 20), "commit");
    }
    check(producer.close(), "close");
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    await_created(created);
    auto client = connect_client(o);
    auto reader = take(client.open(name), "open");
    ready_and_wait(go_fd);
    uint64_t acc = 0, total = 0;
    for (;;) {
      auto view = take(reader.next(1 << 20), "read");
      if (view.empty()) break;
      acc = consume(view.data(), view.size(), acc);
      total += view.size();
    }
    if (total != bytes || acc == 0) die("the memory reader missed bytes");
    return rss_anon_mib();
  });
  RunResult r = run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  remove_stream(o, name);
  report(o, {"reader_memory", "rss_anon", "MiB", r.results[1], "limit", 16.0, false,
             "\"stream_bytes\":" + std::to_string(bytes)});
}

}  // namespace shmstream::bench
