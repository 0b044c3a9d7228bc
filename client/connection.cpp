#include "client/connection.hpp"

#include <capnp/rpc-twoparty.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <thread>

#include "shm/naming.hpp"

extern char** environ;

namespace shmstream {
namespace {

// Where to find shmstreamd when autostarting: explicit, $SHMSTREAMD, beside this program,
// beside this library (its install prefix's bin/), the configured install prefix, then PATH.
std::string find_daemon(const std::string& configured) {
  if (!configured.empty()) return configured;
  if (const char* env = std::getenv("SHMSTREAMD"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    auto sibling = self.parent_path() / "shmstreamd";
    if (access(sibling.c_str(), X_OK) == 0) return sibling.string();
  }
  // The daemon installed with this library: PREFIX/lib[/ARCH]/libshmstream.so.0 ->
  // PREFIX/bin/shmstreamd (whatever prefix `cmake --install --prefix` was given).
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&find_daemon), &info) != 0 && info.dli_fname != nullptr) {
    auto library = std::filesystem::canonical(info.dli_fname, ec);
    if (!ec) {
      auto lib_dir = library.parent_path();
      for (const auto& prefix : {lib_dir.parent_path(), lib_dir.parent_path().parent_path()}) {
        auto installed = prefix / "bin" / "shmstreamd";
        if (access(installed.c_str(), X_OK) == 0) return installed.string();
      }
    }
  }
#ifdef SHMSTREAM_INSTALL_BINDIR
  std::string installed = std::string(SHMSTREAM_INSTALL_BINDIR) + "/shmstreamd";
  if (access(installed.c_str(), X_OK) == 0) return installed;
#endif
  return "shmstreamd";
}

// One connect attempt; returns the fd or -errno.
int try_connect(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return -ENAMETOOLONG;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

// Runs `shmstreamd --socket PATH`, which returns once its socket listens (it forks to serve).
Status start_daemon(const std::string& daemon, const std::string& socket_path) {
  std::string arg0 = "shmstreamd";
  std::string flag = "--socket";
  std::string path = socket_path;
  char* argv[] = {arg0.data(), flag.data(), path.data(), nullptr};
  pid_t pid = 0;
  int rc = daemon.find('/') == std::string::npos
               ? posix_spawnp(&pid, daemon.c_str(), nullptr, nullptr, argv, environ)
               : posix_spawn(&pid, daemon.c_str(), nullptr, nullptr, argv, environ);
  if (rc != 0) {
    return Status(ErrorCode::kUnavailable,
                  fmt::format("no daemon at {}, and starting {} failed: {}", socket_path, daemon,
                              std::strerror(rc)));
  }
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  // Exit 3: another daemon won the race to start; it serves the socket, so connecting works.
  if (WIFEXITED(wstatus) && (WEXITSTATUS(wstatus) == 0 || WEXITSTATUS(wstatus) == 3)) {
    return Status();
  }
  return Status(ErrorCode::kUnavailable,
                fmt::format("no daemon at {}, and {} failed to start (status {:#x}); see {}.log",
                            socket_path, daemon, wstatus, socket_path));
}

// Whether the daemon at the other end of `fd` may be trusted with our streams: it runs as us or
// as root. Anyone else could have bound the path first (a squatted directory, a stale socket
// taken over) and would read what we write, and hand us segments of its making.
Status check_daemon_peer(int fd, const std::string& socket_path) {
  ucred peer{};
  socklen_t len = sizeof(peer);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) {
    return Status(ErrorCode::kUnavailable, fmt::format("{}: cannot tell who serves it: {}",
                                                       socket_path, std::strerror(errno)));
  }
  if (peer.uid == 0 || peer.uid == geteuid() || peer.uid == getuid()) return Status();
  return Status(ErrorCode::kPermissionDenied,
                fmt::format("refusing the daemon at {}: it runs as uid {} (pid {}), neither you "
                            "(uid {}) nor root, so it could read and forge your streams",
                            socket_path, peer.uid, peer.pid, geteuid()));
}

// A connection to a daemon we trust (check_daemon_peer()), or its error; closes `fd` if refused.
Result<int> trusted(int fd, const std::string& socket_path) {
  if (Status s = check_daemon_peer(fd, socket_path); !s.ok()) {
    ::close(fd);
    return s;
  }
  return fd;
}

}  // namespace

