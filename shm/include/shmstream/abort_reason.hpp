// shmstream/abort_reason.hpp — why a stream was aborted.
//
// An aborted stream records why, in its segment: its readers' errors (kProducerDied), `ls`,
// `stat`, the JSON and the Python module all say it. Whoever ends the stream first records the
// reason (the producer, or the daemon when the producer dies); nobody can change it later.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace shmstream {

// Values are stable: they are stored in segments and cross the control protocol.
enum class AbortKind : uint32_t {
  kUnknown = 0,       // none recorded (a segment of an older release, or a producer killed
                      // while it was aborting)
  kProducerDied = 1,  // its producer process died or went away without closing (code: pid)
  kExplicit = 2,      // its producer called abort(message)
  kExitStatus = 3,    // the command feeding it (`shmstream write -- CMD`) exited with status
                      // `code` (message: the command)
  kSignal = 4,        // the command feeding it was killed by signal `code` (message: the
                      // command)
  kSizeLimit = 5,     // it reached its size limit (code: nothing; message: which limit)
  kInterrupted = 6,   // its producer was interrupted by signal `code` (Ctrl-C, SIGTERM)
  kNotClosed = 7,     // its producer object was dropped without close()
  kQuota = 8,         // the daemon ended it: its owner passed their memory quota
  kNoSuccessor = 9,   // its producer died and no successor resumed it within `code` ms
  kTruncated = 10,    // its file lost its tail (a persistent stream, found by a restart)
};
inline constexpr uint32_t kMaxAbortKind = 10;
// The kind a stored number names; kUnknown for a number no kind has (hostile or newer).
inline constexpr AbortKind abort_kind_of(uint32_t value) {
  return value <= kMaxAbortKind ? static_cast<AbortKind>(value) : AbortKind::kUnknown;
}

// The longest message kept (longer ones are cut, on a UTF-8 character boundary).
inline constexpr size_t kMaxAbortMessage = 127;

struct AbortReason {
  AbortKind kind = AbortKind::kUnknown;
  int32_t code = 0;
  std::string message;

  // An explicit abort with a message of the caller's.
  static AbortReason because(std::string message) {
    return AbortReason{AbortKind::kExplicit, 0, std::move(message)};
  }
  // For people: "its command `sh` exited with status 3", "producer died (pid 41)".
  std::string describe() const;
  bool operator==(const AbortReason&) const = default;
};

// "unknown", "producer_died", "explicit", "exit_status", "signal", "size_limit",
// "interrupted", "not_closed", "quota", "no_successor", "truncated" (stable: JSON, Python).
std::string_view abort_kind_name(AbortKind kind);

}  // namespace shmstream
