// client/connection.hpp — one Cap'n Proto RPC connection to shmstreamd, served by a private
// event-loop thread. Other threads run work on that thread with run(); capabilities live there
// and are referred to by handle.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include <capnp/capability.h>
#include <kj/async.h>

#include "proto/control.capnp.h"
#include "shmstream/status.hpp"

namespace shmstream {

// What the loop thread owns; touched only on that thread.
struct LoopState {
  proto::Control::Client control{nullptr};
  std::map<uint64_t, capnp::Capability::Client> capabilities;
  kj::Own<kj::PromiseFulfiller<void>> stop;  // fulfilled to end the loop
  uint64_t next_handle = 1;
  uint64_t hold(capnp::Capability::Client cap) {
    capabilities.emplace(next_handle, kj::mv(cap));
    return next_handle++;
  }
};

class Connection {
 public:
  // Takes ownership of `fd`, a connected Unix stream socket.
  static Result<std::shared_ptr<Connection>> start(int fd, std::string socket_path);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Runs `fn` on the loop thread and waits for the promise it returns. An exception (a broken
  // connection, a malformed reply) becomes a kUnavailable/kProtocol status.
  template <typename T>
  Result<T> run(const char* what, std::function<kj::Promise<T>(LoopState&)> fn);
  // Drops a capability held by handle (its server-side effects: reader uncounted, etc.).
  void release(uint64_t handle);
  const std::string& socket_path() const { return socket_path_; }

 private:
  Connection() = default;
  Status exception_status(const char* what, const kj::Exception& e) const;
  void thread_main(int fd);

  std::string socket_path_;
  std::thread thread_;
  kj::Own<const kj::Executor> executor_;
  LoopState* loop_ = nullptr;
  std::promise<void>* thread_main_ready_ = nullptr;  // set while the loop thread starts
};

template <typename T>
Result<T> Connection::run(const char* what, std::function<kj::Promise<T>(LoopState&)> fn) {
  try {
    LoopState* loop = loop_;
    return executor_->executeSync([&]() { return fn(*loop); });
  } catch (const kj::Exception& e) {
    return exception_status(what, e);
  }
}

// Connects to the daemon at `socket_path`, starting one if allowed and none answers.
Result<int> connect_socket(const std::string& socket_path, bool autostart,
                           const std::string& daemon_path);

}  // namespace shmstream
