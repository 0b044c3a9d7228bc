// daemon/config_file.hpp — shmstreamd's configuration file: where it is looked for, and reading
// it without trusting what a path leads to.
//
// The file holds the daemon's long options as `key = value` lines (CLI11's TOML/INI form:
// `max-streams-per-user = 100`); the command line wins over it. Looked for, unless
// --no-config: the file --config names; else, for a per-user daemon,
// $XDG_CONFIG_HOME/shmstream/shmstreamd.conf (~/.config/... without XDG_CONFIG_HOME) when it
// exists; else /etc/shmstream/shmstreamd.conf when it exists. A --system daemon reads only the
// system file (or --config's).
#pragma once

#include <kj/io.h>

#include <string>
#include <vector>

#include "shmstream/status.hpp"

namespace shmstream::daemon {

inline constexpr const char* kSystemConfigFile = "/etc/shmstream/shmstreamd.conf";

// The configuration chosen for a command line.
struct ConfigFile {
  std::string path;               // empty: none read
  kj::AutoCloseFd fd;             // open on `path`
  std::vector<std::string> argv;  // the command line, --config naming the open descriptor
};

// Finds and opens the configuration for `argv` (see above), and rewrites the command line so
// that CLI11 reads exactly the file that was checked: `--config /proc/self/fd/N`. A file
// must be regular (not a symlink, fifo or device), owned by this user or root, and writable by
// nobody else; an explicit --config must exist. The error says which file and why.
Result<ConfigFile> find_config(int argc, char** argv);

// `message` with the descriptor's path (as CLI11 names it) replaced by the file's.
std::string name_config_in(std::string message, const ConfigFile& config);

}  // namespace shmstream::daemon
