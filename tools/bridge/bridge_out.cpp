// `shmstream bridge out`: a local stream into a Redis stream, exactly once (see bridge.hpp).
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <thread>

#include "bridge/bridge.hpp"
#include "bridge/common.hpp"
#include "terminal.hpp"

namespace shmstream_cli {

using shmstream::ErrorCode;
using shmstream::Result;
using shmstream::Status;

using namespace bridge;

namespace {

// Redis's answer to an XADD whose ID is not above the stream's last one: the entry is there.
constexpr std::string_view kNotAbove = "equal or smaller than the target stream top item";

// What Redis already has of the stream.
struct Bridged {
  bool any = false;     // entries were ever added
  uint64_t resume = 0;  // the offset after the last entry
  bool ended = false;   // the last entry is the end marker
};

// Fails (kInvalidArgument) if the key holds something other than a stream.
Result<Bridged> bridged_so_far(Redis& redis, const std::string& key) {
  auto exists = holds_stream(redis, key);
  if (!exists.ok()) return exists.status();
  if (!*exists) return Bridged{};
  auto info = redis.command({"XINFO", "STREAM", key});
  if (!info.ok()) return info.status();
  if (info->is_error()) return error_reply(redis, "XINFO STREAM", *info);
  for (size_t i = 0; i + 1 < info->elements.size(); i += 2) {
    if (info->elements[i].text != "last-generated-id") continue;
    auto id = parse_id(info->elements[i + 1].text);
    if (!id) {
      return Status(ErrorCode::kProtocol, redis.describe() + ": unexpected last-generated-id \"" +
                                              info->elements[i + 1].text + "\"");
    }
    if (id->ms == 0 && id->seq == 0) return Bridged{};  // created empty, nothing added
    if (id->ms == 0) {
      return Status(ErrorCode::kInvalidArgument, redis.describe() + ": key \"" + key +
                                                     "\" holds a stream not written by a "
                                                     "shmstream bridge (last ID " +
                                                     info->elements[i + 1].text + ")");
    }
    return Bridged{true, id->ms - 1 + id->seq, id->seq == 0};
  }
  return Status(ErrorCode::kProtocol,
                redis.describe() + ": XINFO STREAM without last-generated-id");
}

}  // namespace

std::string bridge_cursor_name(const std::string& key) {
  std::string name = "bridge:";
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '@' || c == '-';
    name += ok ? c : '_';
  }
  return name.substr(0, 64);
}