Result<int> connect_socket(const std::string& socket_path, bool autostart,
                           const std::string& daemon_path) {
  int fd = try_connect(socket_path);
  if (fd >= 0) return trusted(fd, socket_path);
  bool absent = fd == -ENOENT || fd == -ECONNREFUSED;
  if (!absent || !autostart) {
    return Status(ErrorCode::kUnavailable,
                  fmt::format("no daemon answers at {}: {}{}", socket_path, std::strerror(-fd),
                              absent ? " (autostart disabled)" : ""));
  }
  // A daemon is started only in a directory that only we (or root) may write; the daemon checks
  // it again on its descriptor. A missing one it creates.
  if (auto dir = shm::open_socket_dir(socket_path, geteuid()); dir.ok()) {
    ::close(*dir);
  } else if (dir.status().code() != ErrorCode::kNotFound) {
    return Status(dir.status().code(), fmt::format("no daemon at {}, and none started: {}",
                                                   socket_path, dir.status().message()));
  }
  if (Status s = start_daemon(find_daemon(daemon_path), socket_path); !s.ok()) return s;
  // The daemon listens before its launcher exits; retries only cover losing a start race to a
  // daemon that has locked the socket but not bound it yet.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (auto pause = std::chrono::milliseconds(1);; pause *= 2) {
    fd = try_connect(socket_path);
    if (fd >= 0) return trusted(fd, socket_path);
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::min(pause, std::chrono::milliseconds(100)));
  }
  return Status(ErrorCode::kUnavailable, fmt::format("started shmstreamd, but {} still refuses: {}",
                                                     socket_path, std::strerror(-fd)));
}

Result<std::shared_ptr<Connection>> Connection::start(int fd, std::string socket_path,
                                                      bool autostart, std::string daemon_path) {
  std::shared_ptr<Connection> connection(new Connection());
  connection->socket_path_ = std::move(socket_path);
  connection->autostart_ = autostart;
  connection->daemon_path_ = std::move(daemon_path);
  connection->wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (connection->wake_fd_ < 0) {
    ::close(fd);
    return Status(ErrorCode::kIo, fmt::format("eventfd: {}", std::strerror(errno)));
  }
  std::promise<void> ready;
  auto ready_future = ready.get_future();
  connection->thread_ =
      std::thread([c = connection.get(), fd, &ready]() { c->thread_main(fd, &ready); });
  try {
    ready_future.get();
  } catch (const kj::Exception& e) {
    connection->thread_.join();
    return Status(
        ErrorCode::kUnavailable,
        fmt::format("connecting to {}: {}", connection->socket_path_, e.getDescription().cStr()));
  } catch (const std::exception& e) {
    connection->thread_.join();
    return Status(ErrorCode::kUnavailable,
                  fmt::format("connecting to {}: {}", connection->socket_path_, e.what()));
  }
  return connection;
}

namespace {

// How a daemon's refusal of a connection over its limits reaches us: the reason of the RPC
// Abort message it sends before it closes (daemon/server.cpp), as a disconnection.
constexpr std::string_view kRefusedReason = "remote exception: limit_exceeded: ";

// One RPC connection to a daemon.
struct Session {
  kj::Own<kj::AsyncCapabilityStream> stream;
  kj::Own<capnp::TwoPartyVatNetwork> network;
  kj::Own<capnp::RpcSystem<capnp::rpc::twoparty::VatId>> rpc;
};

kj::Own<Session> open_session(kj::AsyncIoContext& io, int fd, LoopState& state) {
  auto session = kj::heap<Session>();
  session->stream =
      io.lowLevelProvider->wrapUnixSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                                                    kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC);
  // Up to 4 fds per message: replies carry a segment fd and a wait-file fd.
  session->network =
      kj::heap<capnp::TwoPartyVatNetwork>(*session->stream, 4, capnp::rpc::twoparty::Side::CLIENT);
  session->rpc = kj::heap(capnp::makeRpcClient(*session->network));
  capnp::MallocMessageBuilder message;
  auto host = message.initRoot<capnp::rpc::twoparty::VatId>();
  host.setSide(capnp::rpc::twoparty::Side::SERVER);
  state.control = session->rpc->bootstrap(host).castAs<proto::Control>();
  ++state.session;
  return session;
}

