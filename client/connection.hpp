// client/connection.hpp — one Cap'n Proto RPC connection to shmstreamd, served by a private
// event-loop thread. Other threads hand it jobs through a mutex-guarded queue and an eventfd
// that wakes the loop, and wait for their results on a condition variable. (Not kj::Executor:
// its synchronisation lives in uninstrumented libkj, invisible to ThreadSanitizer.)
// Capabilities live on the loop thread and are referred to by handle.
#pragma once

#include <capnp/capability.h>
#include <kj/async.h>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "proto/control.capnp.h"
#include "shmstream/status.hpp"

namespace shmstream {

// How to take a capability back from a restarted daemon (proto reattachProducer/Reader).
struct Reattach {
  bool producer = false;
  std::string name;
  uint64_t stream_id = 0;
  uint32_t slot = 0;  // readers
};

// A capability the loop holds, and the connection to the daemon it belongs to.
struct Held {
  capnp::Capability::Client cap;
  uint64_t session = 0;  // LoopState::session when it was granted or last reattached
};

// What the loop thread owns; touched only on that thread.
struct LoopState {
  proto::Control::Client control{nullptr};
  uint64_t session = 0;  // the connection to the daemon now, counted from 1
  std::map<uint64_t, Held> capabilities;
  std::map<uint64_t, Reattach> reattach;  // by capability handle
  uint64_t next_handle = 1;
  // Keeps `cap`, granted over connection `granted_in`, under a new handle.
  uint64_t hold(capnp::Capability::Client cap, uint64_t granted_in) {
    capabilities.emplace(next_handle, Held{kj::mv(cap), granted_in});
    return next_handle++;
  }
};

class Connection {
 public:
  // Takes ownership of `fd`, a connected Unix stream socket. When the daemon goes away, the
  // connection reconnects by itself (starting a daemon if `autostart`), and takes back the
  // capabilities remembered with remember(); meanwhile requests fail with kUnavailable.
  static Result<std::shared_ptr<Connection>> start(int fd, std::string socket_path, bool autostart,
                                                   std::string daemon_path);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs `fn` on the loop thread and waits for the promise it returns. An exception (a broken
  // connection, a malformed reply) becomes a kUnavailable/kProtocol status.
  template <typename T>
  Result<T> run(const char* what, std::function<kj::Promise<T>(LoopState&)> fn);
  // Drops a capability held by handle (its server-side effects: reader uncounted, etc.).
  // Does not wait.
  void release(uint64_t handle);
  // Reattaches capability `handle` after a reconnection, or (nullopt) no longer. `granted_in`
  // is the session it was granted in (LoopState::session): if the connection was lost and
  // made again since, the reconnection went by without it and it is reattached at once.
  void remember(uint64_t handle, std::optional<Reattach> how, uint64_t granted_in = 0);
  // Reconnections so far (for tests and diagnostics).
  uint64_t reconnections() const { return reconnections_.load(std::memory_order_relaxed); }
  const std::string& socket_path() const { return socket_path_; }

 private:
  using Job = std::function<kj::Promise<void>(LoopState&)>;
  Connection() = default;
  Status exception_status(const char* what, const kj::Exception& e) const;
  // Queues a job for the loop thread and wakes it; or, while the connection is still session
  // `quiet_in` (LoopState::session; 0 is none), leaves it to run with the next job or first
  // thing on a reconnection. False if the loop has ended.
  bool submit(Job job, uint64_t quiet_in = 0);
  void thread_main(int fd, std::promise<void>* ready);

  std::string socket_path_;
  bool autostart_ = false;
  std::string daemon_path_;
  std::atomic<uint64_t> reconnections_{0};
  int wake_fd_ = -1;  // eventfd: written after queueing, watched by the loop
  std::thread thread_;
  std::mutex mutex_;              // guards jobs_, stopping_ and every job's result slot
  std::condition_variable done_;  // signalled when a job's result is stored
  std::deque<Job> jobs_;
  bool stopping_ = false;
  uint64_t session_ = 0;  // LoopState::session as of the loop's last look at jobs_
};

template <typename T>
Result<T> Connection::run(const char* what, std::function<kj::Promise<T>(LoopState&)> fn) {
  std::optional<Result<T>> slot;  // guarded by mutex_
  // The caller sleeps until the reply: polling for it (tried for 200 µs) took CPU time the
  // daemon and the loop thread needed on a 2-vCPU machine (open p50 454 against 341 µs).
  auto store = [this, &slot](Result<T> value) {
    std::lock_guard lock(mutex_);
    slot.emplace(std::move(value));
    done_.notify_all();
  };
  bool queued = submit([&](LoopState& loop) {
    return kj::evalNow([&] { return fn(loop); })
        .then([&](T value) { store(Result<T>(std::move(value))); },
              [&](kj::Exception&& e) { store(Result<T>(exception_status(what, e))); });
  });
  if (!queued) {
    return Status(ErrorCode::kUnavailable,
                  std::string(what) + " via " + socket_path_ + ": connection closed");
  }
  std::unique_lock lock(mutex_);
  done_.wait(lock, [&] { return slot.has_value(); });
  return std::move(*slot);
}

// Connects to the daemon at `socket_path`, starting one if allowed and none answers.
Result<int> connect_socket(const std::string& socket_path, bool autostart,
                           const std::string& daemon_path);

}  // namespace shmstream
