// Scenario: the control plane. Latency of create, open and close through the daemon, against
// the floor of any daemon request (a bare request/reply over a Unix socket to another process)
// and against a request of ours with nothing to do (stat of a missing name), and the time to
// list 4,000 streams, through the API and through `shmstream ls`.
#include <sys/socket.h>

#include <filesystem>

#include "bench/harness.hpp"

namespace shmstream::bench {
namespace {

double since_us(Clock::time_point t0) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

// The floor: 64-byte request, 64-byte reply, over a Unix stream socket to a forked echo process.
std::vector<double> socket_round_trips(int count) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(sv[0]);
    char buf[64];
    while (read(sv[1], buf, sizeof(buf)) == sizeof(buf)) {
      if (write(sv[1], buf, sizeof(buf)) != sizeof(buf)) break;
    }
    _exit(0);
  }
  close(sv[1]);
  std::vector<double> out;
  char buf[64] = {};
  for (int i = 0; i < count; ++i) {
    auto t0 = Clock::now();
    if (write(sv[0], buf, sizeof(buf)) != sizeof(buf)) die("echo write");
    if (read(sv[0], buf, sizeof(buf)) != sizeof(buf)) die("echo read");
    out.push_back(since_us(t0));
  }
  close(sv[0]);
  waitpid(pid, nullptr, 0);
  return out;
}

struct ControlSamples {
  std::vector<double> create, close_producer, open, close_reader, remove;
  std::vector<double> request;  // stat of a missing name: a daemon request with nothing to do
  double list_ms = 0;           // Client::list() with every stream live
  double cli_ls_ms = 0;         // `shmstream ls` (a new process: connect, list, print)
  size_t listed = 0;
};

// Runs `shmstream ls` against the bench's daemon, output discarded; returns milliseconds.
double time_cli_ls(const Options& o) {
  std::string cli =
      (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "shmstream").string();
  auto t0 = Clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    execl(cli.c_str(), "shmstream", "--socket", o.socket.c_str(), "ls", nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("shmstream ls failed");
  return since_us(t0) / 1e3;
}

// In a child (the parent holds no Client): creates `count` small streams, timing each
// request, lists them, then removes them.
void control_run(const Options& o, int count, ControlSamples* out) {
  auto client = connect_client(o);
  shmstream::CreateOptions small;
  small.max_bytes = 1 << 20;
  for (int i = 0; i < count; ++i) {
    std::string name = "ctl-" + std::to_string(i);
    auto t0 = Clock::now();
    auto producer = take(client.create(name, small), "create");
    out->create.push_back(since_us(t0));
    check(producer.append(std::as_bytes(std::span(name))), "append");
    t0 = Clock::now();
    check(producer.close(), "close");
    out->close_producer.push_back(since_us(t0));
    t0 = Clock::now();
    {
      auto reader = take(client.open(name), "open");
      out->open.push_back(since_us(t0));
      t0 = Clock::now();
    }  // the Reader's destructor detaches it from the daemon
    out->close_reader.push_back(since_us(t0));
  }
  // The floor of any request, in the same state of the daemon: stat of a missing name, with
  // nothing left over from an earlier request (a reader's release, say) for it to wait behind.
  for (int i = 0; i < count; ++i) {
    auto t0 = Clock::now();
    auto missing = client.stat("ctl-missing");
    out->request.push_back(since_us(t0));
    if (missing.ok() || missing.status().code() != shmstream::ErrorCode::kNotFound) {
      die("stat of a missing stream: " + missing.status().to_string());
    }
  }
  auto t0 = Clock::now();
  auto list = take(client.list(), "list");
  out->list_ms = since_us(t0) / 1e3;
  out->listed = list.size();
  out->cli_ls_ms = time_cli_ls(o);
  for (int i = 0; i < count; ++i) {
    t0 = Clock::now();
    check(client.remove("ctl-" + std::to_string(i)), "remove");
    out->remove.push_back(since_us(t0));
  }
}

}  // namespace

void scenario_control(const Options& o) {
  // Under the daemon's default limit of 4,096 streams per user, and well within its descriptor
  // limit (two per stream): the run holds them all at once.
  const int count = o.quick ? 1000 : 4000;
  // The samples come back from the child through shared memory: sized for `count` each.
  const size_t per = static_cast<size_t>(count);
  SharedSamples shared(per * 6 + 4);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    ControlSamples s;
    control_run(o, count, &s);
    double* d = shared.data();
    std::copy(s.create.begin(), s.create.end(), d);
    std::copy(s.close_producer.begin(), s.close_producer.end(), d + per);
    std::copy(s.open.begin(), s.open.end(), d + 2 * per);
    std::copy(s.close_reader.begin(), s.close_reader.end(), d + 3 * per);
    std::copy(s.remove.begin(), s.remove.end(), d + 4 * per);
    std::copy(s.request.begin(), s.request.end(), d + 5 * per);
    d[6 * per] = s.list_ms;
    d[6 * per + 1] = s.cli_ls_ms;
    d[6 * per + 2] = static_cast<double>(s.listed);
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("the control-plane run failed");
  std::vector<double> all = shared.take();
  auto slice = [&](int i) {
    return std::vector<double>(all.begin() + i * per, all.begin() + (i + 1) * per);
  };
  Percentiles floor = percentiles(socket_round_trips(count));
  std::string params = "\"streams\":" + std::to_string(count);
  const char* names[] = {"create", "close_producer", "open", "close_reader", "remove", "request"};
  for (int i = 0; i < 6; ++i) {
    Percentiles p = percentiles(slice(i));
    report(o, {"control_plane", std::string(names[i]) + "_p50", "us", p.p50, "unix_round_trip",
               floor.p50, false, params});
    report(o, {"control_plane", std::string(names[i]) + "_p99", "us", p.p99, "unix_round_trip",
               floor.p99, false, params});
  }
  Percentiles open = percentiles(slice(2));
  report(o, {"control_plane", "open_p50", "us", open.p50, "limit", 100.0, false, params});
  // What a request with nothing to do already costs (the client's loop thread, Cap'n Proto, the
  // daemon's loop): the rest of each figure is the request's own work.
  Percentiles request = percentiles(slice(5));
  for (int i : {0, 2, 4}) {
    report(o, {"control_plane", std::string(names[i]) + "_p50", "us", percentiles(slice(i)).p50,
               "request_p50", request.p50, false, params});
  }
  if (all[6 * per + 2] != count) die("list() did not return every stream");
  report(o, {"control_plane", "list_all", "ms", all[6 * per], "limit", 1000.0, false, params});
  report(o,
         {"control_plane", "cli_ls_all", "ms", all[6 * per + 1], "limit", 1000.0, false, params});
}

}  // namespace shmstream::bench
