#include "daemon/registry.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "shm/naming.hpp"
#include "shm/posix_error.hpp"

namespace shmstream::daemon {
namespace {

uint64_t random_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  uint64_t id = 0;
  while (id == 0) id = rng();
  return id;
}

// kBusy while a live reader holds the cursor (one that died unseen does not count).
Status unless_held(const std::string& stream, const std::string& name, const Cursor& cursor) {
  if (cursor.reader_pid == 0 || !process_alive(cursor.reader_pid)) return Status();
  return Status(ErrorCode::kBusy, fmt::format("stream \"{}\": cursor \"{}\" is held by the reader "
                                              "pid {}",
                                              stream, name, cursor.reader_pid));
}

}  // namespace

bool process_alive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

uint32_t Stream::slots_held_by(uid_t uid) const {
  return static_cast<uint32_t>(std::count_if(slot_users.begin(), slot_users.end(),
                                             [uid](const auto& s) { return s.second == uid; }));
}

uint32_t Stream::resume_grace_ms() const {
  return std::min(segment.header().resume_grace_ms, kMaxResumeGraceMs);
}

Registry::Registry(RegistryConfig config)
    : config_(std::move(config)), persistent_(config_.persist_dir) {
  dir_fd_ =
      kj::AutoCloseFd(::open(config_.segment_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd_.get() < 0) {
    throw std::runtime_error(
        fmt::format("segment directory {}: {}", config_.segment_dir, std::strerror(errno)));
  }
  adopt_existing_segments(dir_fd_.get(), nullptr, "");
  // Persistent streams: the daemon's directory, then every other directory it recorded there.
  for (const auto& dir : persistent_.to_adopt()) {
    auto fd = persistent_.open(dir, /*record=*/false);
    if (!fd.ok()) {
      spdlog::warn("persistent directory {}: {}", dir, fd.status().message());
      continue;
    }
    adopt_existing_segments((*fd)->get(), *fd, dir);
  }
}

Registry::~Registry() = default;

Status Registry::give_to_owner(int fd, const Stream& stream, mode_t bits,
                               const std::string& what) const {
  struct stat st {};
  if (fstat(fd, &st) != 0) return from_errno(errno, what);
  if ((st.st_uid != stream.owner.uid || st.st_gid != stream.owner.gid) &&
      fchown(fd, stream.owner.uid, stream.owner.gid) != 0) {
    int err = errno;
    return Status(
        ErrorCode::kPermissionDenied,
        fmt::format("{}: this daemon (uid {}) cannot give its files to uid {} gid {}: {}; "
                    "other users need the system-wide daemon (shmstreamd --system), "
                    "which runs as root",
                    what, geteuid(), stream.owner.uid, stream.owner.gid, std::strerror(err)));
  }
  // Explicit, whatever the daemon's umask.
  if (fchmod(fd, bits) != 0) return from_errno(errno, what + ": setting its mode");
  return Status();
}

Status Registry::ensure_wait_page(Stream& stream, bool reuse, uint32_t max_readers) {
  std::string file = stream.wait_file_name();
  std::string what = fmt::format("stream \"{}\"", stream.name);
  if (reuse) {
    kj::AutoCloseFd fd(openat(stream.dir_fd, file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    auto wait = fd.get() >= 0 ? shm::WaitFile::map(fd.get(), stream.id, what)
                              : Result<shm::WaitFile>(Status(ErrorCode::kNotFound, "missing"));
    if (wait.ok()) {
      // The readers of an earlier daemon: those still alive (this boot) keep their slots, to
      // reattach (the server watches their pids); the others' slots are freed. Named cursors
      // stay, committed where they were, held by their reader if it lives.
      auto kept = shm::adopt_reader_slots(
          *wait, shm::created_this_boot(stream.segment.header()),
          [](uint32_t pid) { return process_alive(static_cast<pid_t>(pid)); });
      for (auto& slot : kept) {
        auto pid = static_cast<pid_t>(slot.pid);
        if (!slot.cursor.empty())
          stream.cursors[slot.cursor] = Cursor{slot.index, pid, 0, slot.uid};
        stream.slot_users[slot.index] = slot.uid;
        if (pid != 0) stream.orphans[slot.index] = pid;
      }
      stream.wait = std::move(wait).value();
      stream.wait_fd = std::make_shared<kj::AutoCloseFd>(kj::mv(fd));
      return Status();
    }
    // Missing or unusable: a fresh one (a live producer keeps waking through its old mapping
    // only what it can reach; readers opening from now on use the new file).
    unlinkat(stream.dir_fd, file.c_str(), 0);
  }
  kj::AutoCloseFd fd(openat(stream.dir_fd, file.c_str(),
                            O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() < 0) return from_errno(errno, what + ": creating the wait file");
  // Its owner's only, always: other readers reach it through the descriptor the daemon hands
  // them (proto WaitFile), so a mode never lets anyone else write reader slots.
  if (Status s = give_to_owner(fd.get(), stream, 0600, what + ": the wait file"); !s.ok()) return s;
  if (Status s = shm::format_wait_file(fd.get(), stream.id, max_readers); !s.ok()) {
    return s.with_context(what);
  }
  auto wait = shm::WaitFile::map(fd.get(), stream.id, what);
  if (!wait.ok()) return wait.status();
  stream.wait = std::move(wait).value();
  stream.wait_fd = std::make_shared<kj::AutoCloseFd>(kj::mv(fd));
  return Status();
}

void Registry::unlink_files(const Stream& stream) {
  for (const std::string& file : {stream.file_name, stream.wait_file_name()}) {
    if (unlinkat(stream.dir_fd, file.c_str(), 0) != 0 && errno != ENOENT) {
      spdlog::warn("stream \"{}\": unlinking {}: {}", stream.name, file, std::strerror(errno));
    }
  }
}

Result<ProducerAccess> Registry::create(const std::string& name, const CreateParams& create,
                                        const Peer& peer) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  if (live_.count(name) != 0) {
    return Status(ErrorCode::kAlreadyExists, fmt::format("stream \"{}\": already exists", name));
  }
  uint64_t max_bytes = create.max_bytes != 0 ? create.max_bytes : config_.default_max_bytes;
  uint32_t max_readers = create.max_readers != 0 ? create.max_readers : config_.default_max_readers;
  if (max_readers > shm::kMaxReadersLimit) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream \"{}\": {} readers exceeds the limit {}", name, max_readers,
                              shm::kMaxReadersLimit));
  }
  size_t owned = 0;
  for (const auto& [other, stream] : live_) {
    owned += stream->owner.uid == peer.uid ? 1 : 0;
  }
  if (owned >= config_.max_streams_per_user) {
    return Status(ErrorCode::kLimitExceeded,
                  fmt::format("stream \"{}\": uid {} already has {} streams, the most this daemon "
                              "allows (shmstreamd --max-streams-per-user)",
                              name, peer.uid, owned));
  }
  if (create.ring_capacity > config_.max_ring_capacity) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream \"{}\": a ring of {} bytes exceeds this daemon's limit of {} "
                              "(shmstreamd --max-ring-bytes)",
                              name, create.ring_capacity, config_.max_ring_capacity));
  }
  if (max_bytes > shm::kMaxDataSizeLimit) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream \"{}\": maximum size {} exceeds the limit {}", name,
                              max_bytes, shm::kMaxDataSizeLimit));
  }
  if (create.resume_grace_ms > kMaxResumeGraceMs) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream \"{}\": a resume grace of {} ms exceeds the limit of {} ms",
                              name, create.resume_grace_ms, kMaxResumeGraceMs));
  }
  auto stream = std::make_shared<Stream>();
  stream->name = name;
  stream->id = random_id();
  stream->file_name = shm::segment_file_name(config_.instance, stream->id);
  stream->dir_fd = dir_fd_.get();
  stream->owner = Owner{peer.uid, peer.gid, create.mode};
  std::string what = fmt::format("stream \"{}\"", name);
  if (create.persistent || !create.directory.empty()) {
    std::string dir = create.directory.empty() ? persistent_.own() : create.directory;
    if (dir.empty()) {
      return Status(ErrorCode::kInvalidArgument,
                    what +
                        ": this daemon has no persistent directory (shmstreamd --persist-dir); "
                        "name one with --dir");
    }
    dir = std::filesystem::path(dir).lexically_normal().string();
    if (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    // Another user may only name a directory of their own: the daemon writes there for them.
    struct stat st {};
    if (!create.directory.empty() && peer.uid != geteuid() &&
        (::stat(dir.c_str(), &st) != 0 || st.st_uid != peer.uid)) {
      return Status(ErrorCode::kPermissionDenied,
                    fmt::format("{}: directory {} is not owned by uid {}", what, dir, peer.uid));
    }
    auto fd = persistent_.open(dir, /*record=*/true);
    if (!fd.ok()) return fd.status().with_context(what);
    stream->dir_fd = (*fd)->get();
    stream->dir_holder = *fd;
    stream->directory = dir;
  }
  kj::AutoCloseFd fd(openat(stream->dir_fd, stream->file_name.c_str(),
                            O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() < 0) return from_errno(errno, what + ": creating segment");
  if (Status s = give_to_owner(fd.get(), *stream, file_mode(create.mode), what); !s.ok()) {
    unlinkat(stream->dir_fd, stream->file_name.c_str(), 0);
    return s;
  }
  shm::SegmentParams params;
  params.name = name;
  params.max_data_size = max_bytes;
  params.ring_capacity = create.ring_capacity;
  params.block_when_full = create.block_when_full;
  params.records = create.records;
  params.stream_id = stream->id;
  params.producer_pid = static_cast<uint32_t>(peer.pid);
  params.producer_uid = static_cast<uint32_t>(peer.uid);
  params.origin_offset = create.origin;
  params.resume_grace_ms = create.resume_grace_ms;
  Status s = shm::format_segment(fd.get(), params);
  if (s.ok()) s = ensure_wait_page(*stream, /*reuse=*/false, max_readers);
  Result<shm::Segment> segment = s.ok() ? shm::Segment::map(fd.get(), shm::Access::kReadWrite,
                                                            shm::MapExtent::kHeaderOnly, what)
                                        : Result<shm::Segment>(s);
  if (!segment.ok()) {
    unlink_files(*stream);
    return segment.status();
  }
  stream->segment = std::move(segment).value();
  stream->producer_attached = true;
  stream->producer_epoch = 1;
  // A persistent stream's new directory entries reach the disk now (its data on close).
  if (!stream->directory.empty()) fsync(stream->dir_fd);
  live_.emplace(name, stream);
  spdlog::info("stream \"{}\": created by pid {} uid {} (segment {})", name, peer.pid, peer.uid,
               stream->file_name);
  return ProducerAccess{std::move(stream), kj::mv(fd)};
}

Result<ReaderAccess> Registry::open(const std::string& name, const std::string& cursor,
                                    const Peer& peer) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  if (!cursor.empty()) {
    if (Status s = shm::validate_cursor_name(cursor); !s.ok()) return s;
  }
  auto found = find_live(name);
  if (!found.ok()) return found.status();
  const auto& stream = *found;
  if (Status s = may_read(name, stream->owner, peer, geteuid()); !s.ok()) return s;
  Cursor* held = nullptr;
  if (!cursor.empty()) {
    if (auto c = stream->cursors.find(cursor); c != stream->cursors.end()) {
      held = &c->second;
      // Kept since adoption for this very process, which now opens it anew: its own.
      if (auto o = stream->orphans.find(held->slot);
          o != stream->orphans.end() && o->second == peer.pid) {
        stream->orphans.erase(o);
        held->reader_pid = 0;
      }
      if (Status s = may_use_cursor(name, cursor, held->uid, stream->owner, peer, geteuid(),
                                    /*removing=*/false);
          !s.ok()) {
        return s;
      }
      if (Status s = unless_held(name, cursor, *held); !s.ok()) return s;
    }
  }
  if (held == nullptr) {
    if (Status s = may_take_slot(name, stream->owner, peer, geteuid(),
                                 stream->slots_held_by(peer.uid), stream->wait.max_readers());
        !s.ok()) {
      return s;
    }
  }
  // A fresh read-only open: the reader cannot gain write access through it, even by mprotect.
  kj::AutoCloseFd fd(
      openat(stream->dir_fd, stream->file_name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return from_errno(errno, fmt::format("stream \"{}\": opening", name));
  // A new reader starts at the oldest offset still available (it may seek anywhere later).
  uint64_t oldest = shm::load_oldest(stream->segment.header());
  auto pid = static_cast<uint32_t>(peer.pid);
  ReaderGrant out_grant;
  if (held != nullptr) {
    held->reader_pid = peer.pid;
    ++held->generation;
    shm::hold_cursor(stream->wait, held->slot, pid);
    out_grant = ReaderGrant{held->slot, cursor, held->generation};
  } else {
    auto slot = shm::claim_reader_slot(stream->wait, oldest, pid, peer.uid, cursor);
    if (!slot.ok()) {
      return slot.status().with_context(fmt::format("stream \"{}\": too many readers", name));
    }
    out_grant = ReaderGrant{*slot, cursor, cursor.empty() ? 0u : 1u};
    stream->slot_users[*slot] = peer.uid;
    if (!cursor.empty()) {
      stream->cursors[cursor] = Cursor{*slot, peer.pid, 1, peer.uid};
      spdlog::info("stream \"{}\": cursor \"{}\" created at {}", name, cursor, oldest);
    }
  }
  ++stream->readers;
  return ReaderAccess{stream, kj::mv(fd), std::move(out_grant)};
}

Status Registry::remove_cursor(const std::string& name, const std::string& cursor,
                               const Peer& peer) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  if (Status s = shm::validate_cursor_name(cursor); !s.ok()) return s;
  auto found = find_live(name);
  if (!found.ok()) return found.status();
  Stream& stream = **found;
  if (Status s = may_read(name, stream.owner, peer, geteuid()); !s.ok()) return s;
  auto c = stream.cursors.find(cursor);
  if (c == stream.cursors.end()) {
    return Status(ErrorCode::kNotFound,
                  fmt::format("stream \"{}\": no cursor \"{}\"", name, cursor));
  }
  if (Status s = may_use_cursor(name, cursor, c->second.uid, stream.owner, peer, geteuid(),
                                /*removing=*/true);
      !s.ok()) {
    return s;
  }
  if (Status s = unless_held(name, cursor, c->second); !s.ok()) return s;
  // A reader that died unseen still counts until its capability goes; its slot is free now.
  shm::release_reader_slot(stream.wait, c->second.slot);
  stream.slot_users.erase(c->second.slot);
  stream.cursors.erase(c);
  spdlog::info("stream \"{}\": cursor \"{}\" removed", name, cursor);
  return Status();
}

Status Registry::remove(const std::string& name, bool force, const Peer& peer) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  auto found = find_live(name);
  if (!found.ok()) return found.status();
  std::shared_ptr<Stream> stream = *found;
  if (Status s = may_own(name, stream->owner, peer, geteuid(), "remove"); !s.ok()) return s;
  live_.erase(name);
  if (force) shm::end_stream(stream->segment.mutable_header(), shm::StreamState::kCancelled);
  // Unlinked now: nobody can open it any more; mappings held keep the memory until released.
  unlink_files(*stream);
  stream->removed = true;
  spdlog::info("stream \"{}\": removed{} ({} readers, producer {})", name, force ? " by force" : "",
               stream->readers, stream->producer_attached ? "attached" : "gone");
  removing_.insert(stream);
  release_if_unheld(stream);
  return Status();
}

