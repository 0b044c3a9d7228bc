// daemon/paced_stream.hpp — a client connection's stream, wrapped so that a client that stops
// reading its replies cannot make the daemon buffer them without bound.
//
// Before reading a client's next request, the daemon looks at how many reply bytes that client
// has left unread in the socket (SIOCOUTQ; only once it may have reached the limit: what the last
// look found plus what was written since bounds it). Over `backlog_limit`, it reads nothing more
// from it until they drain: its replies stop growing. If they do not drain within `stall_limit`,
// the connection fails ("stalled"), which drops it and its capabilities, and fails any write stuck
// on it. Nothing here blocks the event loop: other clients are never affected.
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

#include <cstddef>
#include <functional>

namespace shmstream::daemon {

class PacedStream final : public kj::AsyncCapabilityStream {
 public:
  PacedStream(kj::Own<kj::AsyncCapabilityStream> inner, kj::Timer& timer, size_t backlog_limit,
              kj::Duration stall_limit, std::function<void()> on_stall);

  kj::Promise<size_t> tryRead(void* buffer, size_t min_bytes, size_t max_bytes) override;
  kj::Promise<ReadResult> tryReadWithFds(void* buffer, size_t min_bytes, size_t max_bytes,
                                         kj::AutoCloseFd* fd_buffer, size_t max_fds) override;
  kj::Promise<ReadResult> tryReadWithStreams(void* buffer, size_t min_bytes, size_t max_bytes,
                                             kj::Own<kj::AsyncCapabilityStream>* stream_buffer,
                                             size_t max_streams) override;
  kj::Promise<void> write(const void* buffer, size_t size) override;
  kj::Promise<void> write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) override;
  kj::Promise<void> writeWithFds(kj::ArrayPtr<const kj::byte> data,
                                 kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> more_data,
                                 kj::ArrayPtr<const int> fds) override;
  kj::Promise<void> writeWithStreams(
      kj::ArrayPtr<const kj::byte> data, kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> more_data,
      kj::Array<kj::Own<kj::AsyncCapabilityStream>> streams) override;
  kj::Promise<void> whenWriteDisconnected() override { return inner_->whenWriteDisconnected(); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void abortRead() override { inner_->abortRead(); }
  void getsockopt(int level, int option, void* value, uint* length) override {
    inner_->getsockopt(level, option, value, length);
  }
  void setsockopt(int level, int option, const void* value, uint length) override {
    inner_->setsockopt(level, option, value, length);
  }
  void getsockname(struct sockaddr* addr, uint* length) override {
    inner_->getsockname(addr, length);
  }
  void getpeername(struct sockaddr* addr, uint* length) override {
    inner_->getpeername(addr, length);
  }
  kj::Maybe<int> getFd() const override { return inner_->getFd(); }

 private:
  PacedStream(kj::Own<kj::AsyncCapabilityStream> inner, kj::Timer& timer, size_t backlog_limit,
              kj::Duration stall_limit, std::function<void()> on_stall,
              kj::PromiseFulfillerPair<void> stall);
  // Adds what a write hands the socket to unread_bound_.
  void count_written(size_t first, kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> more);
  // Resolves once the client's unread replies are under the limit; fails once it stalled.
  kj::Promise<void> ready_to_read();
  // `operation`, failing instead if the connection stalls first.
  template <typename T>
  kj::Promise<T> guard(kj::Promise<T> operation);

  kj::Own<kj::AsyncCapabilityStream> inner_;
  int fd_;
  kj::Timer& timer_;
  size_t backlog_limit_;
  kj::Duration stall_limit_;
  std::function<void()> on_stall_;
  // Reply bytes the client may have left unread: what SIOCOUTQ said last, plus what was written
  // since (an upper bound: only the client takes bytes out). Under the limit, nobody asks.
  size_t unread_bound_ = 0;
  kj::Maybe<kj::TimePoint> backlogged_since_;
  bool stalled_ = false;
  // Rejected on a stall: fails every read and write in progress (a stuck write would otherwise
  // hold the connection's shutdown forever).
  kj::Own<kj::PromiseFulfiller<void>> stall_;
  kj::ForkedPromise<void> stalled_signal_;
};

}  // namespace shmstream::daemon
