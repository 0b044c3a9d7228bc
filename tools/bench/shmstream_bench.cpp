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

void scenario_throughput(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) +
                       ",\"chunk\":" + std::to_string(o.chunk) + ",\"readers\":1" +
                       ",\"repeat\":" + std::to_string(o.repeat);
  auto m = medians(
      o, {[&] { return stream_fanout(o, 1, "bench-1x1"); }, [&] { return pipe_fanout(o, 1); },
          [&] { return socket_1x1(o); }, [&] { return memcpy_1core(o); }});
  double shm = m[0], pipe = m[1], sock = m[2], mem = m[3];
  report(o, {"1x1_throughput", "bytes_per_s", "GB/s", shm, "pipe_1MiB", pipe, true, params});
  report(o,
         {"1x1_throughput", "bytes_per_s", "GB/s", shm, "unix_stream_socket", sock, true, params});
  report(o, {"1x1_throughput", "bytes_per_s", "GB/s", shm, "memcpy_1core", mem, true, params});
}

void scenario_fanout(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) +
                       ",\"chunk\":" + std::to_string(o.chunk) + ",\"readers\":4";
  auto m = medians(
      o, {[&] { return stream_fanout(o, 4, "bench-1x4"); }, [&] { return pipe_fanout(o, 4); }});
  double shm = m[0], tee = m[1];
  report(o,
         {"1x4_fanout", "stream_bytes_per_s", "GB/s", shm, "tee_into_4_pipes", tee, true, params});
}

// ---------------------------------------------------------------------------------------------
// Scenario: the CLI as a fan-out: `producer | shmstream write` with N `shmstream cat | consumer`,
// against `producer | tee` into N pipes. Both move o.bytes to every consumer, which reads every
// byte; all pipes get a 1 MiB buffer.

std::string sibling(const char* program) {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / program).string();
}

int make_pipe(int fds[2]) {
  if (pipe2(fds, O_CLOEXEC) != 0) die("pipe");
  fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
  return 0;
}

// Forks and execs argv with `in` as stdin and `out` as stdout (-1: inherited) and the given
// extra descriptors at 3, 4, ...; returns the pid.
pid_t spawn(const std::vector<std::string>& argv, int in, int out,
            const std::vector<int>& extra = {}) {
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (in >= 0) dup2(in, 0);
    if (out >= 0) dup2(out, 1);
    for (size_t i = 0; i < extra.size(); ++i) dup2(extra[i], static_cast<int>(3 + i));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  return pid;
}

void wait_ok(pid_t pid, const char* what) {
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die(std::string(what) + " failed");
}

// In a party: polls until stream `name` exists (the CLI's writer creates it).
void await_stream(const Options& o, const std::string& name) {
  auto client = connect_client(o);
  while (!client.stat(name).ok()) std::this_thread::sleep_for(1ms);
}

// The producer party: writes o.bytes into `in_pipe` (the CLI writer's or tee's stdin).
double feed(const Options& o, int fd, int go_fd) {
  ready_and_wait(go_fd);
  for (uint64_t off = 0; off < o.bytes; off += o.chunk) write_all(fd, chunk_at(off, o.chunk));
  close(fd);
  return 0.0;
}

double cli_fanout(const Options& o, int readers) {
  const std::string name = "bench-cli";
  const std::string cli = sibling("shmstream");
  int src[2];
  make_pipe(src);
  pid_t writer = spawn({cli, "--socket", o.socket, "write", name}, src[0], -1);
  close(src[0]);
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    await_stream(o, name);
    return feed(o, src[1], go_fd);
  });
  for (int i = 0; i < readers; ++i) {
    bodies.push_back([&](int go_fd) {
      close(src[1]);
      await_stream(o, name);
      int out[2];
      make_pipe(out);
      ready_and_wait(go_fd);
      pid_t cat = spawn({cli, "--socket", o.socket, "cat", name}, -1, out[1]);
      close(out[1]);
      double acc = drain(out[0], o.chunk);
      wait_ok(cat, "shmstream cat");
      return acc;
    });
  }
  RunResult r = run_parties(bodies, [&] { close(src[1]); });
  wait_ok(writer, "shmstream write");
  remove_stream(o, name);
  return gbps(o.bytes, r.seconds);
}

double tee_fanout(const Options& o, int readers) {
  int src[2];
  make_pipe(src);
  std::vector<int> read_ends, write_ends;
  for (int i = 0; i < readers; ++i) {
    int p[2];
    make_pipe(p);
    read_ends.push_back(p[0]);
    write_ends.push_back(p[1]);
  }
  // tee writes its stdin to stdout (the first pipe) and to /dev/fd/3.. (the others).
  std::vector<std::string> argv = {"tee"};
  for (int i = 1; i < readers; ++i) argv.push_back("/dev/fd/" + std::to_string(2 + i));
  pid_t tee = spawn(argv, src[0], write_ends[0],
                    std::vector<int>(write_ends.begin() + 1, write_ends.end()));
  close(src[0]);
  for (int fd : write_ends) close(fd);
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    for (int fd : read_ends) close(fd);
    return feed(o, src[1], go_fd);
  });
  for (int i = 0; i < readers; ++i) {
    bodies.push_back([&, i](int go_fd) {
      close(src[1]);
      return fd_reader(read_ends[i], o.chunk, go_fd);
    });
  }
  RunResult r = run_parties(bodies, [&] {
    close(src[1]);
    for (int fd : read_ends) close(fd);
  });
  wait_ok(tee, "tee");
  return gbps(o.bytes, r.seconds);
}