Result<std::shared_ptr<Stream>> Registry::find_live(const std::string& name) const {
  auto it = live_.find(name);
  if (it == live_.end()) {
    return Status(ErrorCode::kNotFound, fmt::format("stream \"{}\": no such stream", name));
  }
  return it->second;
}

Result<std::shared_ptr<Stream>> Registry::find_reattachable(const std::string& name,
                                                            uint64_t stream_id) const {
  auto it = live_.find(name);
  if (it == live_.end() || it->second->id != stream_id) {
    return Status(ErrorCode::kNotFound,
                  fmt::format("stream \"{}\": gone (removed while the daemon restarted)", name));
  }
  return it->second;
}

Result<std::shared_ptr<Stream>> Registry::reattach_producer(const std::string& name,
                                                            uint64_t stream_id, const Peer& peer) {
  auto found = find_reattachable(name, stream_id);
  if (!found.ok()) return found.status();
  const auto& stream = *found;
  if (stream->producer_attached || stream->awaiting_producer ||
      shm::producer_pid_now(stream->segment.header()) != static_cast<uint32_t>(peer.pid)) {
    return Status(
        ErrorCode::kPermissionDenied,
        fmt::format("stream \"{}\": pid {} is not its unattached producer", name, peer.pid));
  }
  stream->producer_attached = true;
  ++stream->producer_epoch;
  spdlog::info("stream \"{}\": producer pid {} reattached", name, peer.pid);
  return stream;
}

