// daemon/access.hpp — who may do what to a stream: its owner, its mode, and the peer asking.
//
// The rules, in one place: the owner, root and the daemon's own user may read, remove and
// resume a stream; others may read it if its mode lets them (the owner's group, or everyone),
// and may remove the cursors of a stream they may read. The segment file's permission bits say
// the same (file_mode), so that going around the daemon does not help.
//
// Pure functions of their arguments: safe from any thread.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string_view>
#include <vector>

#include "shmstream/status.hpp"

namespace shmstream::daemon {

// Who may open a stream for reading, besides its owner and root (proto Mode).
enum class Mode : uint8_t { kOwner = 0, kGroup = 1, kEveryone = 2 };
mode_t file_mode(Mode mode);     // 0600, 0640, 0644
Mode mode_of_file(mode_t bits);  // the inverse, for adopted segments

// Who is on the other end of a control connection (from SO_PEERCRED).
struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (SO_PEERGROUPS)
};

// Who owns a stream: its creator's uid and primary group (the files' owner and group), and
// who else may read it.
struct Owner {
  uid_t uid = 0;
  gid_t gid = 0;
  Mode mode = Mode::kOwner;
};

// Whether `peer` passes every check: root, or the user the daemon runs as (`daemon_uid`), as
// the kernel would let them.
bool privileged(const Peer& peer, uid_t daemon_uid);
// kPermissionDenied, naming `stream`, the owner and the peer, unless `peer` may read it.
Status may_read(std::string_view stream, const Owner& owner, const Peer& peer, uid_t daemon_uid);
// kPermissionDenied unless `peer` owns the stream, or is privileged: what removing it and
// resuming its production need. `action` ("remove", "resume") names the request in the message.
Status may_own(std::string_view stream, const Owner& owner, const Peer& peer, uid_t daemon_uid,
               std::string_view action);

// Named cursors belong to the uid that made them (`cursor_uid`). kPermissionDenied unless
// `peer` is that uid or privileged; `removing` lets the stream's owner too (it may forget the
// cursors of its own stream, not read as them).
Status may_use_cursor(std::string_view stream, std::string_view cursor, uid_t cursor_uid,
                      const Owner& owner, const Peer& peer, uid_t daemon_uid, bool removing);
// The reader slots one user other than the stream's owner may hold at once (readers and named
// cursors, held or idle): half of them, at least one. No one user can take every slot of
// someone else's stream; the owner and privileged users are not limited.
uint32_t slot_share(uint32_t max_readers);
// kTooManyReaders unless `peer`, holding `held` of the stream's `max_readers` slots now, may
// take one more.
Status may_take_slot(std::string_view stream, const Owner& owner, const Peer& peer,
                     uid_t daemon_uid, uint32_t held, uint32_t max_readers);

}  // namespace shmstream::daemon
