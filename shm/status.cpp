#include "shmstream/status.hpp"

#include <cerrno>
#include <cstring>

#include "shm/posix_error.hpp"

namespace shmstream {

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kOk:
      return "ok";
    case ErrorCode::kInvalidArgument:
      return "invalid_argument";
    case ErrorCode::kNotFound:
      return "not_found";
    case ErrorCode::kAlreadyExists:
      return "already_exists";
    case ErrorCode::kTimeout:
      return "timeout";
    case ErrorCode::kInterrupted:
      return "interrupted";
    case ErrorCode::kProducerDied:
      return "producer_died";
    case ErrorCode::kCancelled:
      return "cancelled";
    case ErrorCode::kStreamClosed:
      return "stream_closed";
    case ErrorCode::kCorrupt:
      return "corrupt";
    case ErrorCode::kVersionMismatch:
      return "version_mismatch";
    case ErrorCode::kPermissionDenied:
      return "permission_denied";
    case ErrorCode::kNoSpace:
      return "no_space";
    case ErrorCode::kTooLarge:
      return "too_large";
    case ErrorCode::kUnavailable:
      return "unavailable";
    case ErrorCode::kProtocol:
      return "protocol";
    case ErrorCode::kIo:
      return "io";
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kEndOfStream:
      return "end_of_stream";
    case ErrorCode::kOverrun:
      return "overrun";
    case ErrorCode::kTooManyReaders:
      return "too_many_readers";
    case ErrorCode::kBusy:
      return "busy";
    case ErrorCode::kLimitExceeded:
      return "limit_exceeded";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  return std::string(error_code_name(code_)) + ": " + message_;
}

Status Status::with_context(std::string_view context) const {
  if (ok()) return *this;
  std::string message(context);
  message += ": ";
  message += message_;
  return Status(code_, std::move(message), offset_);
}

Status from_errno(int err, std::string_view context) {
  ErrorCode code = ErrorCode::kIo;
  switch (err) {
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
      code = ErrorCode::kNoSpace;
      break;
    case EACCES:
    case EPERM:
      code = ErrorCode::kPermissionDenied;
      break;
    case ENOENT:
      code = ErrorCode::kNotFound;
      break;
    default:
      break;
  }
  std::string message(context);
  message += ": ";
  message += std::strerror(err);
  return Status(code, std::move(message));
}

}  // namespace shmstream
