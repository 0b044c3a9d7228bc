// shmstream/status.hpp — the one error type of shmstream.
//
// Every fallible operation returns a Status (code + human-readable message) or a Result<T>
// (a value or a Status). Nothing in shmstream's API throws, except Result<T>::value() on an
// error, which throws shmstream::Error carrying the Status (like std::expected::value()).
//
// Status and Result are plain values: safe to copy and move between threads. Both are
// [[nodiscard]]: an error dropped on the floor is a compile-time warning.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shmstream {

// What went wrong. Values are stable: they cross the control protocol and the C API.
enum class ErrorCode : int {
  kOk = 0,
  kInvalidArgument = 1,   // a bad name, offset, size or option
  kNotFound = 2,          // no stream of that name (or it was removed)
  kAlreadyExists = 3,     // create of a name that is taken
  kTimeout = 4,           // a wait's deadline passed
  kInterrupted = 5,       // the caller's Cancellation fired, or the reader was closed
  kProducerDied = 6,      // the stream was aborted: its producer died without closing it
  kCancelled = 7,         // the stream was removed by force; it ends at once for everyone
  kStreamClosed = 8,      // a write to a stream that is no longer open
  kCorrupt = 9,           // a segment whose header or size does not validate
  kVersionMismatch = 10,  // a segment of another layout version
  kPermissionDenied = 11,
  kNoSpace = 12,      // the shared-memory (or disk) file system is full
  kTooLarge = 13,     // beyond the stream's maximum size
  kUnavailable = 14,  // no daemon answers on the control socket
  kProtocol = 15,     // the control connection carried something malformed
  kIo = 16,           // a system call failed unexpectedly
  kInternal = 17,
  kEndOfStream = 18,     // the stream closed cleanly before the wanted offset: a normal end
  kOverrun = 19,         // a ring overwrote the offset asked for; Status::offset() is the oldest
                         // offset still available, from which the reader may resume
  kTooManyReaders = 20,  // the stream has as many readers as it allows
  kBusy = 21,            // a named cursor already has a live reader
  kLimitExceeded = 22,   // a daemon limit: streams per user, connections per user
};

// "not_found", "producer_died", ... (stable, used in JSON and CLI messages).
std::string_view error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  // With an offset the caller can act on (kOverrun: the oldest offset still available).
  Status(ErrorCode code, std::string message, uint64_t offset)
      : code_(code), message_(std::move(message)), offset_(offset) {}

  static Status ok_status() { return Status(); }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  // The message names the object and the cause, e.g. `stream "cam0": producer died (pid 4121)`.
  const std::string& message() const { return message_; }
  // kOverrun: the oldest offset still available. 0 for other codes.
  uint64_t offset() const { return offset_; }
  // "producer_died: stream \"cam0\": producer died (pid 4121)", or "ok".
  std::string to_string() const;
  // The same error, code and offset kept, its message behind `context`: "context: message".
  // ok() stays ok().
  Status with_context(std::string_view context) const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
  uint64_t offset_ = 0;
};

// Thrown only by Result<T>::value() on an error.
class Error : public std::runtime_error {
 public:
  explicit Error(Status status)
      : std::runtime_error(status.message()), status_(std::move(status)) {}
  const Status& status() const { return status_; }

 private:
  Status status_;
};

// A T or the Status saying why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  // The error; ok() when there is a value.
  Status status() const { return ok() ? Status() : std::get<1>(v_); }

  // The value; throws shmstream::Error if there is none.
  T& value() & {
    check();
    return std::get<0>(v_);
  }
  // By value from a temporary: `for (auto& x : f().value())` owns what it iterates.
  T value() && {
    check();
    return std::get<0>(std::move(v_));
  }
  T& operator*() & { return value(); }
  T* operator->() { return &value(); }

 private:
  void check() const {
    if (!ok()) throw Error(std::get<1>(v_));
  }
  std::variant<T, Status> v_;
};

}  // namespace shmstream
