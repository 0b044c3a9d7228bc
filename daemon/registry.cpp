#include "daemon/registry.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "shm/naming.hpp"

namespace shmstream::daemon {
namespace {

Status errno_status(int err, const std::string& what) {
  ErrorCode code = ErrorCode::kIo;
  if (err == ENOSPC || err == ENOMEM) code = ErrorCode::kNoSpace;
  if (err == EACCES || err == EPERM) code = ErrorCode::kPermissionDenied;
  return Status(code, fmt::format("{}: {}", what, std::strerror(err)));
}

uint64_t random_id() {
  static std::mt19937_64 rng{std::random_device{}()};
  uint64_t id = 0;
  while (id == 0) id = rng();
  return id;
}

bool process_alive(pid_t pid) { return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM); }

}  // namespace

OwnedFd& OwnedFd::operator=(OwnedFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

OwnedFd::~OwnedFd() {
  if (fd_ >= 0) ::close(fd_);
}

Registry::Registry(RegistryConfig config) : config_(std::move(config)) {
  dir_fd_ = ::open(config_.segment_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) {
    throw std::runtime_error(
        fmt::format("segment directory {}: {}", config_.segment_dir, std::strerror(errno)));
  }
  adopt_existing_segments();
}

Registry::~Registry() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

// Segments left by an earlier daemon on the same socket come back into the table, so that
// committed data stays readable; a corrupt or foreign file with our prefix is unlinked.
void Registry::adopt_existing_segments() {
  int scan_fd = fcntl(dir_fd_, F_DUPFD_CLOEXEC, 0);
  DIR* dir = fdopendir(scan_fd);
  if (dir == nullptr) return;
  std::string prefix = shm::segment_file_prefix(config_.instance);
  std::vector<std::string> wait_files;
  while (dirent* entry = readdir(dir)) {
    std::string file = entry->d_name;
    if (file.rfind(prefix, 0) != 0) continue;
    if (file.size() > 2 && file.compare(file.size() - 2, 2, ".w") == 0) {
      wait_files.push_back(file);  // handled with its segment, below
      continue;
    }
    OwnedFd fd(openat(dir_fd_, file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) continue;
    auto segment =
        shm::Segment::map(fd.get(), shm::Access::kReadWrite, shm::MapExtent::kHeaderOnly, file);
    if (!segment.ok()) {
      spdlog::warn("unlinking unusable segment {}: {}", file, segment.status().message());
      unlinkat(dir_fd_, file.c_str(), 0);
      continue;
    }
    auto stream = std::make_shared<Stream>();
    stream->name = segment->name();
    stream->id = segment->header().stream_id;
    stream->file_name = file;
    stream->header = std::move(segment.value());
    if (live_.count(stream->name) != 0 ||
        file != shm::segment_file_name(config_.instance, stream->id)) {
      spdlog::warn("unlinking duplicate or misnamed segment {} (stream \"{}\")", file,
                   stream->name);
      unlinkat(dir_fd_, file.c_str(), 0);
      continue;
    }
    if (Status s = ensure_wait_page(*stream, /*reuse=*/true, config_.default_max_readers);
        !s.ok()) {
      spdlog::warn("stream \"{}\": {}; unlinking it", stream->name, s.message());
      unlink_files(*stream);
      continue;
    }
    shm::SegmentHeader& h = stream->header.mutable_header();
    if (shm::load_state(h) == shm::StreamState::kOpen && !process_alive(h.producer_pid)) {
      shm::end_stream(h, shm::StreamState::kAborted);
      spdlog::info("stream \"{}\": producer pid {} died while no daemon ran; aborted", stream->name,
                   h.producer_pid);
    }
    spdlog::info("stream \"{}\": adopted ({} bytes, {})", stream->name,
                 h.committed_length.load(std::memory_order_acquire),
                 shm::state_name(shm::load_state(h)));
    live_.emplace(stream->name, std::move(stream));
  }
  closedir(dir);
  for (const auto& file : wait_files) {
    std::string segment = file.substr(0, file.size() - 2);
    bool used = false;
    for (const auto& [name, stream] : live_) used = used || stream->file_name == segment;
    if (!used) {
      spdlog::warn("unlinking orphan wait page {}", file);
      unlinkat(dir_fd_, file.c_str(), 0);
    }
  }
}

Status Registry::ensure_wait_page(Stream& stream, bool reuse, uint32_t max_readers) {
  std::string file = stream.wait_file_name();
  std::string what = fmt::format("stream \"{}\"", stream.name);
  if (reuse) {
    OwnedFd fd(openat(dir_fd_, file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    auto wait = fd.get() >= 0 ? shm::WaitPageMap::map(fd.get(), stream.id, what)
                              : Result<shm::WaitPageMap>(Status(ErrorCode::kNotFound, "missing"));
    if (wait.ok()) {
      // The readers of an earlier daemon are not ours to track: their slots are freed.
      for (uint32_t i = 0; i < wait->max_readers(); ++i) shm::release_reader_slot(*wait, i);
      stream.wait = std::move(wait.value());
      return Status();
    }
    // Missing or unusable: a fresh one (a live producer keeps waking through its old mapping
    // only what it can reach; readers opening from now on use the new file).
    unlinkat(dir_fd_, file.c_str(), 0);
  }
  OwnedFd fd(
      openat(dir_fd_, file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() < 0) return errno_status(errno, what + ": creating the wait file");
  if (Status s = shm::format_wait_page(fd.get(), stream.id, max_readers); !s.ok()) {
    return Status(s.code(), fmt::format("{}: {}", what, s.message()));
  }
  auto wait = shm::WaitPageMap::map(fd.get(), stream.id, what);
  if (!wait.ok()) return wait.status();
  stream.wait = std::move(wait.value());
  return Status();
}

void Registry::unlink_files(const Stream& stream) {
  for (const std::string& file : {stream.file_name, stream.wait_file_name()}) {
    if (unlinkat(dir_fd_, file.c_str(), 0) != 0 && errno != ENOENT) {
      spdlog::warn("stream \"{}\": unlinking {}: {}", stream.name, file, std::strerror(errno));
    }
  }
}

Status Registry::create(const std::string& name, const CreateParams& create, const Peer& peer,
                        std::shared_ptr<Stream>* out, OwnedFd* out_fd) {
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
  if (max_bytes > shm::kMaxDataSizeLimit) {
    return Status(ErrorCode::kInvalidArgument,
                  fmt::format("stream \"{}\": maximum size {} exceeds the limit {}", name,
                              max_bytes, shm::kMaxDataSizeLimit));
  }
  auto stream = std::make_shared<Stream>();
  stream->name = name;
  stream->id = random_id();
  stream->file_name = shm::segment_file_name(config_.instance, stream->id);
  std::string what = fmt::format("stream \"{}\"", name);
  OwnedFd fd(openat(dir_fd_, stream->file_name.c_str(),
                    O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() < 0) return errno_status(errno, what + ": creating segment");
  shm::SegmentParams params;
  params.name = name;
  params.max_data_size = max_bytes;
  params.ring_capacity = create.ring_capacity;
  params.block_when_full = create.block_when_full;
  params.records = create.records;
  params.stream_id = stream->id;
  params.producer_pid = static_cast<uint32_t>(peer.pid);
  params.producer_uid = static_cast<uint32_t>(peer.uid);
  Status s = shm::format_segment(fd.get(), params);
  if (s.ok()) s = ensure_wait_page(*stream, /*reuse=*/false, max_readers);
  Result<shm::Segment> segment = s.ok() ? shm::Segment::map(fd.get(), shm::Access::kReadWrite,
                                                            shm::MapExtent::kHeaderOnly, what)
                                        : Result<shm::Segment>(s);
  if (!segment.ok()) {
    unlink_files(*stream);
    return segment.status();
  }
  stream->header = std::move(segment.value());
  stream->producer_attached = true;
  live_.emplace(name, stream);
  spdlog::info("stream \"{}\": created by pid {} uid {} (segment {})", name, peer.pid, peer.uid,
               stream->file_name);
  *out = std::move(stream);
  *out_fd = std::move(fd);
  return Status();
}

Status Registry::open(const std::string& name, const Peer& peer, std::shared_ptr<Stream>* out,
                      OwnedFd* out_fd, uint32_t* out_slot) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  auto it = live_.find(name);
  if (it == live_.end()) {
    return Status(ErrorCode::kNotFound, fmt::format("stream \"{}\": no such stream", name));
  }
  const auto& stream = it->second;
  // A fresh read-only open: the reader cannot gain write access through it, even by mprotect.
  OwnedFd fd(openat(dir_fd_, stream->file_name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return errno_status(errno, fmt::format("stream \"{}\": opening", name));
  // The reader starts at the oldest offset still available (it may seek anywhere later).
  auto slot = shm::claim_reader_slot(
      stream->wait, stream->header.header().oldest_offset.load(std::memory_order_acquire),
      static_cast<uint32_t>(peer.pid));  // acquire: pairs with make_room()'s release store
  if (!slot.ok()) {
    return Status(slot.status().code(), fmt::format("stream \"{}\": too many readers: {}", name,
                                                    slot.status().message()));
  }
  ++stream->readers;
  *out_slot = *slot;
  *out = stream;
  *out_fd = std::move(fd);
  return Status();
}

Status Registry::remove(const std::string& name, bool force) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  auto it = live_.find(name);
  if (it == live_.end()) {
    return Status(ErrorCode::kNotFound, fmt::format("stream \"{}\": no such stream", name));
  }
  std::shared_ptr<Stream> stream = it->second;
  live_.erase(it);
  if (force) shm::end_stream(stream->header.mutable_header(), shm::StreamState::kCancelled);
  // Unlinked now: nobody can open it any more; mappings held keep the memory until released.
  unlink_files(*stream);
  stream->removed = true;
  spdlog::info("stream \"{}\": removed{} ({} readers, producer {})", name, force ? " by force" : "",
               stream->readers, stream->producer_attached ? "attached" : "gone");
  removing_.insert(stream);
  release_if_unheld(stream);
  return Status();
}

void Registry::producer_detached(const std::shared_ptr<Stream>& stream, bool closed_cleanly) {
  stream->producer_attached = false;
  if (!closed_cleanly && !shutting_down_ &&
      shm::end_stream(stream->header.mutable_header(), shm::StreamState::kAborted)) {
    spdlog::warn("stream \"{}\": producer pid {} went away without closing; aborted", stream->name,
                 stream->header.header().producer_pid);
  }
  release_if_unheld(stream);
}

void Registry::producer_exited(const std::shared_ptr<Stream>& stream) {
  if (shm::end_stream(stream->header.mutable_header(), shm::StreamState::kAborted)) {
    spdlog::warn("stream \"{}\": producer pid {} exited without closing; aborted", stream->name,
                 stream->header.header().producer_pid);
  }
}

std::vector<std::shared_ptr<Stream>> Registry::unattached_open_streams() const {
  std::vector<std::shared_ptr<Stream>> out;
  for (const auto& [name, stream] : live_) {
    if (!stream->producer_attached &&
        shm::load_state(stream->header.header()) == shm::StreamState::kOpen) {
      out.push_back(stream);
    }
  }
  return out;
}

void Registry::reader_detached(const std::shared_ptr<Stream>& stream, uint32_t slot) {
  if (stream->wait.valid()) shm::release_reader_slot(stream->wait, slot);
  if (stream->readers > 0) --stream->readers;
  release_if_unheld(stream);
}

void Registry::release_if_unheld(const std::shared_ptr<Stream>& stream) {
  if (stream->removed && stream->readers == 0 && !stream->producer_attached) {
    if (removing_.erase(stream) != 0) {
      spdlog::info("stream \"{}\": released (segment {})", stream->name, stream->file_name);
    }
  }
}

StreamSnapshot Registry::snapshot(const Stream& stream) const {
  const shm::SegmentHeader& h = stream.header.header();
  StreamSnapshot s;
  s.name = stream.name;
  s.state = shm::load_state(h);
  s.removing = stream.removed;
  // Acquire: pairs with the producer's release store in commit().
  s.bytes = h.committed_length.load(std::memory_order_acquire);
  s.readers = stream.readers;
  s.producer_pid = h.producer_pid;
  s.producer_uid = h.producer_uid;
  s.max_bytes = h.max_data_size;
  s.created_unix_ns = h.created_unix_ns;
  s.stream_id = h.stream_id;
  s.ring_capacity = h.ring_capacity;
  s.block_when_full = (h.flags & shm::kFlagBlockWhenFull) != 0;
  s.records = (h.flags & shm::kFlagRecords) != 0;
  // Acquire: pairs with make_room()'s release store.
  s.oldest = h.oldest_offset.load(std::memory_order_acquire);
  s.max_readers = stream.wait.valid() ? stream.wait.max_readers() : 0;
  s.slowest_reader = s.bytes;
  if (stream.wait.valid()) {
    for (uint32_t i = 0; i < s.max_readers; ++i) {
      const shm::ReaderSlot& slot = stream.wait.slot(i);
      // Acquire: pairs with claim_reader_slot()'s release store; position: display only.
      if (slot.in_use.load(std::memory_order_acquire) == 0) continue;
      s.slowest_reader = std::min(s.slowest_reader, slot.position.load(std::memory_order_relaxed));
    }
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

Status Registry::stat(const std::string& name, StreamSnapshot* out) const {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  auto it = live_.find(name);
  if (it == live_.end()) {
    return Status(ErrorCode::kNotFound, fmt::format("stream \"{}\": no such stream", name));
  }
  *out = snapshot(*it->second);
  return Status();
}

}  // namespace shmstream::daemon