int run_bridge_out(shmstream::Client& client, const BridgeOutOptions& o) {
  signal(SIGPIPE, SIG_IGN);  // a Redis that goes away is an error to handle, not a death
  shmstream::OpenOptions open_options;
  open_options.cursor = bridge_cursor_name(o.to.key);
  open_options.commit = shmstream::CommitMode::kExplicit;  // once Redis has the entries
  auto before = client.stat(o.name);
  auto opened = client.open(o.name, open_options);
  if (!opened.ok()) give_up(opened.status().message());
  shmstream::Reader reader = std::move(opened.value());
  // A cursor this run made is removed again if the bridge fails before Redis took its first
  // entry: a bridge that never ran leaves nothing that holds the stream back.
  const bool made_cursor =
      before.ok() && std::none_of(before->cursors.begin(), before->cursors.end(),
                                  [&](const auto& c) { return c.name == open_options.cursor; });
  bool delivered = false;
  on_give_up([&] {
    if (!made_cursor || delivered) return;
    reader.close();  // lets go of the cursor (the release reaches the daemon before the removal)
    (void)client.remove_cursor(o.name, open_options.cursor);
  });
  auto info = client.stat(o.name);
  if (!info.ok()) give_up(info.status().message());
  const bool records = info->records;
  const std::string kind = records ? "records" : "bytes";

  Progress progress(o.name + " -> " + o.to.address() + "/" + o.to.key, "bridged", 0);
  uint64_t started_at = 0;
  Redis redis = connect_retrying(o.to, o.timeout);
  // Where Redis says we are: seek there (the cursor may lag what Redis acknowledged).
  auto resume = [&]() -> bool {
    for (;;) {
      auto so_far = bridged_so_far(redis, o.to.key);
      if (!so_far.ok() && so_far.status().code() == ErrorCode::kUnavailable) {
        // Gone, or up but not ready (still loading its data): ask again shortly.
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        redis = connect_retrying(o.to, o.timeout);
        continue;
      }
      if (!so_far.ok()) give_up(so_far.status().message());
      if (so_far->ended) return false;
      uint64_t at = so_far->any ? so_far->resume : reader.oldest();
      if (at < reader.oldest()) {
        give_up("redis key \"" + o.to.key + "\" holds stream \"" + o.name + "\" up to offset " +
                std::to_string(at) + ", but the oldest offset left here is " +
                std::to_string(reader.oldest()) + ": the bytes between are gone");
      }
      if (Status s = reader.seek(static_cast<int64_t>(at)); !s.ok()) give_up(s.message());
      (void)reader.commit(at, 0);
      started_at = at;
      return true;
    }
  };
  if (!resume()) {
    std::fprintf(stderr, "shmstream: bridge: \"%s\" already ended in redis key \"%s\"\n",
                 o.name.c_str(), o.to.key.c_str());
    return 0;
  }

  std::vector<std::vector<std::string>> batch;
  std::optional<std::string> end;  // how the stream ended, once it did
  for (;;) {
    batch.clear();
    // The first entry of a batch waits; the rest take only what is committed already.
    while (batch.size() < o.batch && !end) {
      auto wait =
          batch.empty() ? shmstream::Timeout(std::chrono::seconds(1)) : shmstream::Timeout::zero();
      uint64_t start = reader.position();
      std::span<const std::byte> data;
      Status failed;
      if (records) {
        auto record = reader.next_record(wait);
        if (!record.ok()) {
          failed = record.status();
        } else if (!*record) {
          end = "closed";
        } else {
          start = (*record)->offset;
          data = (*record)->data;
        }
      } else {
        auto view = reader.next(o.chunk, wait);
        if (!view.ok()) {
          failed = view.status();
        } else if (view->empty()) {
          end = "closed";
        } else {
          start = reader.position() - view->size();
          data = *view;
        }
      }
      if (!failed.ok()) {
        if (failed.code() == ErrorCode::kTimeout) break;
        if (failed.code() == ErrorCode::kProducerDied) {
          end = "aborted";
        } else if (failed.code() == ErrorCode::kCancelled) {
          end = "cancelled";
        } else {
          give_up(failed.message());
        }
      }
      if (end) break;
      uint64_t extent = reader.position() - start;
      std::vector<std::string> xadd = {"XADD", o.to.key};
      if (o.maxlen != 0) {
        xadd.insert(xadd.end(), {"MAXLEN", "~", std::to_string(o.maxlen)});
      }
      xadd.insert(xadd.end(), {id_text(start + 1, extent), "d",
                               std::string(reinterpret_cast<const char*>(data.data()), data.size()),
                               "k", kind});
      // A drop-oldest ring may have overwritten what we just copied.
      if (!reader.intact(start)) {
        give_up("stream \"" + o.name + "\": offset " + std::to_string(start) +
                " was overwritten before it was bridged (the bridge fell more than the ring "
                "behind; oldest now " +
                std::to_string(reader.oldest()) + ")");
      }
      batch.push_back(std::move(xadd));
    }
    if (end) {
      std::vector<std::string> marker = {
          "XADD", o.to.key, id_text(reader.position() + 1, 0), "end", *end, "k", kind};
      batch.push_back(std::move(marker));
    }
    if (batch.empty()) continue;
    auto replies = redis.pipeline(batch);
    // Redis lost, or not ready (still loading): some entries may have landed. Ask it where we
    // are and go on (resume() reconnects as needed).
    bool retry = !replies.ok();
    for (size_t i = 0; !retry && i < replies->size(); ++i) {
      const RedisReply& reply = (*replies)[i];
      if (!reply.is_error() || reply.text.find(kNotAbove) != std::string::npos) continue;
      if (error_reply(redis, "XADD", reply).code() == ErrorCode::kUnavailable) {
        retry = true;
      } else {
        if (reply.text.rfind("WRONGTYPE", 0) == 0) {
          give_up(redis.describe() + ": key \"" + o.to.key +
                  "\" holds something other than a stream");
        }
        give_up(redis.describe() + ": XADD: " + reply.text);
      }
    }
    if (retry) {
      if (!resume()) break;
      end.reset();
      continue;
    }
    delivered = true;
    (void)reader.commit(reader.position(), 0);  // best effort: it is only for ls and top
    progress.update(reader.position() - started_at);
    if (end) break;
  }
  progress.finish(reader.position() - started_at);
  if (end && *end != "closed") {
    end_progress_line();
    std::fprintf(stderr, "shmstream: bridge: stream \"%s\" was %s; redis key \"%s\" says so too\n",
                 o.name.c_str(), end->c_str(), o.to.key.c_str());
    return 1;
  }
  return 0;
}

}  // namespace shmstream_cli
