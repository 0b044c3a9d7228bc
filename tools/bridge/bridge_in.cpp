// `shmstream bridge in`: a Redis stream into a local stream, exactly once (see bridge.hpp).
#include <signal.h>

#include <optional>
#include <thread>

#include "bridge/bridge.hpp"
#include "bridge/common.hpp"
#include "terminal.hpp"

namespace shmstream_cli {

using namespace bridge;
using shmstream::ErrorCode;
using shmstream::Result;
using shmstream::Status;

namespace {

// One entry of an XREAD reply.
struct Entry {
  std::string id_text;
  EntryId id;
  const std::string* data = nullptr;  // field "d"
  const std::string* kind = nullptr;  // field "k"
  const std::string* end = nullptr;   // field "end" (the end marker)
};

// The entries of an XREAD reply for one key (none on a timeout's nil).
Result<std::vector<Entry>> entries_of(const Redis& redis, const RedisReply& reply) {
  std::vector<Entry> out;
  if (reply.type == RedisReply::Type::kNil) return out;
  auto malformed = [&](const char* what) {
    return Status(ErrorCode::kProtocol,
                  redis.describe() + ": unexpected XREAD reply (" + what + ")");
  };
  if (reply.elements.size() != 1 || reply.elements[0].elements.size() != 2) {
    return malformed("not one stream");
  }
  for (const RedisReply& e : reply.elements[0].elements[1].elements) {
    if (e.elements.size() != 2) return malformed("an entry without ID and fields");
    Entry entry;
    entry.id_text = e.elements[0].text;
    auto id = parse_id(entry.id_text);
    if (!id || id->ms == 0) {
      return Status(ErrorCode::kInvalidArgument,
                    redis.describe() + ": entry " + entry.id_text +
                        " was not written by a shmstream bridge (its ID carries no offset)");
    }
    entry.id = *id;
    const auto& fields = e.elements[1].elements;
    for (size_t i = 0; i + 1 < fields.size(); i += 2) {
      const std::string& field = fields[i].text;
      if (field == "d") entry.data = &fields[i + 1].text;
      if (field == "k") entry.kind = &fields[i + 1].text;
      if (field == "end") entry.end = &fields[i + 1].text;
    }
    out.push_back(std::move(entry));
  }
  return out;
}

class BridgeIn {
 public:
  BridgeIn(shmstream::Client& client, const BridgeInOptions& o)
      : client_(client), o_(o), redis_(connect_retrying(o.from, o.timeout)) {}

  int run() {
    attach();
    uint64_t started = next_;
    Progress progress(o_.from.address() + "/" + o_.key + " -> " + o_.name, "bridged", 0);
    for (;;) {
      auto entries = read(id_text(next_, UINT64_MAX), o_.batch);
      for (const Entry& entry : entries) {
        if (auto done = take(entry)) {
          progress.finish(next_ - started);
          return *done;
        }
      }
      progress.update(next_ - started);
      if (entries.empty()) check_local();
    }
  }

 private:
  // The local stream: resumed if a dead bridge left it, else created at the first entry.
  void attach() {
    for (int busy = 0;; ++busy) {
      auto resumed = client_.resume(o_.name);
      if (resumed.ok()) {
        producer_.emplace(std::move(resumed.value()));
        auto info = client_.stat(o_.name);
        if (!info.ok()) give_up(info.status().message());
        records_ = info->records;
        next_ = info->origin + producer_->committed();
        std::fprintf(stderr, "shmstream: bridge: resumed \"%s\" at offset %llu (of the source)\n",
                     o_.name.c_str(), static_cast<unsigned long long>(next_));
        return;
      }
      ErrorCode code = resumed.status().code();
      if (code == ErrorCode::kNotFound) break;
      // The previous bridge was just killed: the daemon has yet to see its process exit.
      if (code == ErrorCode::kBusy && busy * 50 < 5000) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      give_up(resumed.status().message() +
              (code == ErrorCode::kBusy ? " (another bridge in?)"
               : code == ErrorCode::kStreamClosed || code == ErrorCode::kInvalidArgument
                   ? "; remove it (shmstream rm) to bridge into it afresh"
                   : ""));
    }
    // Created at the first entry Redis still has: it says the kind and the origin.
    std::vector<Entry> first;
    while (first.empty()) first = read("0-0", 1);
    records_ = kind_is_records(first[0]);
    shmstream::CreateOptions options;
    options.records = records_;
    options.resume_grace = o_.grace;
    options.origin = first[0].id.ms - 1;
    options.max_bytes = o_.max_bytes;
    options.retention = o_.retention;
    options.ring_capacity = o_.ring_capacity;
    options.mode = o_.mode;
    auto created = client_.create(o_.name, options);
    if (!created.ok()) give_up(created.status().message());
    producer_.emplace(std::move(created.value()));
    next_ = options.origin;
  }

  bool kind_is_records(const Entry& entry) const {
    if (entry.kind == nullptr || (*entry.kind != "records" && *entry.kind != "bytes")) {
      give_up(redis_.describe() + ": entry " + entry.id_text + " of key \"" + o_.key +
              "\" has no kind (field k): not written by a shmstream bridge");
    }
    return *entry.kind == "records";
  }

