// Scenario cli: the CLI as a fan-out (`shmstream write` into N `shmstream cat`), against `tee`
// into N pipes.
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

}  // namespace

void scenario_cli(const Options& o) {
  std::string params = "\"bytes\":" + std::to_string(o.bytes) + ",\"readers\":4";
  auto m = medians(o, {[&] { return cli_fanout(o, 4); }, [&] { return tee_fanout(o, 4); }});
  report(o, {"cli_1x4_fanout", "stream_bytes_per_s", "GB/s", m[0], "tee_into_4_pipes", m[1], true,
             params});
}

}  // namespace shmstream::bench
