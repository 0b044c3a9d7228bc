// `shmstream top`: the live view of every stream (terminal.cpp draws it).
#include <memory>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "terminal.hpp"

namespace shmstream_cli {

Command add_top(CLI::App& app) {
  struct TopCommand {
    TopOptions options;
    double interval_seconds = 1.0;
  };
  auto* top = app.add_subcommand(
      "top",
      "Live view of every stream: write rate, readers and their lag, retention use, state; "
      "q quits");
  auto t = std::make_shared<TopCommand>();
  top->add_flag("--once", t->options.once,
                "Print one frame as plain text and exit (rates over one interval), for scripts");
  top->add_flag("--json", t->options.json,
                "Frames as JSON lines: each stream's keys of `ls --json` and its rate_bytes_per_s");
  top->add_option("--interval", t->interval_seconds, "Seconds between frames")
      ->capture_default_str()
      ->check(CLI::Range(0.05, 3600.0));
  return looking(Command{top, [t] { t->options.interval = milliseconds_of(t->interval_seconds); },
                         [t](shmstream::Client& client) { return run_top(client, t->options); }});
}

}  // namespace shmstream_cli