Result<ReaderAccess> Registry::reattach_reader(const std::string& name, uint64_t stream_id,
                                               uint32_t slot, const Peer& peer) {
  auto found = find_reattachable(name, stream_id);
  if (!found.ok()) return found.status();
  const auto& stream = *found;
  auto orphan = stream->orphans.find(slot);
  if (orphan == stream->orphans.end() || orphan->second != peer.pid) {
    return Status(
        ErrorCode::kPermissionDenied,
        fmt::format("stream \"{}\": reader slot {} is not kept for pid {}", name, slot, peer.pid));
  }
  stream->orphans.erase(orphan);
  ReaderGrant out_grant{slot, "", 0};
  for (auto& [cursor_name, cursor] : stream->cursors) {
    if (cursor.slot == slot) out_grant = ReaderGrant{slot, cursor_name, ++cursor.generation};
  }
  ++stream->readers;
  spdlog::info("stream \"{}\": reader pid {} reattached (slot {})", name, peer.pid, slot);
  return ReaderAccess{stream, kj::AutoCloseFd(), std::move(out_grant)};
}

bool Registry::forget_orphan(Stream& stream, uint32_t slot, pid_t pid) {
  auto orphan = stream.orphans.find(slot);
  if (orphan == stream.orphans.end() || orphan->second != pid) return false;  // reattached
  stream.orphans.erase(orphan);
  Cursor* cursor = nullptr;
  for (auto& [name, c] : stream.cursors) {
    if (c.slot == slot) cursor = &c;
  }
  let_go(stream, slot, cursor);
  return true;
}

