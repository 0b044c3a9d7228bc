#include "shm/naming.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>

#include "shm/layout.hpp"

namespace shmstream::shm {

Status validate_stream_name(std::string_view name) {
  auto bad = [&](std::string_view why) {
    return Status(ErrorCode::kInvalidArgument, fmt::format("bad stream name: {}", why));
  };
  if (name.empty()) return bad("empty");
  if (name.size() > kMaxNameLength) {
    return bad(fmt::format("{} bytes long, the limit is {}", name.size(), kMaxNameLength));
  }
  if (name == "." || name == "..") return bad(fmt::format("\"{}\" is reserved", name));
  for (size_t i = 0; i < name.size(); ++i) {
    auto c = static_cast<unsigned char>(name[i]);
    if (c == '/') return bad(fmt::format("\"{}\" contains '/' at byte {}", name, i));
    if (c < 0x20 || c == 0x7f) {
      return bad(fmt::format("contains control character {:#04x} at byte {}", c, i));
    }
  }
  return Status();
}

std::string instance_tag(std::string_view socket_path) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (char c : socket_path) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ULL;
  }
  return fmt::format("{:016x}", hash);
}

std::string segment_file_prefix(std::string_view instance) {
  return fmt::format("shmstream.{}.", instance);
}

std::string segment_file_name(std::string_view instance, uint64_t stream_id) {
  return fmt::format("{}{:016x}", segment_file_prefix(instance), stream_id);
}

std::string default_socket_path() {
  if (const char* env = std::getenv("SHMSTREAM_SOCKET"); env != nullptr && *env != '\0') {
    return env;
  }
  if (const char* run = std::getenv("XDG_RUNTIME_DIR"); run != nullptr && *run != '\0') {
    return fmt::format("{}/shmstream/control.sock", run);
  }
  return fmt::format("/tmp/shmstream-{}/control.sock", getuid());
}

std::string default_persist_dir() {
  if (const char* state = std::getenv("XDG_STATE_HOME"); state != nullptr && *state == '/') {
    return fmt::format("{}/shmstream", state);
  }
  if (const char* home = std::getenv("HOME"); home != nullptr && *home == '/') {
    return fmt::format("{}/.local/state/shmstream", home);
  }
  return "";
}

}  // namespace shmstream::shm
