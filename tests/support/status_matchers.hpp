// tests/support/status_matchers.hpp — gmock matchers for Status and Result<T>.
//
//   EXPECT_THAT(registry.open("nope", "", peer), StatusIs(ErrorCode::kNotFound));
//   EXPECT_THAT(result, IsOk());
//
// A failure prints the whole status (code and message), not just two numbers.
#pragma once

#include <gmock/gmock.h>

#include <string>

#include "shmstream/status.hpp"

namespace shmstream::test {

inline Status status_of(const Status& status) { return status; }
template <typename T>
Status status_of(const Result<T>& result) {
  return result.status();
}

MATCHER_P(StatusIs, code, "has the status " + std::string(error_code_name(code))) {
  Status status = status_of(arg);
  *result_listener << "whose status is " << status.to_string();
  return status.code() == code;
}

MATCHER(IsOk, "is ok") {
  Status status = status_of(arg);
  *result_listener << "whose status is " << status.to_string();
  return status.ok();
}

}  // namespace shmstream::test
