#include "shmstream/status.hpp"

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

}  // namespace shmstream
