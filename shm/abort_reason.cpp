#include "shmstream/abort_reason.hpp"

#include <fmt/format.h>

#include <cstring>

namespace shmstream {

std::string_view abort_kind_name(AbortKind kind) {
  switch (kind) {
    case AbortKind::kUnknown:
      return "unknown";
    case AbortKind::kProducerDied:
      return "producer_died";
    case AbortKind::kExplicit:
      return "explicit";
    case AbortKind::kExitStatus:
      return "exit_status";
    case AbortKind::kSignal:
      return "signal";
    case AbortKind::kSizeLimit:
      return "size_limit";
    case AbortKind::kInterrupted:
      return "interrupted";
    case AbortKind::kNotClosed:
      return "not_closed";
    case AbortKind::kQuota:
      return "quota";
    case AbortKind::kNoSuccessor:
      return "no_successor";
    case AbortKind::kTruncated:
      return "truncated";
  }
  return "unknown";
}

namespace {

std::string signal_name(int32_t signal) {
  const char* name = signal > 0 && signal < 65 ? sigabbrev_np(signal) : nullptr;
  return name != nullptr ? fmt::format("{} (SIG{})", signal, name) : std::to_string(signal);
}

// "CMD " or "" for a message naming the command.
std::string command(const std::string& message) {
  return message.empty() ? "its command" : "its command `" + message + "`";
}

}  // namespace

std::string AbortReason::describe() const {
  switch (kind) {
    case AbortKind::kProducerDied:
      return code > 0 ? fmt::format("producer died (pid {})", code) : "producer died";
    case AbortKind::kExplicit:
      return message.empty() ? "aborted by its producer" : "aborted by its producer: " + message;
    case AbortKind::kExitStatus:
      return fmt::format("{} exited with status {}", command(message), code);
    case AbortKind::kSignal:
      return fmt::format("{} was killed by signal {}", command(message), signal_name(code));
    case AbortKind::kSizeLimit:
      return message.empty() ? "it reached its size limit"
                             : "it reached its size limit (" + message + ")";
    case AbortKind::kInterrupted:
      return fmt::format("its producer was interrupted by signal {}", signal_name(code));
    case AbortKind::kNotClosed:
      return "its producer was dropped without close()";
    case AbortKind::kQuota:
      return message.empty() ? "its owner passed their memory quota"
                             : "its owner passed their memory quota (" + message + ")";
    case AbortKind::kNoSuccessor:
      return fmt::format("its producer died and no successor resumed it within {} ms", code);
    case AbortKind::kTruncated:
      return "its file lost its tail: only its intact start is kept";
    case AbortKind::kUnknown:
      break;
  }
  return message.empty() ? "no reason recorded" : message;
}

}  // namespace shmstream