  // Up to `count` entries after `after`, waiting up to a second for the first; through lost
  // connections and a Redis not ready yet. Checks the key holds a stream after each reconnect.
  std::vector<Entry> read(const std::string& after, size_t count) {
    for (;;) {
      if (!checked_) {
        auto exists = holds_stream(redis_, o_.key);
        if (exists.ok()) {
          checked_ = true;
        } else if (exists.status().code() != ErrorCode::kUnavailable) {
          fail(exists.status().message());
        }
      }
      if (checked_) {
        auto reply = redis_.command(
            {"XREAD", "COUNT", std::to_string(count), "BLOCK", "1000", "STREAMS", o_.key, after});
        Status failed = reply.ok() ? Status() : reply.status();
        if (reply.ok() && reply->is_error()) failed = error_reply(redis_, "XREAD", *reply);
        if (failed.ok()) {
          last_reply_ = std::move(reply.value());  // the entries point into it
          auto entries = entries_of(redis_, last_reply_);
          if (!entries.ok()) fail(entries.status().message());
          return std::move(entries.value());
        }
        if (failed.code() != ErrorCode::kUnavailable) {
          // WRONGTYPE: the key was replaced; checking it again says by what.
          if (failed.message().find("WRONGTYPE") == std::string::npos) fail(failed.message());
          checked_ = false;
          continue;
        }
      }
      // Gone, or up but not ready (still loading its data): ask again shortly.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      redis_ = connect_retrying(o_.from, o_.timeout);
      checked_ = false;
    }
  }

  // Appends one entry to the local stream; the exit code once the stream ended.
  std::optional<int> take(const Entry& entry) {
    uint64_t start = entry.id.ms - 1;
    if (start < next_) return std::nullopt;  // had it already (cannot happen: XREAD is after)
    if (start > next_) {
      fail("redis key \"" + o_.key + "\" no longer holds offsets " + std::to_string(next_) +
           " to " + std::to_string(start) + " (trimmed, MAXLEN, before this bridge read them)");
    }
    if (entry.id.seq == 0) {  // the end marker
      if (entry.end == nullptr) {
        fail("entry " + entry.id_text + " of key \"" + o_.key +
             "\" is no end marker (no field end): not written by a shmstream bridge");
      }
      const std::string& how = *entry.end;
      Status s = how == "closed" ? producer_->close() : producer_->abort();
      if (!s.ok()) fail(s.message());
      if (how == "closed") return 0;
      end_progress_line();
      std::fprintf(stderr, "shmstream: bridge: the source stream was %s; so is \"%s\"\n",
                   how.c_str(), o_.name.c_str());
      return 1;
    }
    if (entry.data == nullptr) fail("entry " + entry.id_text + " has no data (field d)");
    if (kind_is_records(entry) != records_) {
      fail("entry " + entry.id_text + " is " + *entry.kind + ", but \"" + o_.name + "\" is not");
    }
    uint64_t before = producer_->committed();
    auto bytes = std::as_bytes(std::span(*entry.data));
    Status s = records_ ? producer_->publish(bytes) : producer_->append(bytes);
    // Full, or removed by force: nothing more can follow, so its readers learn it now rather
    // than after the grace.
    if (!s.ok()) fail(s.message());
    // The local stream's extent must be the source's: offsets keep mapping one to one.
    if (producer_->committed() - before != entry.id.seq) {
      fail("entry " + entry.id_text + " spans " + std::to_string(entry.id.seq) +
           " bytes of the source, " + std::to_string(producer_->committed() - before) + " here");
    }
    next_ += entry.id.seq;
    return std::nullopt;
  }

  // While idle: the local stream may have been removed or cancelled meanwhile.
  void check_local() {
    auto info = client_.stat(o_.name);
    if (!info.ok() && info.status().code() == ErrorCode::kUnavailable) return;  // no daemon now
    if (!info.ok() || info->removing || info->state != shmstream::StreamState::kOpen) {
      give_up("stream \"" + o_.name + "\" was " +
              (info.ok() && !info->removing ? std::string(shmstream::to_string(info->state))
                                            : "removed") +
              " here, not through the bridge");
    }
  }

  // A permanent failure: the local stream ends as aborted (its readers learn it at once).
  [[noreturn]] void fail(const std::string& message) {
    if (producer_) (void)producer_->abort();
    give_up(message);
  }

  shmstream::Client& client_;
  const BridgeInOptions& o_;
  Redis redis_;
  bool checked_ = false;  // the key was seen to hold a stream (or nothing) on this connection
  RedisReply last_reply_;
  std::optional<shmstream::Producer> producer_;
  bool records_ = false;
  uint64_t next_ = 0;  // the source offset of the next entry
};

}  // namespace

int run_bridge_in(shmstream::Client& client, const BridgeInOptions& options) {
  signal(SIGPIPE, SIG_IGN);  // a Redis that goes away is an error to handle, not a death
  return BridgeIn(client, options).run();
}

}  // namespace shmstream_cli
