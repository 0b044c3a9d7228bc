// `shmstream rm NAME...`: removes streams (or a named cursor of each).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"

namespace shmstream_cli {

Command add_rm(CLI::App& app) {
  struct RmOptions {
    std::vector<std::string> names;
    bool force = false;
    std::string cursor;
  };
  auto* rm = app.add_subcommand("rm", "Remove streams; current readers may finish");
  auto o = std::make_shared<RmOptions>();
  rm->add_option("NAME", o->names, "Stream names")->required();
  auto* force =
      rm->add_flag("--force", o->force, "Cancel them at once: every reader and the producer fail");
  rm->add_option("--cursor", o->cursor,
                 "Remove only this named cursor of each stream (it stops holding a block ring)")
      ->excludes(force);
  return Command{rm, nullptr, [o](shmstream::Client& client) {
                   // Each name on its own: one that fails is reported, the others still go.
                   int failed = 0;
                   for (const std::string& name : o->names) {
                     shmstream::Status s = o->cursor.empty()
                                               ? client.remove(name, o->force)
                                               : client.remove_cursor(name, o->cursor);
                     if (!s.ok()) {
                       std::fprintf(stderr, "shmstream: %s\n", s.message().c_str());
                       ++failed;
                     }
                   }
                   return failed == 0 ? 0 : 1;
                 }};
}

}  // namespace shmstream_cli
