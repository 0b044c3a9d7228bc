#include "cli/stream_info.hpp"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <cstdio>

namespace shmstream_cli {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string state_of(const shmstream::StreamInfo& info) {
  if (info.removing) return "removing";
  // Open, its producer dead: waiting (up to its resume grace) for a successor.
  if (info.awaiting_producer) return "orphaned";
  return shmstream::to_string(info.state);
}

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

namespace {

std::string cursors_json(const shmstream::StreamInfo& info) {
  std::string out = "[";
  for (const auto& c : info.cursors) {
    out += (out.size() > 1 ? "," : "") + std::string("{\"name\":") + json_string(c.name) +
           ",\"position\":" + std::to_string(c.position) +
           ",\"lag\":" + std::to_string(lag_of(info, c)) +
           ",\"reader_pid\":" + std::to_string(c.reader_pid) + "}";
  }
  return out + "]";
}

}  // namespace

void print_cursors(const shmstream::StreamInfo& info, const char* indent) {
  for (const auto& c : info.cursors) {
    std::string holder = c.reader_pid != 0 ? "held by pid " + std::to_string(c.reader_pid) : "idle";
    std::printf("%scursor %-20s at %14llu  lag %14llu  %s\n", indent, c.name.c_str(),
                static_cast<unsigned long long>(c.position),
                static_cast<unsigned long long>(lag_of(info, c)), holder.c_str());
  }
}

std::string user_name(uint32_t uid) {
  if (const passwd* pw = getpwuid(uid); pw != nullptr) return pw->pw_name;
  return std::to_string(uid);
}
std::string group_name(uint32_t gid) {
  if (const group* gr = getgrgid(gid); gr != nullptr) return gr->gr_name;
  return std::to_string(gid);
}

std::string info_json(const shmstream::StreamInfo& info) {
  return "{\"name\":" + json_string(info.name) + ",\"state\":\"" + state_of(info) +
         "\",\"stream_state\":\"" + shmstream::to_string(info.state) +
         "\",\"bytes\":" + std::to_string(info.bytes) +
         ",\"readers\":" + std::to_string(info.readers) +
         ",\"producer_pid\":" + std::to_string(info.producer_pid) +
         ",\"producer_uid\":" + std::to_string(info.producer_uid) +
         ",\"owner\":" + json_string(user_name(info.producer_uid)) +
         ",\"owner_gid\":" + std::to_string(info.owner_gid) +
         ",\"group\":" + json_string(group_name(info.owner_gid)) + ",\"mode\":\"" +
         shmstream::to_string(info.mode) + "\"" +
         ",\"max_bytes\":" + std::to_string(info.max_bytes) +
         ",\"created_unix_ns\":" + std::to_string(info.created_unix_ns) + ",\"retention\":\"" +
         shmstream::to_string(info.retention) +
         "\",\"ring_capacity\":" + std::to_string(info.ring_capacity) +
         ",\"oldest\":" + std::to_string(info.oldest) +
         ",\"records\":" + (info.records ? "true" : "false") +
         ",\"max_readers\":" + std::to_string(info.max_readers) +
         ",\"slowest_reader\":" + std::to_string(info.slowest_reader) +
         ",\"directory\":" + json_string(info.directory) +
         ",\"origin\":" + std::to_string(info.origin) +
         ",\"resume_grace_ms\":" + std::to_string(info.resume_grace.count()) +
         ",\"awaiting_producer\":" + (info.awaiting_producer ? "true" : "false") +
         ",\"cursors\":" + cursors_json(info) + "}";
}

}  // namespace shmstream_cli
