// shmstream — command-line client: write a stream from stdin, cat it to stdout, list, stat and
// remove streams, watch them (top), bridge them through Redis. Uses only the public client
// API. See `shmstream --help`.
//
// This file only wires the subcommands (tools/cli/, one file each) into one command line.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "shmstream/client.hpp"

namespace {

// A usage error: one line saying what is wrong and where help is, exit 2 (as a shell's builtins
// and most tools do). An unknown command is named as such.
int usage_error(const CLI::App& app, const CLI::ParseError& error) {
  // The deepest subcommand given, for the hint: `shmstream bridge out --help`.
  std::string path = "shmstream";
  const CLI::App* at = &app;
  for (;;) {
    auto given = at->get_subcommands();
    if (given.empty()) break;
    at = given.front();
    path += " " + at->get_name();
  }
  std::string what = error.what();
  if (at == &app) {
    auto extras = app.remaining();
    if (!extras.empty() && !extras.front().starts_with("-")) {
      what = "unknown command \"" + extras.front() + "\"";
    } else if (dynamic_cast<const CLI::RequiredError*>(&error) != nullptr && extras.empty()) {
      what = "no command given";
    }
  }
  std::fprintf(stderr, "%s: %s (see `%s --help`)\n", "shmstream", what.c_str(), path.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace shmstream_cli;
  CLI::App app{
      "shmstream: shared-memory streams. One producer appends; any number of readers\n"
      "read the same bytes zero-copy, each at its own offset, live or replayed."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("shmstream ") + shmstream::version());
  app.fallthrough();  // global options may also follow the subcommand
  std::string socket = shmstream::Client::default_socket_path();
  bool no_autostart = false;
  app.add_option("--socket", socket, "Control socket of shmstreamd (env SHMSTREAM_SOCKET)")
      ->capture_default_str();
  app.add_flag("--no-autostart", no_autostart, "Do not start shmstreamd if none answers");

  // `write NAME -- CMD ARGS...`: everything after the first "--" is the command, untouched.
  std::vector<std::string> command;
  std::vector<char*> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    if (std::strcmp(args[i], "--") == 0) {
      command.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      args.resize(i);
      if (command.empty()) {
        std::fprintf(stderr, "shmstream: nothing after \"--\": give the command to run\n");
        return 2;
      }
      break;
    }
  }

  std::vector<Command> commands = {add_write(app, command),
                                   add_cat(app),
                                   add_ls(app),
                                   add_stat(app),
                                   add_top(app),
                                   add_rm(app),
                                   add_gc(app)};
  for (auto& daemon : add_daemon(app)) commands.push_back(std::move(daemon));
  for (auto& bridge : add_bridge(app)) commands.push_back(std::move(bridge));
  try {
    app.parse(static_cast<int>(args.size()), args.data());
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    return usage_error(app, e);
  }
  const Command* chosen = nullptr;
  for (const auto& c : commands) {
    if (c.app->parsed()) chosen = &c;
  }
  if (chosen == nullptr) return 1;  // `bridge` alone: CLI11 required one of its subcommands
  if (!command.empty() && chosen->app->get_name() != "write") {
    std::fprintf(stderr, "shmstream: only `write` runs a command (after \"--\")\n");
    return 2;
  }
  if (chosen->prepare) chosen->prepare();
  if (chosen->run_alone) return chosen->run_alone();
  shmstream::ClientOptions options;
  options.socket_path = socket;
  options.autostart = !no_autostart && chosen->starts_daemon;
  auto connected = shmstream::Client::connect(options);
  // (The library says "(autostart disabled)" when nothing listens at all.)
  if (!connected.ok() && connected.status().code() == shmstream::ErrorCode::kUnavailable &&
      connected.status().message().ends_with("(autostart disabled)") && !chosen->starts_daemon &&
      !no_autostart) {
    // A command that only looks does not start a daemon to find nothing there.
    std::string name = chosen->app->get_name();
    if (const CLI::App* parent = chosen->app->get_parent(); parent != &app) {
      name = parent->get_name() + " " + name;  // `daemon status`
    }
    if (chosen->none_is_done) {
      std::fprintf(stderr, "shmstream: no daemon runs at %s: nothing to %s\n", socket.c_str(),
                   chosen->app->get_name().c_str());
      return 0;
    }
    fail("no daemon runs at " + socket + " (`" + name +
         "` starts none; `shmstream write` or `shmstreamd` does)");
  }
  auto client = take(std::move(connected));
  return chosen->run(client);
}
