// Scenarios latency, spin and event_loop: one-way latency of a reader blocked in the futex,
// busy-polling, or waiting in an event loop, against raw futex and spin ping-pongs.
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
// Scenario: one-way latency, reader blocked in the futex. Ping-pong over two streams; one-way
// = round trip / 2. Baseline: a raw futex ping-pong between two processes.

// Between two pings of the blocked-latency scenarios the pinger pauses this long, so that the
// other side has given up polling and sleeps in the futex when the ping comes (a reader polls
// for a few microseconds before it sleeps).
constexpr auto kPingGap = 100us;

// How a ping-pong side waits for the other's message.
enum class PingWait {
  kBlock,           // a blocking read (futex)
  kSpin,            // WaitStrategy::kSpin
  kEventLoop,       // epoll on Reader::event_fd(), reading with a zero timeout
  kEventLoopRelay,  // the same with the relay thread's descriptor (SHMSTREAM_EVENT_FD=relay)
};

bool in_event_loop(PingWait how) {
  return how == PingWait::kEventLoop || how == PingWait::kEventLoopRelay;
}

// The next 8-byte message of `reader`, waited for as `how` says.
std::span<const std::byte> next_message(shmstream::Reader& reader, PingWait how, int epoll_fd) {
  if (!in_event_loop(how)) return take(reader.next(8), "read");
  for (;;) {
    auto v = reader.next(8, shmstream::Timeout::zero());
    if (v.ok()) return v.value();
    if (v.status().code() != shmstream::ErrorCode::kTimeout) die(v.status().to_string());
    epoll_event event;
    if (epoll_wait(epoll_fd, &event, 1, -1) < 0 && errno != EINTR) die("epoll_wait");
  }
}

// An epoll instance watching `reader` (event-loop waits), or -1.
int watch_reader(shmstream::Reader& reader, PingWait how) {
  if (!in_event_loop(how)) return -1;
  // Each side is a process of its own: the choice stays in it.
  if (how == PingWait::kEventLoopRelay) setenv("SHMSTREAM_EVENT_FD", "relay", 1);
  int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event event{};
  event.events = EPOLLIN;
  if (epoll_fd < 0 ||
      epoll_ctl(epoll_fd, EPOLL_CTL_ADD, take(reader.event_fd(), "event_fd"), &event) != 0) {
    die("epoll");
  }
  return epoll_fd;
}

std::vector<double> stream_pingpong(const Options& o, PingWait how) {
  const bool spin = how == PingWait::kSpin;
  const int n = o.latency_samples;
  SharedSamples samples(n);
  int created[2];
  if (pipe(created) != 0) die("pipe");
  std::vector<std::function<double(int)>> bodies;
  // Pinger: produces "ping", reads "pong".
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto ping = take(client.create("bench-ping"), "create");
    char byte;
    if (read(created[0], &byte, 1) != 1) die("pong side failed");  // "bench-pong" exists
    auto pong = take(client.open("bench-pong"), "open");
    if (spin) pong.set_wait_strategy(shmstream::WaitStrategy::kSpin);
    int epoll_fd = watch_reader(pong, how);
    ready_and_wait(go_fd);
    uint64_t msg = 0;
    for (int i = 0; i < n; ++i) {
      if (!spin) std::this_thread::sleep_for(kPingGap);
      auto t0 = Clock::now();
      check(ping.append(std::as_bytes(std::span(&msg, 1))), "append");
      auto v = next_message(pong, how, epoll_fd);
      if (v.size() != 8) die("short pong");
      samples.data()[i] = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2;
      ++msg;
    }
    check(ping.close(), "close");
    return 0.0;
  });
  // Ponger: produces "pong", reads "ping".
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto pong = take(client.create("bench-pong"), "create");
    char byte = 1;
    if (write(created[1], &byte, 1) != 1) _exit(1);
    shmstream::Reader ping = [&] {
      for (;;) {  // the pinger creates "bench-ping" concurrently
        auto r = client.open("bench-ping");
        if (r.ok()) return std::move(r.value());
        if (r.status().code() != shmstream::ErrorCode::kNotFound) die(r.status().to_string());
        std::this_thread::yield();
      }
    }();
    if (spin) ping.set_wait_strategy(shmstream::WaitStrategy::kSpin);
    int epoll_fd = watch_reader(ping, how);
    ready_and_wait(go_fd);
    for (int i = 0; i < n; ++i) {
      auto v = next_message(ping, how, epoll_fd);
      if (v.size() != 8) die("short ping");
      check(pong.append(v), "append");
    }
    check(pong.close(), "close");
    return 0.0;
  });
  run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  auto out = samples.take();
  remove_stream(o, "bench-ping");
  remove_stream(o, "bench-pong");
  return out;
}

long futex(std::atomic<uint32_t>* word, int op, uint32_t value) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, value, nullptr, nullptr, 0);
}

