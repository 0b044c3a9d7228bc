#include "daemon/access.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>

namespace shmstream::daemon {

mode_t file_mode(Mode mode) {
  switch (mode) {
    case Mode::kGroup:
      return 0640;
    case Mode::kEveryone:
      return 0644;
    case Mode::kOwner:
      break;
  }
  return 0600;
}

Mode mode_of_file(mode_t bits) {
  if ((bits & S_IROTH) != 0) return Mode::kEveryone;
  if ((bits & S_IRGRP) != 0) return Mode::kGroup;
  return Mode::kOwner;
}

bool privileged(const Peer& peer, uid_t daemon_uid) {
  return peer.uid == 0 || peer.uid == daemon_uid;
}

Status may_read(std::string_view stream, const Owner& owner, const Peer& peer, uid_t daemon_uid) {
  bool in_group = peer.gid == owner.gid ||
                  std::find(peer.groups.begin(), peer.groups.end(), owner.gid) != peer.groups.end();
  if (privileged(peer, daemon_uid) || peer.uid == owner.uid || owner.mode == Mode::kEveryone ||
      (owner.mode == Mode::kGroup && in_group)) {
    return Status();
  }
  return Status(ErrorCode::kPermissionDenied,
                fmt::format("stream \"{}\": permission denied: it is readable by its {} only "
                            "(owner uid {}, group gid {}); you are uid {}",
                            stream, owner.mode == Mode::kGroup ? "owner's group" : "owner",
                            owner.uid, owner.gid, peer.uid));
}

Status may_own(std::string_view stream, const Owner& owner, const Peer& peer, uid_t daemon_uid,
               std::string_view action) {
  if (privileged(peer, daemon_uid) || peer.uid == owner.uid) return Status();
  return Status(ErrorCode::kPermissionDenied,
                fmt::format("stream \"{}\": permission denied: only its owner (uid {}) or root may "
                            "{} it; you are uid {}",
                            stream, owner.uid, action, peer.uid));
}

Status may_use_cursor(std::string_view stream, std::string_view cursor, uid_t cursor_uid,
                      const Owner& owner, const Peer& peer, uid_t daemon_uid, bool removing) {
  if (privileged(peer, daemon_uid) || peer.uid == cursor_uid ||
      (removing && peer.uid == owner.uid)) {
    return Status();
  }
  return Status(
      ErrorCode::kPermissionDenied,
      fmt::format("stream \"{}\": cursor \"{}\": permission denied: it belongs to uid {}{}; "
                  "you are uid {}",
                  stream, cursor, cursor_uid,
                  removing ? " (its stream's owner or root may also remove it)" : "", peer.uid));
}

uint32_t slot_share(uint32_t max_readers) { return std::max<uint32_t>(1, max_readers / 2); }

Status may_take_slot(std::string_view stream, const Owner& owner, const Peer& peer,
                     uid_t daemon_uid, uint32_t held, uint32_t max_readers) {
  if (privileged(peer, daemon_uid) || peer.uid == owner.uid || held < slot_share(max_readers)) {
    return Status();
  }
  return Status(ErrorCode::kTooManyReaders,
                fmt::format("stream \"{}\": too many readers: uid {} already holds {} of its {} "
                            "reader slots (readers and named cursors), the most one user other "
                            "than its owner may",
                            stream, peer.uid, held, max_readers));
}

}  // namespace shmstream::daemon
