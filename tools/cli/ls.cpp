// `shmstream ls`: every stream of the daemon, one line each (or a JSON array).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/stream_info.hpp"
#include "terminal.hpp"

namespace shmstream_cli {
namespace {

int cmd_ls(shmstream::Client& client, bool json, bool raw_bytes, bool names) {
  auto streams = take(client.list());
  if (names) {  // for scripts and shell completion: live names only
    for (const auto& s : streams) {
      if (!s.removing) std::printf("%s\n", s.name.c_str());
    }
    return 0;
  }
  if (json) {
    std::string out = "[";
    for (size_t i = 0; i < streams.size(); ++i) {
      out += (i ? "," : "") + shmstream::to_json(streams[i]);
    }
    std::printf("%s]\n", out.c_str());
    return 0;
  }
  // The table, its columns as wide as their widest cell (numbers to the right), then each
  // stream's details below it, named.
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "STATE", "KIND", "RETENTION", "OLDEST", "BYTES", "READERS", "PID", "OWNER", "MODE"}};
  for (const auto& s : streams) {
    rows.push_back({s.name, shmstream::state_label(s), s.records ? "records" : "bytes",
                    retention_of(s), std::to_string(s.oldest),
                    raw_bytes ? std::to_string(s.bytes) : human_bytes(static_cast<double>(s.bytes)),
                    std::to_string(s.readers), std::to_string(s.producer_pid),
                    shmstream::owner_name(s), shmstream::to_string(s.mode)});
  }
  constexpr bool kRight[] = {false, false, false, false, true, true, true, true, false, false};
  std::vector<size_t> width(rows.front().size(), 0);
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      const std::string pad(width[c] - row[c].size(), ' ');
      const bool last = c + 1 == row.size();
      line += kRight[c] ? pad + row[c] : row[c] + (last ? "" : pad);
      if (!last) line += "  ";
    }
    std::printf("%s\n", line.c_str());
  }
  for (const auto& s : streams) {
    const std::string name = s.name + ": ";
    if (s.abort_reason) {
      std::printf("%saborted: %s\n", name.c_str(), s.abort_reason->describe().c_str());
    }
    if (!s.directory.empty())
      std::printf("%spersistent in %s\n", name.c_str(), s.directory.c_str());
    print_stall(s, name.c_str());
    print_cursors(s, name.c_str());
  }
  return 0;
}

}  // namespace

Command add_ls(CLI::App& app) {
  auto* ls = app.add_subcommand("ls", "List streams: name, state, bytes, readers, producer pid");
  auto json = std::make_shared<bool>(false);
  auto raw = std::make_shared<bool>(false);
  ls->add_flag("--json", *json, "Print a JSON array");
  ls->add_flag("--bytes", *raw, "Sizes in bytes, not human units");
  auto names = std::make_shared<bool>(false);
  ls->add_flag("--names", *names, "Only the names of the live streams, one per line (scripts)")
      ->excludes("--json");
  return looking(Command{ls, nullptr, [json, raw, names](shmstream::Client& client) {
                           return cmd_ls(client, *json, *raw, *names);
                         }});
}

}  // namespace shmstream_cli
