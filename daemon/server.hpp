// daemon/server.hpp — serves the control protocol (proto/control.capnp) on a listening Unix
// socket: one Cap'n Proto two-party RPC connection per client, with fd passing.
//
// A connection that sends garbage, or dies, costs only itself: its capabilities are dropped
// (a producer's stream aborts, a reader stops counting) and every other connection goes on.
// Not thread-safe: runs on the daemon's event-loop thread.
#pragma once

#include <kj/async-io.h>
#include <kj/async-unix.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "daemon/registry.hpp"

namespace shmstream::daemon {

struct ServerLimits {
  // Largest control message accepted, in 8-byte words (guards the daemon's memory).
  uint64_t max_message_words = 1 << 20;
  // Connections one uid may hold open at once; the next gets kLimitExceeded on every request
  // (and costs others nothing).
  uint32_t max_connections_per_user = 256;
  // Connections in all; the next gets kLimitExceeded on every request. Refused connections do
  // not count toward either limit; at most 64 are open at once, the next are closed unanswered.
  uint32_t max_connections = 4096;
  // While a client leaves more than this many reply bytes unread, none of its further requests
  // is read; if that lasts stall_limit_ms, it is dropped (see PacedStream).
  size_t reply_backlog_bytes = 64 * 1024;
  uint64_t stall_limit_ms = 30'000;
  // After a restart, how long the readers of the previous daemon have to reattach before
  // their slots are freed (clients reconnect within about a second).
  uint64_t reattach_grace_ms = 10'000;
};

// What the daemon says of itself (Control.info), besides its registry and limits.
struct About {
  std::string config_file;  // empty: none read
  uint64_t started_unix_ns = 0;
};

class Server final : private kj::TaskSet::ErrorHandler {
 public:
  Server(kj::AsyncIoContext& io, Registry& registry, int listen_fd, ServerLimits limits = {});
  ~Server() noexcept(false);

  // Accepts connections until the returned promise is dropped.
  kj::Promise<void> run();
  size_t connection_count() const { return connections_; }
  void set_about(About about) { about_ = std::move(about); }
  // Resolves with the uid that asked (Control.stop) once a stop is asked for; taken once.
  kj::Promise<uid_t> stop_asked() { return kj::mv(stop_.promise); }
  // Control.stop from `uid`, allowed: stop_asked() resolves once this turn's replies are out.
  void ask_stop(uid_t uid);
  const About& about() const { return about_; }
  const ServerLimits& limits() const { return limits_; }
  // Aborts the stream when process `pid` exits, even if its connection lives on elsewhere
  // (a forked child) or it never connected to this daemon (a stream adopted after a restart).
  void watch_producer(const std::shared_ptr<Stream>& stream, pid_t pid);

 private:
  struct Connection;
  // One pidfd per producer process, shared by all the streams it created.
  struct ProcessWatch {
    kj::AutoCloseFd pidfd;
    // Declared after pidfd, so destroyed first: it unregisters the fd from epoll while open.
    kj::Own<kj::UnixEventPort::FdObserver> observer;
    std::vector<std::weak_ptr<Stream>> streams;                     // it produces them
    std::vector<std::pair<std::weak_ptr<Stream>, uint32_t>> slots;  // adopted reader slots
  };
  // The watch of live process `pid` (one pidfd serves all its streams); nullptr if it is gone
  // (`gone` set) or cannot be watched.
  ProcessWatch* watch_process(pid_t pid, bool* gone);
  void process_exited(pid_t pid, std::shared_ptr<ProcessWatch> watch);
  // Producer `pid` of `stream` exited: aborts it, or gives a successor its resume grace.
  void producer_exited(const std::shared_ptr<Stream>& stream, pid_t pid);
  // Aborts `stream` after its resume grace unless a successor resumed it by then.
  void start_grace(const std::shared_ptr<Stream>& stream);
  // Enforces the streams' stall limits, forever (Registry::enforce_stall_limits()).
  kj::Promise<void> watch_stalls();

  void serve(int fd);
  void release_uid(uid_t uid);
  void taskFailed(kj::Exception&& exception) override;

  kj::AsyncIoContext& io_;
  Registry& registry_;
  int listen_fd_;
  ServerLimits limits_;
  About about_;
  kj::PromiseFulfillerPair<uid_t> stop_ = kj::newPromiseAndFulfiller<uid_t>();
  kj::UnixEventPort::FdObserver listen_observer_;
  std::map<pid_t, std::shared_ptr<ProcessWatch>> watches_;
  size_t connections_ = 0;
  std::map<uid_t, uint32_t> connections_by_uid_;
  // Refused connections, open only to answer why; bounded, and counted apart.
  static constexpr size_t kMaxRefusedOpen = 64;  // refusals being written at once
  size_t refused_open_ = 0;
  uint64_t next_connection_id_ = 1;
  uint64_t stall_ticks_ = 0;  // watch_stalls() rounds: byte quotas are checked every 20th
  kj::TaskSet tasks_;
};

}  // namespace shmstream::daemon
