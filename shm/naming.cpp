#include "shm/naming.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

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

Result<int> open_socket_dir(const std::string& socket_path, uid_t euid) {
  std::string dir = std::filesystem::path(socket_path).parent_path().string();
  if (dir.empty()) dir = ".";
  int fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return Status(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kPermissionDenied,
                  fmt::format("socket directory {}: {}{}", dir, std::strerror(err),
                              err == ENOTDIR || err == ELOOP ? " (a symlink or not a directory: "
                                                               "refused, never followed)"
                                                             : ""));
  }
  struct stat st {};
  std::string why;
  if (fstat(fd, &st) != 0) {
    why = std::strerror(errno);
  } else if (st.st_uid != euid && st.st_uid != 0) {
    why = fmt::format(
        "owned by uid {}, not by you (uid {}) nor root: its owner could plant a "
        "lock, log or socket there",
        st.st_uid, euid);
  } else if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    why = fmt::format(
        "mode {:04o}: writable by others, who could plant a lock, log or socket "
        "there; use a directory only you (or root) may write",
        st.st_mode & 07777);
  }
  if (!why.empty()) {
    ::close(fd);
    return Status(ErrorCode::kPermissionDenied,
                  fmt::format("refusing socket directory {}: {}", dir, why));
  }
  return fd;
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