// Takes capability `handle` back from the daemon of the current session; one the daemon
// refuses (its stream was removed meanwhile) stays broken: calls on it fail.
kj::Promise<void> reattach_one(LoopState& state, uint64_t handle, const Reattach& how) {
  auto held = state.capabilities.find(handle);
  if (held == state.capabilities.end()) return kj::READY_NOW;
  held->second.session = state.session;  // asked for in this session: not again in it
  // Puts the capability of a granted reply (status code 0) in place of the broken one.
  auto replace = [&state, handle](bool granted, capnp::Capability::Client cap) {
    auto it = state.capabilities.find(handle);
    if (granted && it != state.capabilities.end()) it->second.cap = kj::mv(cap);
  };
  if (how.producer) {
    auto request = state.control.reattachProducerRequest();
    request.setName(how.name);
    request.setStreamId(how.stream_id);
    return request.send().then(
        [replace](auto response) {
          replace(response.getStatus().getCode() == 0, response.getProducer());
        },
        [](kj::Exception&&) {});
  }
  auto request = state.control.reattachReaderRequest();
  request.setName(how.name);
  request.setStreamId(how.stream_id);
  request.setSlot(how.slot);
  return request.send().then(
      [replace](auto response) {
        replace(response.getStatus().getCode() == 0, response.getReader());
      },
      [](kj::Exception&&) {});
}

// Takes back, from a new daemon, each capability remembered for reattachment that this
// session does not hold yet.
kj::Promise<void> reattach_all(LoopState& state) {
  auto requests = kj::heapArrayBuilder<kj::Promise<void>>(state.reattach.size());
  for (const auto& [handle, how] : state.reattach) {
    auto held = state.capabilities.find(handle);
    if (held != state.capabilities.end() && held->second.session != state.session) {
      requests.add(reattach_one(state, handle, how));
    }
  }
  return kj::joinPromises(requests.finish());
}

}  // namespace

void Connection::thread_main(int fd, std::promise<void>* ready) {
  bool started = false;
  try {
    auto io = kj::setupAsyncIo();
    LoopState state;
    // Sessions are kept until the end: capabilities of a lost one may still refer to it.
    std::vector<kj::Own<Session>> sessions;
    sessions.push_back(open_session(io, fd, state));
    kj::UnixEventPort::FdObserver wake(io.unixEventPort, wake_fd_,
                                       kj::UnixEventPort::FdObserver::OBSERVE_READ);
    struct Ignore : kj::TaskSet::ErrorHandler {
      void taskFailed(kj::Exception&&) override {}  // run() already stored the error
    } ignore;
    kj::TaskSet tasks(ignore);
    // Runs the queued jobs; whether the connection is stopping.
    auto run_jobs = [&]() {
      std::deque<Job> batch;
      bool stopping;
      {
        std::lock_guard lock(mutex_);
        batch.swap(jobs_);
        stopping = stopping_;
        session_ = state.session;  // remember() decides by it whether to wake us
      }
      for (auto& job : batch) tasks.add(job(state));
      return stopping;
    };
    // When the daemon goes away: reconnect, with a growing pause between attempts (the
    // daemon may be restarting), then reattach. Requests meanwhile fail with kUnavailable.
    std::function<kj::Promise<void>(kj::Duration)> reconnect;
    std::function<kj::Promise<void>()> watch = [&]() {
      return sessions.back()->network->onDisconnect().then([&]() {
        // Refused (its bootstrap broken by the daemon's refusal): not retried. Every call
        // fails with the refusal, as a connection over a limit should; a new Client retries.
        return state.control.whenResolved()
            .then([]() { return false; },
                  [](kj::Exception&& e) {
                    return std::string_view(e.getDescription().cStr()).find(kRefusedReason) !=
                           std::string_view::npos;
                  })
            .then([&](bool refused) -> kj::Promise<void> {
              if (refused) return kj::READY_NOW;
              return reconnect(10 * kj::MILLISECONDS);
            });
      });
    };
    reconnect = [&](kj::Duration pause) -> kj::Promise<void> {
      auto fd = connect_socket(socket_path_, autostart_, daemon_path_);
      if (!fd.ok()) {
        return io.provider->getTimer().afterDelay(pause).then(
            [&, pause]() { return reconnect(std::min(pause * 2, 1000 * kj::MILLISECONDS)); });
      }
      sessions.push_back(open_session(io, *fd, state));
      reconnections_.fetch_add(1, std::memory_order_relaxed);  // a counter: no data published
      run_jobs();  // what remember() queued without waking us belongs in the reattachment
      return reattach_all(state).then([&]() { return watch(); });
    };
    tasks.add(watch());
    started = true;
    ready->set_value();
    // Runs queued jobs whenever the eventfd fires, until stopping_ is set.
    std::function<kj::Promise<void>()> pump = [&]() -> kj::Promise<void> {
      return wake.whenBecomesReadable().then([&]() -> kj::Promise<void> {
        uint64_t count;
        while (::read(wake_fd_, &count, sizeof(count)) > 0) {
        }
        if (run_jobs()) return kj::READY_NOW;
        return pump();
      });
    };
    pump().wait(io.waitScope);
    // Capabilities die on their own thread, before the connections they belong to.
    // (The tasks, then the sessions, go as the scope ends, in that order.)
    state.capabilities.clear();
    state.control = nullptr;
  } catch (...) {
    if (!started) ready->set_exception(std::current_exception());
  }
  std::lock_guard lock(mutex_);
  stopping_ = true;  // in case the loop died on its own: later submits fail fast
}

