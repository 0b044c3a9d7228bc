// control_fuzz — libFuzzer target: arbitrary bytes on a connection to the daemon's control
// socket, served by the real Registry and Server on a kj event loop in this process.
//
// Each input is one connection: the bytes are written, the write side is shut, and the loop
// runs until the daemon closes the connection (a hang is a crash here). Whatever the input
// created is removed afterwards, and the daemon must still answer a well-formed client: a
// malformed message costs only its own connection.
#include <fcntl.h>
#include <kj/async-io.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

#include "daemon/registry.hpp"
#include "daemon/server.hpp"

using namespace shmstream;

namespace {

struct World {
  World() {
    char tmpl[] = "/tmp/shmstream-fuzz-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) std::abort();
    dir = tmpl;
    socket_path = dir + "/ctl.sock";
    daemon::RegistryConfig config;
    config.segment_dir = dir;
    config.persist_dir = dir + "/persist";
    config.instance = "fuzz";
    // Rings are allocated whole: keep what one input can make small.
    config.max_ring_capacity = 1 << 20;
    config.default_max_readers = 4;
    registry = std::make_unique<daemon::Registry>(config);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof(addr.sun_path) - 1);
    if (bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        listen(listen_fd, 16) != 0) {
      std::abort();
    }
    server = std::make_unique<daemon::Server>(io, *registry, listen_fd);
    accepting = server->run().eagerlyEvaluate([](kj::Exception&& e) { std::abort(); });
  }

  kj::AsyncIoContext io = kj::setupAsyncIo();
  std::string dir;
  std::string socket_path;
  std::unique_ptr<daemon::Registry> registry;
  int listen_fd = -1;
  std::unique_ptr<daemon::Server> server;
  kj::Promise<void> accepting = nullptr;
};

World& world() {
  static World* w = [] {
    spdlog::set_level(spdlog::level::off);
    auto* world = new World();
    // The scratch directory goes when libFuzzer exits (its files are unlinked already).
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(w->dir, ec);
    });
    return world;
  }();
  return *w;
}

int connect_to(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) std::abort();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  int fd = connect_to(w.socket_path);
  fcntl(fd, F_SETFL, O_NONBLOCK);
  size_t sent = 0;
  bool shut = false;
  char reply[65536];
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    // Feed the daemon, drain its replies (fds that ride along are closed by read()), and let
    // it run, until it closes the connection.
    if (sent < size) {
      ssize_t n = ::write(fd, data + sent, size - sent);
      if (n > 0) sent += static_cast<size_t>(n);
      if (n < 0 && errno != EAGAIN) sent = size;  // the daemon already hung up
    }
    if (sent == size && !shut) {
      shutdown(fd, SHUT_WR);
      shut = true;
    }
    w.io.waitScope.poll();
    ssize_t n = ::read(fd, reply, sizeof(reply));
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
    if (std::chrono::steady_clock::now() > deadline) {
      std::fprintf(stderr, "control_fuzz: the daemon kept the connection open for 10 s\n");
      std::abort();
    }
  }
  ::close(fd);
  for (int i = 0; i < 1000 && w.server->connection_count() != 0; ++i) w.io.waitScope.poll();
  // Nothing outlives the input: its streams go, and the connection count is back to zero.
  for (const auto& s : w.registry->list()) {
    if (!s.removing) (void)w.registry->remove(s.name, /*force=*/true, daemon::Peer{0, 0, 0, {}});
  }
  w.io.waitScope.poll();  // released streams' descriptors go once the loop runs (evalLast)
  if (w.server->connection_count() != 0 || !w.registry->list().empty()) {
    std::fprintf(stderr, "control_fuzz: %zu connections, %zu streams left after the input\n",
                 w.server->connection_count(), w.registry->list().size());
    std::abort();
  }
  // And no descriptor leaked (the first input sets the baseline; the daemon keeps two more
  // for good once used: a pidfd on its producer, this process, and its persistent directory).
  static size_t baseline = 0;
  // (libFuzzer opens pipes and /dev/null for itself as it goes: those are not counted.)
  size_t open_fds = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (target.rfind("pipe:", 0) != 0 && target != "/dev/null" && target.rfind("/proc/", 0) != 0) {
      ++open_fds;
    }
  }
  if (baseline == 0) baseline = open_fds;
  if (open_fds > baseline + 2) {
    std::fprintf(stderr, "control_fuzz: %zu descriptors open, %zu before:\n", open_fds, baseline);
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
      std::error_code ec;
      std::fprintf(stderr, "  %s -> %s\n", e.path().filename().c_str(),
                   std::filesystem::read_symlink(e.path(), ec).c_str());
    }
    std::abort();
  }
  return 0;
}
