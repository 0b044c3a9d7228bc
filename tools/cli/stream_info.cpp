#include "cli/stream_info.hpp"

#include <algorithm>
#include <cstdio>

namespace shmstream_cli {

std::string retention_of(const shmstream::StreamInfo& info) {
  std::string out = shmstream::to_string(info.retention);
  if (info.retention == shmstream::Retention::kUnbounded) return out;
  uint64_t c = info.ring_capacity;
  if (c % (1 << 30) == 0) return out + ":" + std::to_string(c >> 30) + "G";
  if (c % (1 << 20) == 0) return out + ":" + std::to_string(c >> 20) + "M";
  if (c % (1 << 10) == 0) return out + ":" + std::to_string(c >> 10) + "K";
  return out + ":" + std::to_string(c);
}

uint64_t lag_of(const shmstream::StreamInfo& info, const shmstream::CursorInfo& cursor) {
  return info.bytes - std::min(info.bytes, cursor.position);
}

void print_stall(const shmstream::StreamInfo& info, const char* indent) {
  std::string stall = shmstream::stall_text(info);
  if (!stall.empty()) std::printf("%s%s\n", indent, stall.c_str());
}

void print_cursors(const shmstream::StreamInfo& info, const char* indent) {
  for (const auto& c : info.cursors) {
    std::string holder = c.reader_pid != 0 ? "held by pid " + std::to_string(c.reader_pid) : "idle";
    std::printf("%scursor %-20s at %14llu  lag %14llu  %s\n", indent, c.name.c_str(),
                static_cast<unsigned long long>(c.position),
                static_cast<unsigned long long>(lag_of(info, c)), holder.c_str());
  }
}

}  // namespace shmstream_cli
