// daemon/persistent_dirs.hpp — the directories holding a daemon's persistent streams.
//
// The daemon's own directory (shmstreamd --persist-dir, created when first needed) keeps a
// list, its file "directories", of the other directories that clients named for persistent
// streams, so that a restarted daemon adopts the streams in all of them. Each directory is
// opened once and shared by the streams in it; it closes with the last of them (the daemon's
// own stays open).
//
// A path is resolved once, when a client names it; from then on the directory is known by its
// descriptor and by what it was (device, inode, owner). A recorded path is walked again at a
// restart without following any symlink, and adopted only if it is still the same directory of
// the same owner: a user who swaps their directory for a symlink to another user's (or to
// /dev/shm) gets nothing adopted from it. Records are hex-encoded: no path can break a line.
//
// Not thread-safe: used only from the daemon's event-loop thread.
#pragma once

#include <kj/io.h>
#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "shmstream/status.hpp"

namespace shmstream::daemon {

// Opens directory `path` (absolute, normal: no "." or ".." component) one component at a
// time, never following a symlink. kNotFound if a component is missing; kPermissionDenied,
// naming it, if a component is a symlink or not a directory. `create`: missing components are
// made (mode 0700).
Result<kj::AutoCloseFd> open_directory_no_follow(const std::string& path, bool create = false);

// The daemon's own directory as it is configured, made absolute with its symlinks resolved once
// (the parts that exist), without a trailing '/'; empty stays empty.
std::string canonical_own_directory(const std::string& path);

class PersistentDirectories {
 public:
  // `own`: the daemon's own directory (its configuration: symlinks in it are resolved once,
  // here); empty if it has none.
  explicit PersistentDirectories(const std::string& own);

  struct Opened {
    std::string path;  // canonical
    std::shared_ptr<kj::AutoCloseFd> fd;
  };

  const std::string& own() const { return own_; }
  // The directories to adopt streams from at start: the daemon's own (if it exists), then
  // those recorded in it that are still what they were recorded as, each directory once.
  // What is skipped is logged with the reason.
  std::vector<Opened> to_adopt();
  // The daemon's own directory, made if missing.
  Result<Opened> open_own();
  // A directory a client named for a stream of user `uid`: resolved once, opened without
  // following symlinks from there, required to be owned by `uid` when `must_own`, and recorded
  // for the next daemon.
  Result<Opened> open_named(const std::string& path, uid_t uid, bool must_own);

 private:
  struct Record {
    dev_t dev = 0;
    ino_t ino = 0;
    uid_t uid = 0;
    std::string path;
  };
  std::vector<Record> recorded() const;
  Status record(const Record& entry);
  Opened share(std::string path, kj::AutoCloseFd fd, dev_t dev, ino_t ino);

  std::string own_;
  std::shared_ptr<kj::AutoCloseFd> own_fd_;  // once opened: kept
  std::map<std::pair<dev_t, ino_t>, std::weak_ptr<kj::AutoCloseFd>> open_;
};

}  // namespace shmstream::daemon