std::vector<double> futex_pingpong(const Options& o) {
  // Two words on a shared page: each side waits on its own word, wakes the other's.
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* words = new (page) std::atomic<uint32_t>[2] {};
  const int n = o.latency_samples;
  SharedSamples samples(n);
  auto wait_for_change = [](std::atomic<uint32_t>* w, uint32_t seen) {
    while (w->load(std::memory_order_acquire) == seen) futex(w, FUTEX_WAIT, seen);
  };
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    for (int i = 0; i < n; ++i) {
      std::this_thread::sleep_for(kPingGap);
      auto t0 = Clock::now();
      uint32_t seen = words[1].load(std::memory_order_acquire);
      words[0].fetch_add(1, std::memory_order_release);
      futex(&words[0], FUTEX_WAKE, 1);
      wait_for_change(&words[1], seen);
      samples.data()[i] = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2;
    }
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    uint32_t seen = 0;
    for (int i = 0; i < n; ++i) {
      wait_for_change(&words[0], seen);
      seen = words[0].load(std::memory_order_acquire);
      words[1].fetch_add(1, std::memory_order_release);
      futex(&words[1], FUTEX_WAKE, 1);
    }
    return 0.0;
  });
  run_parties(bodies);
  auto out = samples.take();
  munmap(page, 4096);
  return out;
}

// Baseline for busy-polling: two processes bounce a counter through two shared cache lines.
std::vector<double> spin_pingpong(int n) {
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* ping = new (page) std::atomic<uint64_t>{0};
  auto* pong = new (static_cast<char*>(page) + 128) std::atomic<uint64_t>{0};
  SharedSamples samples(n);
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    for (uint64_t i = 1; i <= static_cast<uint64_t>(n); ++i) {
      auto t0 = Clock::now();
      ping->store(i, std::memory_order_release);
      while (pong->load(std::memory_order_acquire) != i) __builtin_ia32_pause();
      samples.data()[i - 1] =
          std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2;
    }
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    for (uint64_t i = 1; i <= static_cast<uint64_t>(n); ++i) {
      while (ping->load(std::memory_order_acquire) != i) __builtin_ia32_pause();
      pong->store(i, std::memory_order_release);
    }
    return 0.0;
  });
  run_parties(bodies);
  auto out = samples.take();
  munmap(page, 4096);
  return out;
}

}  // namespace

double line_latency_ns() { return percentiles(spin_pingpong(2000)).p50; }

void scenario_latency_spin(const Options& o) {
  std::string params = "\"samples\":" + std::to_string(o.latency_samples) + ",\"message\":8";
  auto shm = percentiles(dumped(o, "busy_poll_shmstream", stream_pingpong(o, PingWait::kSpin)));
  auto raw = percentiles(dumped(o, "busy_poll_cacheline", spin_pingpong(o.latency_samples)));
  report(o, {"latency_busy_poll", "one_way_p50", "us", shm.p50 / 1e3, "cacheline_pingpong",
             raw.p50 / 1e3, false, params});
  report(o, {"latency_busy_poll", "one_way_p99", "us", shm.p99 / 1e3, "cacheline_pingpong",
             raw.p99 / 1e3, false, params});
}

// Scenario: one-way latency of a reader waiting in an event loop (epoll on Reader::event_fd())
// against the same ping-pong with blocking reads, in the same run.
void scenario_latency_event_loop(const Options& o) {
  std::string params = "\"samples\":" + std::to_string(o.latency_samples) +
                       ",\"message\":8,\"gap_us\":" + std::to_string(kPingGap.count());
  auto loop =
      percentiles(dumped(o, "event_loop_shmstream", stream_pingpong(o, PingWait::kEventLoop)));
  auto relay = percentiles(
      dumped(o, "event_loop_relay_shmstream", stream_pingpong(o, PingWait::kEventLoopRelay)));
  auto blocked = percentiles(dumped(o, "blocked_shmstream", stream_pingpong(o, PingWait::kBlock)));
  // The descriptor the library chose where the kernel has io_uring futex waits, and the relay
  // thread it falls back to elsewhere.
  report(o, {"latency_event_loop", "one_way_p50", "us", loop.p50 / 1e3, "blocking_read",
             blocked.p50 / 1e3, false, params});
  report(o, {"latency_event_loop", "one_way_p99", "us", loop.p99 / 1e3, "blocking_read",
             blocked.p99 / 1e3, false, params});
  report(o, {"latency_event_loop_relay", "one_way_p50", "us", relay.p50 / 1e3, "blocking_read",
             blocked.p50 / 1e3, false, params});
  report(o, {"latency_event_loop_relay", "one_way_p99", "us", relay.p99 / 1e3, "blocking_read",
             blocked.p99 / 1e3, false, params});
}

void scenario_latency(const Options& o) {
  std::string params = "\"samples\":" + std::to_string(o.latency_samples) +
                       ",\"message\":8,\"gap_us\":" + std::to_string(kPingGap.count());
  auto shm = percentiles(dumped(o, "blocked_shmstream", stream_pingpong(o, PingWait::kBlock)));
  auto raw = percentiles(dumped(o, "blocked_futex", futex_pingpong(o)));
  report(o, {"latency_blocked", "one_way_p50", "us", shm.p50 / 1e3, "futex_pingpong", raw.p50 / 1e3,
             false, params});
  report(o, {"latency_blocked", "one_way_p99", "us", shm.p99 / 1e3, "futex_pingpong", raw.p99 / 1e3,
             false, params});
  report(o, {"latency_blocked", "one_way_p99.9", "us", shm.p999 / 1e3, "futex_pingpong",
             raw.p999 / 1e3, false, params});
}

}  // namespace shmstream::bench
