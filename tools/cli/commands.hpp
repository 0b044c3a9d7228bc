// tools/cli/commands.hpp — the subcommands of `shmstream`, one file each; shmstream.cpp wires
// them into one command line.
#pragma once

#include <string>
#include <vector>

#include "cli/common.hpp"

namespace shmstream_cli {

// `write NAME [-- CMD ARGS...]`: `command` is what followed "--" on the command line.
Command add_write(CLI::App& app, const std::vector<std::string>& command);
Command add_cat(CLI::App& app);
Command add_ls(CLI::App& app);
Command add_stat(CLI::App& app);
Command add_top(CLI::App& app);
Command add_rm(CLI::App& app);
Command add_gc(CLI::App& app);
// `daemon status`.
std::vector<Command> add_daemon(CLI::App& app);
// `bridge out` and `bridge in`, under `bridge`.
std::vector<Command> add_bridge(CLI::App& app);

}  // namespace shmstream_cli
