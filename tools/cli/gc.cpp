// `shmstream gc`: lists, and removes, what dead daemons left behind (shmstream/leftovers.hpp).
// Needs no daemon.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "shmstream/leftovers.hpp"
#include "terminal.hpp"

namespace shmstream_cli {

namespace {

struct GcOptions {
  bool dry_run = false;
  bool quarantined = false;
  bool older_layouts = false;
  std::vector<std::string> dirs;
};

int run_gc(const GcOptions& o) {
  std::vector<std::string> dirs = o.dirs;
  if (dirs.empty()) dirs.push_back("/dev/shm");
  uint64_t removed_bytes = 0;
  uint64_t kept_bytes = 0;
  int removed = 0;
  int kept = 0;
  int failed = 0;
  uint32_t served = 0;
  for (const auto& dir : dirs) {
    auto scan = take(shmstream::find_leftovers(dir));
    served += scan.served;
    for (const auto& note : scan.unchecked) {
      std::fprintf(stderr, "shmstream gc: not checked: %s\n", note.c_str());
    }
    for (const auto& leftover : scan.leftovers) {
      const bool wanted =
          (leftover.kind != shmstream::Leftover::Kind::kQuarantined || o.quarantined) &&
          (leftover.kind != shmstream::Leftover::Kind::kOlderLayout || o.older_layouts);
      std::string what =
          leftover.stream.empty() ? std::string() : " (stream \"" + leftover.stream + "\")";
      if (!leftover.side_files.empty()) {
        what += " + " + std::to_string(leftover.side_files.size()) + " side file" +
                (leftover.side_files.size() == 1 ? "" : "s");
      }
      std::string action = !wanted ? "kept" : o.dry_run ? "would remove" : "removed";
      if (wanted && !o.dry_run) {
        if (auto s = shmstream::remove_leftover(leftover); !s.ok()) {
          std::fprintf(stderr, "shmstream gc: %s\n", s.message().c_str());
          action = "failed";
          ++failed;
        }
      }
      std::printf("%-12s %-12s %10s  %s/%s%s: %s%s\n", action.c_str(), to_string(leftover.kind),
                  human_bytes(static_cast<double>(leftover.bytes)).c_str(), dir.c_str(),
                  leftover.file.c_str(), what.c_str(), leftover.reason.c_str(),
                  wanted ? ""
                  : leftover.kind == shmstream::Leftover::Kind::kQuarantined
                      ? " (--quarantined removes it)"
                      : " (--older-layouts removes it)");
      if (action == "kept" || action == "failed") {
        ++kept;
        kept_bytes += leftover.bytes;
      } else {
        ++removed;
        removed_bytes += leftover.bytes;
      }
    }
  }
  std::printf("%s %d (%s); kept %d (%s); %u segment%s served by live daemons, untouched\n",
              o.dry_run ? "would remove" : "removed", removed,
              human_bytes(static_cast<double>(removed_bytes)).c_str(), kept,
              human_bytes(static_cast<double>(kept_bytes)).c_str(), served, served == 1 ? "" : "s");
  return failed == 0 ? 0 : 1;
}

}  // namespace

Command add_gc(CLI::App& app) {
  auto* gc = app.add_subcommand(
      "gc",
      "Remove the segments no live daemon serves (left by a daemon killed and never "
      "restarted), their side files, and on request quarantined files. Needs no daemon; as a "
      "user, removes only your files (root: everyone's)");
  auto o = std::make_shared<GcOptions>();
  gc->add_flag("-n,--dry-run", o->dry_run,
               "List what would be removed, with sizes; remove nothing");
  gc->add_flag("--quarantined", o->quarantined,
               "Also remove the files daemons moved aside instead of adopting them");
  gc->add_flag("--older-layouts", o->older_layouts,
               "Also remove segments of other shmstreamd versions (stop those daemons first)");
  gc->add_option("--dir", o->dirs,
                 "Directory to clean (repeatable; default /dev/shm). A persistent directory's "
                 "streams count as left behind only when no daemon serves them")
      ->check(CLI::ExistingDirectory);
  return Command{gc, nullptr, nullptr, [o] { return run_gc(*o); }};
}

}  // namespace shmstream_cli