void Registry::orphan_reader_exited(const std::shared_ptr<Stream>& stream, uint32_t slot,
                                    pid_t pid) {
  if (forget_orphan(*stream, slot, pid)) {
    spdlog::info("stream \"{}\": reader pid {} exited before reattaching; slot {} let go",
                 stream->name, pid, slot);
  }
}

void Registry::expire_orphans() {
  for (const auto& orphan : orphan_readers()) {
    if (forget_orphan(*orphan.stream, orphan.slot, orphan.pid)) {
      spdlog::info("stream \"{}\": reader pid {} did not reattach in time; slot {} let go",
                   orphan.stream->name, orphan.pid, orphan.slot);
    }
  }
}

std::vector<Registry::Orphan> Registry::orphan_readers() const {
  std::vector<Orphan> out;
  for (const auto& [name, stream] : live_) {
    for (const auto& [slot, pid] : stream->orphans) out.push_back(Orphan{stream, slot, pid});
  }
  return out;
}

Result<ProducerAccess> Registry::resume(const std::string& name, const Peer& peer) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  auto found = find_live(name);
  if (!found.ok()) return found.status();
  const std::shared_ptr<Stream>& stream = *found;
  if (Status s = may_own(name, stream->owner, peer, geteuid(), "resume"); !s.ok()) return s;
  shm::SegmentHeader& h = stream->segment.mutable_header();
  if (shm::StreamState state = shm::load_state(h); state != shm::StreamState::kOpen) {
    return Status(ErrorCode::kStreamClosed, fmt::format("stream \"{}\": cannot resume it, it is {}",
                                                        name, shm::state_name(state)));
  }
  if (stream->resume_grace_ms() == 0) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream \"{}\": cannot resume it, it was created without a resume "
                              "grace",
                              name));
  }
  if (!stream->awaiting_producer) {
    return Status(ErrorCode::kBusy,
                  fmt::format("stream \"{}\": its producer (pid {}) is still running", name,
                              shm::producer_pid_now(h)));
  }
  kj::AutoCloseFd fd(
      openat(stream->dir_fd, stream->file_name.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return from_errno(errno, fmt::format("stream \"{}\": reopening", name));
  uint32_t predecessor = shm::producer_pid_now(h);
  shm::store_resumed_pid(h, static_cast<uint32_t>(peer.pid));
  stream->awaiting_producer = false;
  stream->producer_attached = true;
  ++stream->producer_epoch;
  spdlog::info("stream \"{}\": resumed by pid {} at offset {} (producer pid {} had died)", name,
               peer.pid, shm::load_committed(h), predecessor);
  return ProducerAccess{stream, kj::mv(fd)};
}

void Registry::producer_detached(const std::shared_ptr<Stream>& stream, bool closed_cleanly,
                                 uint64_t epoch) {
  if (epoch != stream->producer_epoch) return;  // a predecessor's: a successor holds it now
  stream->producer_attached = false;
  if (!closed_cleanly) flush(*stream);
  if (!closed_cleanly && !shutting_down_ && stream->resume_grace_ms() == 0 &&
      shm::end_stream(stream->segment.mutable_header(), shm::StreamState::kAborted)) {
    spdlog::warn("stream \"{}\": producer pid {} went away without closing; aborted", stream->name,
                 shm::producer_pid_now(stream->segment.header()));
  }
  release_if_unheld(stream);
}

bool Registry::producer_exited(const std::shared_ptr<Stream>& stream, pid_t pid) {
  shm::SegmentHeader& h = stream->segment.mutable_header();
  if (shm::producer_pid_now(h) != static_cast<uint32_t>(pid) || stream->awaiting_producer) {
    return false;  // a predecessor's exit, or already seen
  }
  if (stream->resume_grace_ms() != 0 && shm::load_state(h) == shm::StreamState::kOpen) {
    // Its capability is gone with it (if the socket's end is not handled yet, it will be:
    // producer_detached() then sees a new epoch only if a successor came first).
    stream->producer_attached = false;
    stream->awaiting_producer = true;
    spdlog::warn(
        "stream \"{}\": producer pid {} exited without closing; open {} ms for a "
        "successor",
        stream->name, pid, stream->resume_grace_ms());
    return true;
  }
  if (shm::end_stream(h, shm::StreamState::kAborted)) {
    spdlog::warn("stream \"{}\": producer pid {} exited without closing; aborted", stream->name,
                 pid);
  }
  return false;
}

void Registry::successor_overdue(const std::shared_ptr<Stream>& stream, uint64_t epoch) {
  if (!stream->awaiting_producer || stream->producer_epoch != epoch) return;  // resumed
  stream->awaiting_producer = false;
  if (shm::end_stream(stream->segment.mutable_header(), shm::StreamState::kAborted)) {
    spdlog::warn("stream \"{}\": no successor resumed it within {} ms; aborted", stream->name,
                 stream->resume_grace_ms());
  }
  release_if_unheld(stream);
}

std::vector<std::shared_ptr<Stream>> Registry::awaiting_streams() const {
  std::vector<std::shared_ptr<Stream>> out;
  for (const auto& [name, stream] : live_) {
    if (stream->awaiting_producer) out.push_back(stream);
  }
  return out;
}

std::vector<std::shared_ptr<Stream>> Registry::unattached_open_streams() const {
  std::vector<std::shared_ptr<Stream>> out;
  for (const auto& [name, stream] : live_) {
    if (!stream->producer_attached && !stream->awaiting_producer &&
        shm::load_state(stream->segment.header()) == shm::StreamState::kOpen) {
      out.push_back(stream);
    }
  }
  return out;
}

void Registry::let_go(Stream& stream, uint32_t slot, Cursor* cursor) {
  if (cursor != nullptr) {
    cursor->reader_pid = 0;
    if (stream.wait.valid()) shm::hold_cursor(stream.wait, slot, 0);
  } else if (stream.wait.valid()) {
    shm::release_reader_slot(stream.wait, slot);
    stream.slot_users.erase(slot);
  }
}

void Registry::reader_detached(const std::shared_ptr<Stream>& stream, const ReaderGrant& grant) {
  if (!grant.cursor.empty()) {
    auto c = stream->cursors.find(grant.cursor);
    // The cursor stays; only the reader that holds it now lets go of it.
    if (c != stream->cursors.end() && c->second.generation == grant.generation) {
      let_go(*stream, c->second.slot, &c->second);
    }
  } else {
    let_go(*stream, grant.slot, nullptr);
  }
  if (stream->readers > 0) --stream->readers;
  release_if_unheld(stream);
}

void Registry::flush(const Stream& stream) const {
  if (stream.directory.empty()) return;
  // Starts writeback of both files now, without waiting for it (a multi-GiB stream's fsync
  // would stall the event loop): the disk has them seconds later, not at this instant.
  for (const std::string& file : {stream.file_name, stream.wait_file_name()}) {
    kj::AutoCloseFd fd(openat(stream.dir_fd, file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() >= 0 && sync_file_range(fd.get(), 0, 0, SYNC_FILE_RANGE_WRITE) != 0) {
      spdlog::warn("stream \"{}\": writing {} back: {}", stream.name, file, std::strerror(errno));
    }
  }
}

void Registry::release_if_unheld(const std::shared_ptr<Stream>& stream) {
  if (stream->removed && stream->readers == 0 && !stream->producer_attached) {
    if (removing_.erase(stream) != 0) {
      spdlog::info("stream \"{}\": released (segment {})", stream->name, stream->file_name);
    }
  }
}

std::string damage_of(const Stream& stream) {
  if (stream.segment.faulted()) return "its segment file shrank under the daemon's mapping";
  if (stream.wait.faulted()) return "its wait file shrank under the daemon's mapping";
  // Sizes by fstat first: the header is read through the mapping only once it is there.
  struct stat st {};
  if (fstat(stream.segment.fd(), &st) != 0) return {};
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < shm::kHeaderSize) {
    return fmt::format("its segment file is {} bytes, shorter than the {}-byte header", size,
                       shm::kHeaderSize);
  }
  const uint64_t ring = stream.segment.ring_capacity();
  const uint64_t needed = ring != 0 ? ring
                                    : std::min(shm::load_committed(stream.segment.header()),
                                               stream.segment.max_data_size());
  if (size - shm::kHeaderSize < needed) {
    return fmt::format("its segment file holds {} bytes of data, fewer than {} ({})",
                       size - shm::kHeaderSize, needed, ring != 0 ? "its ring" : "committed");
  }
  if (stream.wait.valid() && stream.wait_fd && fstat(stream.wait_fd->get(), &st) == 0 &&
      static_cast<uint64_t>(st.st_size) < shm::wait_file_size(stream.wait.max_readers())) {
    return fmt::format("its wait file is {} bytes, shorter than its {} reader slots need",
                       st.st_size, stream.wait.max_readers());
  }
  return {};
}

StreamSnapshot Registry::snapshot(const Stream& stream) const {
  const shm::SegmentHeader& h = stream.segment.header();
  StreamSnapshot s;
  s.name = stream.name;
  s.state = shm::load_state(h);
  s.removing = stream.removed;
  s.bytes = shm::load_committed(h);
  s.readers = stream.readers;
  s.producer_pid = shm::producer_pid_now(h);
  s.producer_uid = stream.owner.uid;
  s.max_bytes = stream.segment.max_data_size();
  s.created_unix_ns = h.created_unix_ns;
  s.stream_id = h.stream_id;
  s.ring_capacity = stream.segment.ring_capacity();
  s.block_when_full = stream.segment.block_when_full();
  s.records = stream.segment.records();
  s.oldest = shm::load_oldest(h);
  s.max_readers = stream.wait.valid() ? stream.wait.max_readers() : 0;
  s.slowest_reader = s.bytes;
  if (stream.wait.valid()) {
    for (const shm::SlotInfo& slot : shm::slots_in_use(stream.wait)) {
      s.slowest_reader = std::min(s.slowest_reader, slot.position);
      if (!slot.cursor) s.attached.push_back(ReaderSnapshot{slot.pid, slot.position, ""});
    }
    for (const auto& [name, cursor] : stream.cursors) {
      uint64_t position = shm::cursor_committed(stream.wait.slot(cursor.slot)).position;
      s.cursors.push_back(CursorSnapshot{name, position, static_cast<uint32_t>(cursor.reader_pid)});
      if (cursor.reader_pid != 0) {
        s.attached.push_back(
            ReaderSnapshot{static_cast<uint32_t>(cursor.reader_pid), position, name});
      }
    }
  }
  s.directory = stream.directory;
  s.owner_gid = stream.owner.gid;
  s.mode = stream.owner.mode;
  s.origin = h.origin_offset;
  s.resume_grace_ms = stream.resume_grace_ms();
  s.awaiting_producer = stream.awaiting_producer;
  s.damage = damage_of(stream);
  if (!s.damage.empty() && !stream.damage_reported) {
    stream.damage_reported = true;
    spdlog::warn("stream \"{}\": damaged: {}", stream.name, s.damage);
  }
  return s;
}

std::vector<StreamSnapshot> Registry::list() const {
  std::vector<StreamSnapshot> out;
  out.reserve(live_.size() + removing_.size());
  for (const auto& [name, stream] : live_) out.push_back(snapshot(*stream));
  for (const auto& stream : removing_) out.push_back(snapshot(*stream));
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

Result<StreamSnapshot> Registry::stat(const std::string& name) const {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  auto found = find_live(name);
  if (!found.ok()) return found.status();
  return snapshot(**found);
}

}  // namespace shmstream::daemon
