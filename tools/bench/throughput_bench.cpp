// Scenarios throughput and fanout: one producer into N readers that consume every byte,
// against memcpy, a Unix socket and pipes (`tee`-like) in the same run.
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
// Scenario: 1 producer -> N readers, chunked appends, every reader consumes every byte.

// A blocking ring of o.ring bytes (pipe-like: the producer waits for slow readers), or an
// unbounded stream.
shmstream::CreateOptions throughput_stream(const Options& o) {
  shmstream::CreateOptions options;
  if (o.ring != 0) {
    options.retention = shmstream::Retention::kBlock;
    options.ring_capacity = o.ring;
  }
  return options;
}

double stream_fanout(const Options& o, int readers, const std::string& name) {
  // The producer creates the stream in a setup process first, so that readers can open it.
  std::vector<std::function<double(int)>> bodies;
  int created[2];
  if (pipe(created) != 0) die("pipe");
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto producer = create_and_announce(client, name, created, readers, throughput_stream(o));
    ready_and_wait(go_fd);
    for (uint64_t off = 0; off < o.bytes; off += o.chunk) {
      check(producer.append(chunk_at(off, o.chunk)), "append");
    }
    check(producer.close(), "close");
    return 0.0;
  });
  // Readers must open after the create; they wait for the producer's "created" byte.
  for (int i = 0; i < readers; ++i) {
    bodies.push_back([&](int go_fd) {
      await_created(created);
      return stream_reader(o, name, go_fd);
    });
  }
  RunResult r = run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  remove_stream(o, name);
  return gbps(o.bytes, r.seconds);
}

// Baseline: the same through pipes (1 MiB pipe buffers), tee-style into `readers` pipes.
double pipe_fanout(const Options& o, int readers) {
  std::vector<int> write_ends, read_ends;
  for (int i = 0; i < readers; ++i) {
    int p[2];
    if (pipe(p) != 0) die("pipe");
    fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
    read_ends.push_back(p[0]);
    write_ends.push_back(p[1]);
  }
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    for (int fd : read_ends) close(fd);
    ready_and_wait(go_fd);
    for (uint64_t off = 0; off < o.bytes; off += o.chunk) {
      for (int fd : write_ends) write_all(fd, chunk_at(off, o.chunk));
    }
    for (int fd : write_ends) close(fd);
    return 0.0;
  });
  for (int i = 0; i < readers; ++i) {
    bodies.push_back([&, i](int go_fd) {
      for (int fd : write_ends) close(fd);
      return fd_reader(read_ends[i], o.chunk, go_fd);
    });
  }
  RunResult r = run_parties(bodies, [&] {
    for (int fd : read_ends) close(fd);
    for (int fd : write_ends) close(fd);
  });
  return gbps(o.bytes, r.seconds);
}

double socket_1x1(const Options& o) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) die("socketpair");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    close(sv[1]);
    ready_and_wait(go_fd);
    for (uint64_t off = 0; off < o.bytes; off += o.chunk) write_all(sv[0], chunk_at(off, o.chunk));
    close(sv[0]);
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    close(sv[0]);
    return fd_reader(sv[1], o.chunk, go_fd);
  });
  RunResult r = run_parties(bodies, [&] {
    close(sv[0]);
    close(sv[1]);
  });
  return gbps(o.bytes, r.seconds);
}

double memcpy_1core(const Options& o) {
  std::vector<std::byte> dst(64 << 20);
  std::memset(dst.data(), 0, dst.size());  // pre-faulted
  auto start = Clock::now();
  for (uint64_t off = 0; off < o.bytes; off += o.chunk) {
    auto src = chunk_at(off, o.chunk);
    std::memcpy(dst.data() + off % (dst.size() - o.chunk), src.data(), src.size());
  }
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  volatile auto sink = dst[12345];
  (void)sink;
  return gbps(o.bytes, seconds);
}

}  // namespace

void scenario_throughput(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) +
                       ",\"chunk\":" + std::to_string(o.chunk) + ",\"readers\":1" +
                       ",\"repeat\":" + std::to_string(o.repeat);
  auto runs =
      alternating_runs(o,
                       {[&] { return stream_fanout(o, 1, "bench-1x1"); },
                        [&] { return pipe_fanout(o, 1); }, [&] { return socket_1x1(o); },
                        [&] { return memcpy_1core(o); }, [&] { return floor_fanout(o, 1); }},
                       /*placement=*/true);
  double shm = median(runs.figures[0]), pipe = median(runs.figures[1]),
         sock = median(runs.figures[2]), mem = median(runs.figures[3]),
         floor = median(runs.figures[4]);
  report(o, {"1x1_throughput", "bytes_per_s", "GB/s", shm, "pipe_1MiB", pipe, true, params});
  report(o,
         {"1x1_throughput", "bytes_per_s", "GB/s", shm, "unix_stream_socket", sock, true, params});
  report(o, {"1x1_throughput", "bytes_per_s", "GB/s", shm, "memcpy_1core", mem, true, params});
  // What the library costs (against a bare shared ring), and what the machine's cross-core
  // transfer costs (the bare ring against memcpy within one core), each run's figures kept.
  report(o, {"1x1_throughput", "bytes_per_s", "GB/s", shm, "shared_ring_floor", floor, true,
             params + "," + json_runs("shmstream", runs, 0) + "," + json_runs("floor", runs, 4)});
  report(o, {"1x1_floor", "bytes_per_s", "GB/s", floor, "memcpy_1core", mem, true, params});
  report_by_placement(
      o, {"1x1_throughput", "bytes_per_s", "GB/s", 0, "memcpy_1core", 0, true, params}, runs, 0, 3);
  report_by_placement(o, {"1x1_floor", "bytes_per_s", "GB/s", 0, "memcpy_1core", 0, true, params},
                      runs, 4, 3);
}

void scenario_fanout(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) +
                       ",\"chunk\":" + std::to_string(o.chunk) + ",\"readers\":4";
  auto runs =
      alternating_runs(o,
                       {[&] { return stream_fanout(o, 4, "bench-1x4"); },
                        [&] { return pipe_fanout(o, 4); }, [&] { return floor_fanout(o, 4); }},
                       /*placement=*/true);
  double shm = median(runs.figures[0]), tee = median(runs.figures[1]),
         floor = median(runs.figures[2]);
  report(o, {"1x4_fanout", "stream_bytes_per_s", "GB/s", shm, "tee_into_4_pipes", tee, true,
             params + "," + json_runs("shmstream", runs, 0) + "," + json_runs("tee", runs, 1)});
  report(o, {"1x4_fanout", "stream_bytes_per_s", "GB/s", shm, "shared_ring_floor", floor, true,
             params + "," + json_runs("floor", runs, 2)});
  report(o,
         {"1x4_floor", "stream_bytes_per_s", "GB/s", floor, "tee_into_4_pipes", tee, true, params});
  report_by_placement(
      o, {"1x4_fanout", "stream_bytes_per_s", "GB/s", 0, "tee_into_4_pipes", 0, true, params}, runs,
      0, 1);
}

}  // namespace shmstream::bench
