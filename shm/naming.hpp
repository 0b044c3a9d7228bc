// shm/naming.hpp — stream names, segment file names and the default control-socket path.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "shmstream/status.hpp"

namespace shmstream::shm {

// A stream name: 1 to 255 bytes, no '/', not "." or "..", no control characters.
Status validate_stream_name(std::string_view name);

// Directory holding shared-memory segments.
inline constexpr const char* kDefaultSegmentDir = "/dev/shm";

// Segment files are named "shmstream.<instance>.<stream id>"; the instance (16 hex digits) is
// derived from the daemon's socket path, so daemons on different sockets never collide.
std::string instance_tag(std::string_view socket_path);
std::string segment_file_name(std::string_view instance, uint64_t stream_id);
// "shmstream.<instance>." — the prefix of all of one daemon's segment files.
std::string segment_file_prefix(std::string_view instance);
// What a daemon did not adopt (a forged, corrupt, other-version, duplicate or orphaned file) is
// renamed "shmstream-quarantine.<file>.<reason>" beside where it was.
inline constexpr const char* kQuarantinePrefix = "shmstream-quarantine.";

// $SHMSTREAM_SOCKET, else $XDG_RUNTIME_DIR/shmstream/control.sock, else
// /tmp/shmstream-<uid>/control.sock.
std::string default_socket_path();

// The directory of control socket `socket_path`, opened (O_PATH, never following a symlink)
// and checked as ssh-agent and tmux check theirs: a directory, owned by `euid` or root, that
// nobody else may write (not group- or other-writable: else anyone could plant a lock, log or
// socket there). Returns the descriptor, or kNotFound (no such directory) or kPermissionDenied,
// with a message that names the directory and why.
Result<int> open_socket_dir(const std::string& socket_path, uid_t euid);

// Where a daemon keeps persistent streams unless told otherwise: $XDG_STATE_HOME/shmstream,
// else $HOME/.local/state/shmstream; empty if neither is set.
std::string default_persist_dir();

}  // namespace shmstream::shm