void scenario_cli(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) + ",\"readers\":4";
  auto m = medians(o, {[&] { return cli_fanout(o, 4); }, [&] { return tee_fanout(o, 4); }});
  report(o, {"cli_1x4_fanout", "stream_bytes_per_s", "GB/s", m[0], "tee_into_4_pipes", m[1], true,
             params});
}

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

void scenario_records(const Options& o) {
  const uint64_t count = o.quick ? 2'000'000 : 20'000'000;
  std::string params =
      "\"records\":" + std::to_string(count) + ",\"record_bytes\":" + std::to_string(kRecordSize);
  auto m = medians(
      o, {[&] { return stream_records(o, count); }, [&] { return seqpacket_records(count); }});
  report(o, {"records_64B", "records_per_s", "M/s", m[0] / 1e6, "unix_seqpacket", m[1] / 1e6, true,
             params});
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

void scenario_idle_readers(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) +
                       ",\"chunk\":" + std::to_string(o.chunk) + ",\"idle_readers\":16";
  auto m = medians(o, {[&] { return producer_only(o, 0, "bench-alone"); },
                       [&] { return producer_only(o, 16, "bench-idle"); }});
  double alone = m[0], with_idle = m[1];
  report(o, {"idle_readers", "producer_bytes_per_s", "GB/s", with_idle, "producer_alone", alone,
             true, params});
}

// ---------------------------------------------------------------------------------------------
// Scenario: one-way latency, reader blocked in the futex. Ping-pong over two streams; one-way
// = round trip / 2. Baseline: a raw futex ping-pong between two processes.

// Between two pings of the blocked-latency scenarios the pinger pauses this long, so that the
// other side has given up polling and sleeps in the futex when the ping comes (a reader polls
// for a few microseconds before it sleeps).
constexpr auto kPingGap = 100us;

// How a ping-pong side waits for the other's message.
enum class PingWait {
  kBlock,      // a blocking read (futex)
  kSpin,       // WaitStrategy::kSpin
  kEventLoop,  // epoll on Reader::event_fd(), reading with a zero timeout
};

// The next 8-byte message of `reader`, waited for as `how` says.
std::span<const std::byte> next_message(shmstream::Reader& reader, PingWait how, int epoll_fd) {
  if (how != PingWait::kEventLoop) return take(reader.next(8), "read");
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
  if (how != PingWait::kEventLoop) return -1;
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
std::vector<double> spin_pingpong(const Options& o) {
  void* page = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  auto* ping = new (page) std::atomic<uint64_t>{0};
  auto* pong = new (static_cast<char*>(page) + 128) std::atomic<uint64_t>{0};
  const int n = o.latency_samples;
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

void scenario_latency_spin(const Options& o) {
  std::string params = "\"samples\":" + std::to_string(o.latency_samples) + ",\"message\":8";
  auto shm = percentiles(dumped(o, "busy_poll_shmstream", stream_pingpong(o, PingWait::kSpin)));
  auto raw = percentiles(dumped(o, "busy_poll_cacheline", spin_pingpong(o)));
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
  auto blocked = percentiles(dumped(o, "blocked_shmstream", stream_pingpong(o, PingWait::kBlock)));
  report(o, {"latency_event_loop", "one_way_p50", "us", loop.p50 / 1e3, "blocking_read",
             blocked.p50 / 1e3, false, params});
  report(o, {"latency_event_loop", "one_way_p99", "us", loop.p99 / 1e3, "blocking_read",
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
    execl(daemon.c_str(), "shmstreamd", "--foreground", "--socket", o.socket.c_str(), "--ready-fd",
          "3", "--log-level", "warn", nullptr);
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
  auto wanted = [&](const char* name) {
    return only.empty() || std::find(only.begin(), only.end(), name) != only.end();
  };
  if (wanted("throughput")) scenario_throughput(o);
  if (wanted("fanout")) scenario_fanout(o);
  if (wanted("cli")) scenario_cli(o);
  if (wanted("records")) scenario_records(o);
  if (wanted("cursor")) scenario_cursor(o);
  if (wanted("idle")) scenario_idle_readers(o);
  if (wanted("latency")) scenario_latency(o);
  if (wanted("spin")) scenario_latency_spin(o);
  if (wanted("event_loop")) scenario_latency_event_loop(o);
  if (wanted("memory")) scenario_memory(o);
  if (wanted("iceoryx")) scenario_iceoryx(o);
  if (wanted("control")) scenario_control(o);
  if (wanted("bridge")) scenario_bridge(o);
  kill(daemon, SIGTERM);
  waitpid(daemon, nullptr, 0);
  std::filesystem::remove_all(dir);
  return 0;
}
