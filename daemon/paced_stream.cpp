#include "daemon/paced_stream.hpp"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <utility>

namespace shmstream::daemon {
namespace {

constexpr auto kRecheck = 10 * kj::MILLISECONDS;  // how often a paused read looks again

kj::Exception stalled_exception() {
  return kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                       kj::str("client stalled: it left its replies unread past the daemon's "
                               "limit"));
}

}  // namespace

PacedStream::PacedStream(kj::Own<kj::AsyncCapabilityStream> inner, kj::Timer& timer,
                         size_t backlog_limit, kj::Duration stall_limit,
                         std::function<void()> on_stall)
    : PacedStream(kj::mv(inner), timer, backlog_limit, stall_limit, std::move(on_stall),
                  kj::newPromiseAndFulfiller<void>()) {}

PacedStream::PacedStream(kj::Own<kj::AsyncCapabilityStream> inner, kj::Timer& timer,
                         size_t backlog_limit, kj::Duration stall_limit,
                         std::function<void()> on_stall, kj::PromiseFulfillerPair<void> stall)
    : inner_(kj::mv(inner)),
      fd_(inner_->getFd().orDefault(-1)),
      timer_(timer),
      backlog_limit_(backlog_limit),
      stall_limit_(stall_limit),
      on_stall_(std::move(on_stall)),
      stall_(kj::mv(stall.fulfiller)),
      stalled_signal_(stall.promise.fork()) {}

kj::Promise<void> PacedStream::ready_to_read() {
  if (stalled_) return stalled_exception();
  // Most requests come with the bound far under the limit: no system call for them.
  if (unread_bound_ < backlog_limit_) return kj::READY_NOW;
  int unread = 0;  // reply bytes in the socket that the client has not read
  if (fd_ < 0 || ioctl(fd_, SIOCOUTQ, &unread) != 0 ||
      static_cast<size_t>(unread) < backlog_limit_) {
    unread_bound_ = static_cast<size_t>(std::max(unread, 0));  // 0 if the ioctl failed
    backlogged_since_ = nullptr;
    return kj::READY_NOW;
  }
  unread_bound_ = static_cast<size_t>(unread);
  kj::TimePoint now = timer_.now();
  KJ_IF_MAYBE (since, backlogged_since_) {
    if (now - *since >= stall_limit_) {
      stalled_ = true;
      stall_->reject(stalled_exception());
      if (on_stall_) on_stall_();
      return stalled_exception();
    }
  } else {
    backlogged_since_ = now;
  }
  return timer_.afterDelay(kRecheck).then([this]() { return ready_to_read(); });
}

template <typename T>
kj::Promise<T> PacedStream::guard(kj::Promise<T> operation) {
  // Only ever rejected (on a stall); a fulfilment would be a bug, reported as a stall too.
  auto failed =
      stalled_signal_.addBranch().then([]() -> kj::Promise<T> { return stalled_exception(); });
  return operation.exclusiveJoin(kj::mv(failed));
}

kj::Promise<size_t> PacedStream::tryRead(void* buffer, size_t min_bytes, size_t max_bytes) {
  return guard(ready_to_read().then([this, buffer, min_bytes, max_bytes]() {
    return inner_->tryRead(buffer, min_bytes, max_bytes);
  }));
}

kj::Promise<kj::AsyncCapabilityStream::ReadResult> PacedStream::tryReadWithFds(
    void* buffer, size_t min_bytes, size_t max_bytes, kj::AutoCloseFd* fd_buffer, size_t max_fds) {
  return guard(ready_to_read().then([this, buffer, min_bytes, max_bytes, fd_buffer, max_fds]() {
    return inner_->tryReadWithFds(buffer, min_bytes, max_bytes, fd_buffer, max_fds);
  }));
}

kj::Promise<kj::AsyncCapabilityStream::ReadResult> PacedStream::tryReadWithStreams(
    void* buffer, size_t min_bytes, size_t max_bytes,
    kj::Own<kj::AsyncCapabilityStream>* stream_buffer, size_t max_streams) {
  return guard(
      ready_to_read().then([this, buffer, min_bytes, max_bytes, stream_buffer, max_streams]() {
        return inner_->tryReadWithStreams(buffer, min_bytes, max_bytes, stream_buffer, max_streams);
      }));
}

void PacedStream::count_written(size_t first,
                                kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> more) {
  unread_bound_ += first;
  for (const auto& piece : more) unread_bound_ += piece.size();
}

kj::Promise<void> PacedStream::write(const void* buffer, size_t size) {
  count_written(size, nullptr);
  return guard(inner_->write(buffer, size));
}

kj::Promise<void> PacedStream::write(kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> pieces) {
  count_written(0, pieces);
  return guard(inner_->write(pieces));
}

kj::Promise<void> PacedStream::writeWithFds(
    kj::ArrayPtr<const kj::byte> data, kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> more_data,
    kj::ArrayPtr<const int> fds) {
  count_written(data.size(), more_data);
  return guard(inner_->writeWithFds(data, more_data, fds));
}

kj::Promise<void> PacedStream::writeWithStreams(
    kj::ArrayPtr<const kj::byte> data, kj::ArrayPtr<const kj::ArrayPtr<const kj::byte>> more_data,
    kj::Array<kj::Own<kj::AsyncCapabilityStream>> streams) {
  count_written(data.size(), more_data);
  return guard(inner_->writeWithStreams(data, more_data, kj::mv(streams)));
}

}  // namespace shmstream::daemon
