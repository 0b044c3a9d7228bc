// The public names of stream states, retentions and modes, and a stream's description as JSON
// (what the CLI prints and the Python module returns: one field set, made here).
#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "shm/segment.hpp"
#include "shmstream/client.hpp"

namespace shmstream {

std::string json_quote(std::string_view s) {
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

namespace {

// A uid or gid as its name, if it has one (its number otherwise). The _r calls: a library may be
// used from several threads.
std::string name_of_user(uint32_t uid) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->pw_name;
  }
  return std::to_string(uid);
}

std::string name_of_group(uint32_t gid) {
  std::vector<char> buf(16384);
  group gr{};
  group* found = nullptr;
  if (getgrgid_r(gid, &gr, buf.data(), buf.size(), &found) == 0 && found != nullptr) {
    return found->gr_name;
  }
  return std::to_string(gid);
}

// Appends `"key":value` (value already JSON), with a comma unless it is the first.
void field(std::string& out, const char* key, const std::string& value) {
  if (out.size() > 1) out += ',';
  out += '"';
  out += key;
  out += "\":";
  out += value;
}

const char* boolean(bool b) { return b ? "true" : "false"; }

}  // namespace

const char* to_string(StreamState state) {
  return shm::state_name(static_cast<shm::StreamState>(state));
}

const char* to_string(StreamMode mode) {
  switch (mode) {
    case StreamMode::kOwner:
      return "owner";
    case StreamMode::kGroup:
      return "group";
    case StreamMode::kEveryone:
      return "everyone";
  }
  return "invalid";
}

const char* to_string(Retention retention) {
  switch (retention) {
    case Retention::kUnbounded:
      return "unbounded";
    case Retention::kDropOldest:
      return "drop-oldest";
    case Retention::kBlock:
      return "block";
  }
  return "invalid";
}

Result<Retention> parse_retention(std::string_view name) {
  for (Retention r : {Retention::kUnbounded, Retention::kDropOldest, Retention::kBlock}) {
    if (name == to_string(r)) return r;
  }
  return Status(ErrorCode::kInvalidArgument,
                "retention \"" + std::string(name) + "\": use unbounded, drop-oldest or block");
}

Result<StreamMode> parse_mode(std::string_view name) {
  for (StreamMode m : {StreamMode::kOwner, StreamMode::kGroup, StreamMode::kEveryone}) {
    if (name == to_string(m)) return m;
  }
  return Status(ErrorCode::kInvalidArgument,
                "mode \"" + std::string(name) + "\": use owner, group or everyone");
}

std::string owner_name(const StreamInfo& info) { return name_of_user(info.owner_uid); }
std::string group_name(const StreamInfo& info) { return name_of_group(info.owner_gid); }

const char* state_label(const StreamInfo& info) {
  if (!info.damage.empty()) return "corrupt";
  if (info.removing) return "removing";
  if (info.awaiting_producer) return "orphaned";  // open, its producer dead, within its grace
  return to_string(info.state);
}

std::vector<std::string> stall_holders(const StreamInfo& info) {
  std::vector<std::string> out;
  if (info.producer_waits_for == UINT64_MAX) return out;
  for (const auto& r : info.attached) {
    if (r.position >= info.producer_waits_for) continue;
    out.push_back(r.cursor.empty()
                      ? "reader pid " + std::to_string(r.pid)
                      : "cursor \"" + r.cursor + "\" (reader pid " + std::to_string(r.pid) + ")");
  }
  for (const auto& c : info.cursors) {
    if (c.reader_pid == 0 && c.position < info.producer_waits_for) {
      out.push_back("cursor \"" + c.name + "\" (no reader)");
    }
  }
  return out;
}

std::string stall_text(const StreamInfo& info) {
  if (info.producer_waits_for == UINT64_MAX) return {};
  std::string out = "producer waits " + std::to_string(info.stalled.count()) +
                    " ms for readers to pass offset " + std::to_string(info.producer_waits_for);
  std::vector<std::string> holders = stall_holders(info);
  for (size_t i = 0; i < holders.size(); ++i) out += (i == 0 ? ": " : ", ") + holders[i];
  if (info.stall_limit.count() != 0) {
    out += " (stall limit " + std::to_string(info.stall_limit.count()) + " ms)";
  }
  return out;
}

