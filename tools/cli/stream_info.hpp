// tools/cli/stream_info.hpp — a stream's description as `ls` and `stat` print it for people:
// the retention, cursors and their lag. (--json prints shmstream::to_json(); owner and group
// names come from shmstream::owner_name() and group_name().)
#pragma once

#include <cstdint>
#include <string>

#include "shmstream/client.hpp"

namespace shmstream_cli {

// "unbounded", or e.g. "block:4M" for a ring of 4 MiB.
std::string retention_of(const shmstream::StreamInfo& info);
// How far the cursor is behind the committed end.
uint64_t lag_of(const shmstream::StreamInfo& info, const shmstream::CursorInfo& cursor);
// "  cursor NAME  at P  lag L  held by pid N" (or "idle"), one line per cursor.
void print_cursors(const shmstream::StreamInfo& info, const char* indent);
// A blocking ring's producer waiting for room: what it waits for, and who holds it back.
void print_stall(const shmstream::StreamInfo& info, const char* indent);

}  // namespace shmstream_cli
