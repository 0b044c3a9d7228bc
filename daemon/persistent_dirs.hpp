// daemon/persistent_dirs.hpp — the directories holding a daemon's persistent streams.
//
// The daemon's own directory (shmstreamd --persist-dir, created when first needed) keeps a
// list, its file "directories", of the other directories that clients named for persistent
// streams, so that a restarted daemon adopts the streams in all of them. Each directory is
// opened once and shared by the streams in it; it closes with the last of them (the daemon's
// own stays open).
//
// Not thread-safe: used only from the daemon's event-loop thread.
#pragma once

#include <kj/io.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "shmstream/status.hpp"

namespace shmstream::daemon {

class PersistentDirectories {
 public:
  // `own`: the daemon's own directory; empty if it has none.
  explicit PersistentDirectories(std::string own) : own_(std::move(own)) {}

  const std::string& own() const { return own_; }
  // The directories to adopt streams from at start: the daemon's own (if it exists), then
  // those recorded in it, each once.
  std::vector<std::string> to_adopt() const;
  // Directory `path` (absolute), open, shared with the streams in it. `record` adds it to the
  // list of directories to adopt from after a restart.
  Result<std::shared_ptr<kj::AutoCloseFd>> open(const std::string& path, bool record);

 private:
  // The directories recorded in the daemon's own, without it and without repeats.
  std::vector<std::string> recorded() const;
  Status record(const std::string& path);

  std::string own_;
  std::shared_ptr<kj::AutoCloseFd> own_fd_;                     // once opened: kept
  std::map<std::string, std::weak_ptr<kj::AutoCloseFd>> open_;  // by path
};

}  // namespace shmstream::daemon
