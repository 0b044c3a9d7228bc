// `shmstream rm NAME`: removes a stream (or one of its named cursors).
#include <memory>
#include <string>

#include "cli/commands.hpp"
#include "cli/common.hpp"

namespace shmstream_cli {

Command add_rm(CLI::App& app) {
  struct RmOptions {
    std::string name;
    bool force = false;
    std::string cursor;
  };
  auto* rm = app.add_subcommand("rm", "Remove a stream; current readers may finish");
  auto o = std::make_shared<RmOptions>();
  rm->add_option("NAME", o->name, "Stream name")->required();
  auto* force =
      rm->add_flag("--force", o->force, "Cancel it at once: every reader and the producer fail");
  rm->add_option("--cursor", o->cursor,
                 "Remove only this named cursor of the stream (it stops holding a block ring)")
      ->excludes(force);
  return Command{rm, nullptr, [o](shmstream::Client& client) {
                   check(o->cursor.empty() ? client.remove(o->name, o->force)
                                           : client.remove_cursor(o->name, o->cursor));
                   return 0;
                 }};
}

}  // namespace shmstream_cli
