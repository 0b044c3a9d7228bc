// Scenarios records, cursor and idle: small records (plain and through a named cursor)
// against SOCK_SEQPACKET messages, and the producer's cost of idle blocked readers.
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
// Scenario: small records, one subscriber keeping up. Baseline: one SOCK_SEQPACKET message per
// record.

constexpr size_t kRecordSize = 64;

// With a `cursor` name, the subscriber reads as that named cursor, committing automatically.
double stream_records(const Options& o, uint64_t count, const std::string& cursor = "") {
  const std::string name = "bench-records";
  int created[2];
  if (pipe(created) != 0) die("pipe");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    shmstream::CreateOptions options;
    options.records = true;
    options.retention = shmstream::Retention::kBlock;
    options.ring_capacity = o.ring != 0 ? o.ring : 4 << 20;
    auto producer = create_and_announce(client, name, created, 1, options);
    ready_and_wait(go_fd);
    for (uint64_t i = 0; i < count; ++i) {
      check(producer.publish(chunk_at(i * kRecordSize, kRecordSize)), "publish");
    }
    check(producer.close(), "close");
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    await_created(created);
    auto client = connect_client(o);
    shmstream::OpenOptions open_options;
    open_options.cursor = cursor;
    auto reader = take(client.open(name, open_options), "open");
    ready_and_wait(go_fd);
    uint64_t acc = 0, seen = 0;
    for (;;) {
      auto record = take(reader.next_record(), "next_record");
      if (!record) break;
      acc = consume(record->data.data(), record->data.size(), acc);
      ++seen;
    }
    if (seen != count) die("the records subscriber missed records");
    return static_cast<double>(acc & 0xffff);
  });
  RunResult r = run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  remove_stream(o, name);
  return static_cast<double>(count) / r.seconds;
}

double seqpacket_records(uint64_t count) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) != 0) die("socketpair");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    close(sv[1]);
    ready_and_wait(go_fd);
    for (uint64_t i = 0; i < count; ++i) {
      auto record = chunk_at(i * kRecordSize, kRecordSize);
      if (write(sv[0], record.data(), record.size()) != static_cast<ssize_t>(record.size())) {
        die("seqpacket write");
      }
    }
    close(sv[0]);
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    close(sv[0]);
    std::byte buf[kRecordSize];
    ready_and_wait(go_fd);
    uint64_t acc = 0, seen = 0;
    ssize_t n;
    while ((n = read(sv[1], buf, sizeof(buf))) > 0) {
      acc = consume(buf, static_cast<size_t>(n), acc);
      ++seen;
    }
    if (seen != count) die("the seqpacket reader missed records");
    return static_cast<double>(acc & 0xffff);
  });
  RunResult r = run_parties(bodies, [&] {
    close(sv[0]);
    close(sv[1]);
  });
  return static_cast<double>(count) / r.seconds;
}

// ---------------------------------------------------------------------------------------------
// Scenario: the producer alone vs the producer with 16 readers blocked waiting (idle).

double producer_only(const Options& o, int idle_readers, const std::string& name) {
  int created[2];
  if (pipe(created) != 0) die("pipe");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto producer = create_and_announce(client, name, created, idle_readers);
    ready_and_wait(go_fd);
    auto start = Clock::now();
    for (uint64_t off = 0; off < o.bytes; off += o.chunk) {
      check(producer.append(chunk_at(off, o.chunk)), "append");
    }
    double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    check(producer.close(), "close");
    return gbps(o.bytes, seconds);
  });
  for (int i = 0; i < idle_readers; ++i) {
    bodies.push_back([&](int go_fd) {
      await_created(created);
      auto client = connect_client(o);
      auto reader = take(client.open(name), "open");
      ready_and_wait(go_fd);
      // Blocked for bytes that never come: woken only if the producer wakes everyone.
      auto s = reader.wait_for(UINT64_MAX);
      return s.code() == shmstream::ErrorCode::kEndOfStream ? 0.0 : 1.0;
    });
  }
  RunResult r = run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  remove_stream(o, name);
  return r.results[0];
}

}  // namespace

void scenario_records(const Options& o) {
  const uint64_t count = o.quick ? 2'000'000 : 20'000'000;
  std::string params =
      "\"records\":" + std::to_string(count) + ",\"record_bytes\":" + std::to_string(kRecordSize);
  auto runs = alternating_runs(o,
                               {[&] { return stream_records(o, count) / 1e6; },
                                [&] { return seqpacket_records(count) / 1e6; },
                                [&] { return floor_records(o, count, kRecordSize) / 1e6; }},
                               /*placement=*/true);
  double shm = median(runs.figures[0]), seqpacket = median(runs.figures[1]),
         floor = median(runs.figures[2]);
  report(o,
         {"records_64B", "records_per_s", "M/s", shm, "unix_seqpacket", seqpacket, true, params});
  // Each run's figures and placement, in the order they ran, then each placement on its own.
  report(o, {"records_64B", "records_per_s", "M/s", shm, "shared_ring_floor", floor, true,
             params + "," + json_runs("shmstream", runs, 0) + "," + json_runs("floor", runs, 2)});
  report_by_placement(
      o, {"records_64B", "records_per_s", "M/s", 0, "shared_ring_floor", 0, true, params}, runs, 0,
      2);
}

// Scenario: the same small records read through a named cursor committing each one
// (CommitMode::kAuto), against an anonymous subscriber in the same run.
void scenario_cursor(const Options& o) {
  const uint64_t count = o.quick ? 2'000'000 : 20'000'000;
  std::string params =
      "\"records\":" + std::to_string(count) + ",\"record_bytes\":" + std::to_string(kRecordSize);
  auto m = medians(o, {[&] { return stream_records(o, count, "bench-cursor"); },
                       [&] { return stream_records(o, count); }});
  report(o, {"records_64B_cursor_auto_commit", "records_per_s", "M/s", m[0] / 1e6,
             "anonymous_subscriber", m[1] / 1e6, true, params});
}

void scenario_idle_readers(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) +
                       ",\"chunk\":" + std::to_string(o.chunk) + ",\"idle_readers\":16";
  auto m = medians(o, {[&] { return producer_only(o, 0, "bench-alone"); },
                       [&] { return producer_only(o, 16, "bench-idle"); }});
  double alone = m[0], with_idle = m[1];
  report(o, {"idle_readers", "producer_bytes_per_s", "GB/s", with_idle, "producer_alone", alone,
             true, params});
}

}  // namespace shmstream::bench