bool Connection::submit(Job job, uint64_t quiet_in) {
  bool wake;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return false;
    jobs_.push_back(std::move(job));
    // Under the lock that run_jobs() takes after a reconnection made a new session: either it
    // finds this job queued, or we find the new session here.
    wake = quiet_in == 0 || quiet_in != session_;
  }
  if (!wake) return true;
  uint64_t one = 1;
  return ::write(wake_fd_, &one, sizeof(one)) == sizeof(one);
}

Connection::~Connection() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Connection::release(uint64_t handle) {
  submit([handle](LoopState& loop) {
    loop.capabilities.erase(handle);
    loop.reattach.erase(handle);
    return kj::Promise<void>(kj::READY_NOW);
  });
}

void Connection::remember(uint64_t handle, std::optional<Reattach> how, uint64_t granted_in) {
  // Only a reconnection reads it: queued without waking the loop thread while the session it
  // was granted in lasts (one wake-up less per create and open); the next job, or a
  // reconnection, runs it first.
  const uint64_t quiet_in = how ? granted_in : 0;
  submit(
      [handle, how = std::move(how)](LoopState& loop) {
        auto held = loop.capabilities.find(handle);
        if (!how) {
          loop.reattach.erase(handle);
        } else if (held != loop.capabilities.end()) {
          loop.reattach[handle] = *how;
          // The daemon that granted it died between its reply and now, and the reconnection's
          // reattachment went by without it: taken back now, or the new daemon lets its slot go
          // (a block ring's producer would then overwrite what this reader has yet to read).
          if (held->second.session != loop.session) return reattach_one(loop, handle, *how);
        }
        return kj::Promise<void>(kj::READY_NOW);
      },
      quiet_in);
}

Status Connection::exception_status(const char* what, const kj::Exception& e) const {
  // A daemon closes a connection over its limits once it has said why, in the protocol's Abort
  // message (daemon/server.cpp): every call on that connection fails with its reason.
  constexpr std::string_view kRefused = "remote exception: limit_exceeded: ";
  const std::string_view description = e.getDescription().cStr();
  if (auto at = description.find(kRefused); at != std::string_view::npos) {
    return Status(ErrorCode::kLimitExceeded, fmt::format("{} via {}: {}", what, socket_path_,
                                                         description.substr(at + kRefused.size())));
  }
  ErrorCode code = e.getType() == kj::Exception::Type::DISCONNECTED ? ErrorCode::kUnavailable
                   : e.getType() == kj::Exception::Type::OVERLOADED ? ErrorCode::kLimitExceeded
                                                                    : ErrorCode::kProtocol;
  return Status(code, fmt::format("{} via {}: {}", what, socket_path_,
                                  code == ErrorCode::kUnavailable ? "connection to shmstreamd lost"
                                                                  : e.getDescription().cStr()));
}

}  // namespace shmstream
