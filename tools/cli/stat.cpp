// `shmstream stat NAME`: one stream in full (or a JSON object).
#include <cstdio>
#include <ctime>
#include <string>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/stream_info.hpp"
#include "terminal.hpp"

namespace shmstream_cli {
namespace {

// "0.3 s ago", "12 s ago", "4 min ago", "3.5 h ago".
std::string seconds_ago(std::chrono::milliseconds age) {
  const double s = static_cast<double>(age.count()) / 1000;
  char out[48];
  if (s < 10) {
    std::snprintf(out, sizeof(out), "%.1f s ago", s);
  } else if (s < 600) {
    std::snprintf(out, sizeof(out), "%.0f s ago", s);
  } else if (s < 36000) {
    std::snprintf(out, sizeof(out), "%.0f min ago", s / 60);
  } else {
    std::snprintf(out, sizeof(out), "%.1f h ago", s / 3600);
  }
  return out;
}

int cmd_stat(shmstream::Client& client, const std::string& name, bool json) {
  auto info = take(client.stat(name));
  if (json) {
    std::printf("%s\n", shmstream::to_json(info).c_str());
    return 0;
  }
  time_t created = static_cast<time_t>(info.created_unix_ns / 1'000'000'000);
  char when[64];
  std::strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", std::localtime(&created));
  std::printf(
      "name:          %s\nstate:         %s\nkind:          %s\nretention:     %s\n"
      "oldest:        %llu\nbytes:         %llu\nreaders:       %u (at most %u; slowest at %llu)\n"
      "producer pid:  %u\nmax bytes:     %llu\ncreated:       %s\n",
      info.name.c_str(), shmstream::state_label(info), info.records ? "records" : "bytes",
      retention_of(info).c_str(), static_cast<unsigned long long>(info.oldest),
      static_cast<unsigned long long>(info.bytes), info.readers, info.max_readers,
      static_cast<unsigned long long>(info.slowest_reader), info.producer_pid,
      static_cast<unsigned long long>(info.max_bytes), when);
  std::printf("owner:         %s (uid %u), group %s (gid %u)\nmode:          %s\n",
              shmstream::owner_name(info).c_str(), info.owner_uid,
              shmstream::group_name(info).c_str(), info.owner_gid, shmstream::to_string(info.mode));
  std::printf("stored in:     %s, taking %s\n",
              info.directory.empty() ? "shared memory" : info.directory.c_str(),
              human_bytes(static_cast<double>(info.allocated_bytes)).c_str());
  if (info.records) {
    std::printf("records:       %llu\n", static_cast<unsigned long long>(info.record_count));
  }
  std::printf("writing:       %s/s; %s\n", human_bytes(info.write_rate_bytes_per_s).c_str(),
              info.last_write_age ? ("last write " + seconds_ago(*info.last_write_age)).c_str()
                                  : "no write seen by this daemon");
  if (info.resume_grace.count() != 0) {
    std::printf("resume grace:  %lld ms%s\n", static_cast<long long>(info.resume_grace.count()),
                info.awaiting_producer ? " (its producer died: awaiting a successor)" : "");
  }
  if (info.abort_reason) std::printf("aborted:       %s\n", info.abort_reason->describe().c_str());
  if (!info.damage.empty()) std::printf("damaged:       %s\n", info.damage.c_str());
  if (info.origin != 0) {
    std::printf("origin:        offset 0 here is offset %llu of the stream it republishes\n",
                static_cast<unsigned long long>(info.origin));
  }
  if (info.stall_limit.count() != 0) {
    std::printf("stall limit:   %lld ms\n", static_cast<long long>(info.stall_limit.count()));
  }
  print_stall(info, "");
  print_cursors(info, "");
  return 0;
}

}  // namespace

Command add_stat(CLI::App& app) {
  auto* stat = app.add_subcommand("stat", "Show one stream");
  auto name = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  stat->add_option("NAME", *name, "Stream name")->required();
  stat->add_flag("--json", *json, "Print a JSON object");
  return looking(Command{stat, nullptr, [name, json](shmstream::Client& client) {
                           return cmd_stat(client, *name, *json);
                         }});
}

}  // namespace shmstream_cli
