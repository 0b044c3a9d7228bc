// `shmstream ls`: every stream of the daemon, one line each (or a JSON array).
#include <cstdio>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/stream_info.hpp"

namespace shmstream_cli {
namespace {

int cmd_ls(shmstream::Client& client, bool json) {
  auto streams = take(client.list());
  if (json) {
    std::string out = "[";
    for (size_t i = 0; i < streams.size(); ++i) {
      out += (i ? "," : "") + shmstream::to_json(streams[i]);
    }
    std::printf("%s]\n", out.c_str());
    return 0;
  }
  std::printf("%-24s %-9s %-8s %-12s %14s %14s %7s %8s %-12s %s\n", "NAME", "STATE", "KIND",
              "RETENTION", "OLDEST", "BYTES", "READERS", "PID", "OWNER", "MODE");
  for (const auto& s : streams) {
    std::printf("%-24s %-9s %-8s %-12s %14llu %14llu %7u %8u %-12s %s\n", s.name.c_str(),
                shmstream::state_label(s), s.records ? "records" : "bytes", retention_of(s).c_str(),
                static_cast<unsigned long long>(s.oldest), static_cast<unsigned long long>(s.bytes),
                s.readers, s.producer_pid, shmstream::owner_name(s).c_str(),
                shmstream::to_string(s.mode));
    if (s.abort_reason) std::printf("  aborted: %s\n", s.abort_reason->describe().c_str());
    if (!s.directory.empty()) std::printf("  persistent in %s\n", s.directory.c_str());
    print_stall(s, "  ");
    print_cursors(s, "  ");
  }
  return 0;
}

}  // namespace

Command add_ls(CLI::App& app) {
  auto* ls = app.add_subcommand("ls", "List streams: name, state, bytes, readers, producer pid");
  auto json = std::make_shared<bool>(false);
  ls->add_flag("--json", *json, "Print a JSON array");
  return looking(
      Command{ls, nullptr, [json](shmstream::Client& client) { return cmd_ls(client, *json); }});
}

}  // namespace shmstream_cli