std::string to_json(const DaemonInfo& info) {
  using std::to_string;
  std::string out = "{";
  field(out, "version", json_quote(info.version));
  field(out, "pid", to_string(info.pid));
  field(out, "uid", to_string(info.uid));
  field(out, "socket", json_quote(info.socket));
  field(out, "started_unix_ns", to_string(info.started_unix_ns));
  field(out, "config_file", json_quote(info.config_file));
  field(out, "segment_dir", json_quote(info.segment_dir));
  field(out, "persist_dir", json_quote(info.persist_dir));
  field(out, "streams", to_string(info.streams));
  field(out, "removing", to_string(info.removing));
  field(out, "memory_bytes", to_string(info.memory_bytes));
  field(out, "disk_bytes", to_string(info.disk_bytes));
  field(out, "connections", to_string(info.connections));
  std::string limits = "{";
  field(limits, "max_streams_per_user", to_string(info.max_streams_per_user));
  field(limits, "max_connections_per_user", to_string(info.max_connections_per_user));
  field(limits, "max_connections", to_string(info.max_connections));
  field(limits, "max_bytes_per_user", to_string(info.max_bytes_per_user));
  field(limits, "reserve_bytes", to_string(info.reserve_bytes));
  field(limits, "default_max_bytes", to_string(info.default_max_bytes));
  field(limits, "default_max_readers", to_string(info.default_max_readers));
  field(limits, "max_ring_bytes", to_string(info.max_ring_bytes));
  field(limits, "stall_limit_ms", to_string(info.stall_limit_ms));
  field(out, "limits", limits + "}");
  return out + "}";
}

std::string to_json(const StreamInfo& info) {
  using std::to_string;
  std::string out = "{";
  field(out, "name", json_quote(info.name));
  field(out, "state", json_quote(state_label(info)));
  field(out, "stream_state", json_quote(to_string(info.state)));
  field(out, "removing", boolean(info.removing));
  field(out, "bytes", to_string(info.bytes));
  field(out, "readers", to_string(info.readers));
  field(out, "producer_pid", to_string(info.producer_pid));
  field(out, "owner_uid", to_string(info.owner_uid));
  field(out, "owner", json_quote(owner_name(info)));
  field(out, "owner_gid", to_string(info.owner_gid));
  field(out, "group", json_quote(group_name(info)));
  field(out, "mode", json_quote(to_string(info.mode)));
  field(out, "stream_id", to_string(info.stream_id));
  field(out, "max_bytes", to_string(info.max_bytes));
  field(out, "created_unix_ns", to_string(info.created_unix_ns));
  field(out, "retention", json_quote(to_string(info.retention)));
  field(out, "ring_capacity", to_string(info.ring_capacity));
  field(out, "oldest", to_string(info.oldest));
  field(out, "records", boolean(info.records));
  field(out, "max_readers", to_string(info.max_readers));
  field(out, "slowest_reader", to_string(info.slowest_reader));
  field(out, "directory", json_quote(info.directory));
  field(out, "origin", to_string(info.origin));
  field(out, "resume_grace_ms", to_string(info.resume_grace.count()));
  field(out, "awaiting_producer", boolean(info.awaiting_producer));
  field(out, "damage", json_quote(info.damage));
  field(out, "stall_limit_ms", to_string(info.stall_limit.count()));
  const bool waits = info.producer_waits_for != UINT64_MAX;
  field(out, "producer_waits_for", waits ? to_string(info.producer_waits_for) : "null");
  field(out, "stalled_ms", to_string(info.stalled.count()));
  field(out, "record_count", to_string(info.record_count));
  field(out, "write_rate_bytes_per_s", fmt::format("{:.1f}", info.write_rate_bytes_per_s));
  field(out, "last_write_age_ms",
        info.last_write_age ? to_string(info.last_write_age->count()) : "null");
  field(out, "allocated_bytes", to_string(info.allocated_bytes));
  std::string held_by = "[";
  for (const std::string& who : stall_holders(info)) {
    held_by += (held_by.size() > 1 ? "," : "") + json_quote(who);
  }
  field(out, "held_by", held_by + "]");
  if (info.abort_reason.has_value()) {
    std::string why = "{";
    field(why, "kind", json_quote(abort_kind_name(info.abort_reason->kind)));
    field(why, "code", to_string(info.abort_reason->code));
    field(why, "message", json_quote(info.abort_reason->message));
    field(why, "text", json_quote(info.abort_reason->describe()));
    field(out, "abort_reason", why + "}");
  } else {
    field(out, "abort_reason", "null");
  }
  std::string cursors = "[";
  for (const auto& c : info.cursors) {
    std::string cursor = "{";
    field(cursor, "name", json_quote(c.name));
    field(cursor, "position", to_string(c.position));
    field(cursor, "lag", to_string(info.bytes - std::min(info.bytes, c.position)));
    field(cursor, "reader_pid", to_string(c.reader_pid));
    cursors += (cursors.size() > 1 ? "," : "") + cursor + "}";
  }
  field(out, "cursors", cursors + "]");
  std::string attached = "[";
  for (const auto& r : info.attached) {
    std::string reader = "{";
    field(reader, "pid", to_string(r.pid));
    field(reader, "position", to_string(r.position));
    field(reader, "cursor", json_quote(r.cursor));
    attached += (attached.size() > 1 ? "," : "") + reader + "}";
  }
  field(out, "attached", attached + "]");
  return out + "}";
}

}  // namespace shmstream
