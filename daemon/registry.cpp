#include "daemon/registry.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include "shm/naming.hpp"
#include "shm/posix_error.hpp"

namespace shmstream::daemon {
namespace {

// What file `fd` takes on its file system (0 if it cannot say).
uint64_t allocated_bytes_of(int fd) {
  struct stat st {};
  if (fd < 0 || fstat(fd, &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

// What the stream's segment file takes on its file system (0 if it has none).
uint64_t allocated_bytes(const Stream& stream) {
  return stream.segment.valid() ? allocated_bytes_of(stream.segment.fd()) : 0;
}

// What all the stream's files take: segment, reader table and reader pages.
uint64_t files_allocated_bytes(const Stream& stream) {
  uint64_t total = allocated_bytes(stream);
  if (stream.table_fd) total += allocated_bytes_of(stream.table_fd->get());
  for (const auto& [slot, page] : stream.pages) total += allocated_bytes_of(page.fd.get());
  return total;
}

uint64_t monotonic_ns() {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1000000000 + static_cast<uint64_t>(now.tv_nsec);
}

// The reason of a stream whose producer died (or went away) without closing it.
AbortReason died(const shm::SegmentHeader& h) {
  return AbortReason{AbortKind::kProducerDied, static_cast<int32_t>(shm::producer_pid_now(h)), ""};
}

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

// A new open file description of the file behind `fd` (not of any name), with `flags`: a
// read-only one given to a producer or reader cannot write or truncate through it, and it
// shares no flock with the daemon's. -1 on failure.
int reopen(int fd, int flags) {
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  return ::open(path.c_str(), flags | O_CLOEXEC | O_NONBLOCK);
}

// A file that has its name only once it is whole: written (by `fill`) while unnamed
// (O_TMPFILE) and then linked under `file`, so that a daemon killed half-way leaves nothing for
// the next one to doubt and quarantine. Where the file system has no O_TMPFILE, the file is
// made under its name (O_EXCL) and removed again if `fill` fails. With `lock`, a shared flock is
// held from the start on the description returned (the segment's: what `shmstream gc` asks).
struct Made {
  kj::AutoCloseFd fd;  // null on failure
  Status status;
  bool name_taken = false;  // `file` exists already
};

// True if `fd` is the file `file` names in `dir_fd` (not following a symlink).
bool names_file(int dir_fd, const std::string& file, int fd) {
  struct stat by_fd {};
  struct stat by_name {};
  return fstat(fd, &by_fd) == 0 &&
         fstatat(dir_fd, file.c_str(), &by_name, AT_SYMLINK_NOFOLLOW) == 0 &&
         by_fd.st_ino == by_name.st_ino && by_fd.st_dev == by_name.st_dev;
}

// Whether two descriptors are of one file.
bool same_file(int a, int b) {
  struct stat sa {};
  struct stat sb {};
  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_ino == sb.st_ino &&
         sa.st_dev == sb.st_dev;
}

Made create_whole(int dir_fd, const std::string& file, mode_t mode, bool lock,
                  const std::function<Status(int)>& fill, const std::string& what) {
  Made made;
  kj::AutoCloseFd unnamed(openat(dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, mode));
  const int fd =
      unnamed.get() >= 0
          ? unnamed.get()
          : openat(dir_fd, file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (unnamed.get() < 0) made.fd = kj::AutoCloseFd(fd);
  if (fd < 0) {
    made.name_taken = errno == EEXIST;
    made.status = from_errno(errno, what);
    return made;
  }
  if (lock && flock(fd, LOCK_SH | LOCK_NB) != 0) {
    made.status = from_errno(errno, what + ": locking it");
  } else {
    made.status = fill(fd);
  }
  if (!made.status.ok()) {
    if (unnamed.get() < 0) unlinkat(dir_fd, file.c_str(), 0);
    made.fd = nullptr;
    return made;
  }
  if (unnamed.get() < 0) return made;
  // Linked, then reopened by its name: a descriptor of the unnamed file would show its path as
  // "/dev/shm/#<inode> (deleted)" for good (in /proc/<pid>/maps, and to the readers given a
  // reopening of it). The name must still be this file's when reopened (a swap is refused).
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (linkat(AT_FDCWD, path.c_str(), dir_fd, file.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    made.name_taken = errno == EEXIST;
    made.status = from_errno(errno, what + ": naming " + file);
    return made;
  }
  made.fd =
      kj::AutoCloseFd(openat(dir_fd, file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (made.fd.get() < 0) {
    made.status = from_errno(errno, what + ": reopening " + file);
  } else if (!same_file(fd, made.fd.get())) {  // what the name opened is the file we made
    made.status = Status(ErrorCode::kIo, what + ": " + file + " was replaced as it was named");
  } else if (lock && flock(made.fd.get(), LOCK_SH | LOCK_NB) != 0) {
    made.status = from_errno(errno, what + ": locking it");
  }
  if (!made.status.ok()) {
    // Named but unusable: the name goes again, if it still names this file.
    if (names_file(dir_fd, file, fd)) unlinkat(dir_fd, file.c_str(), 0);
    made.fd = nullptr;
  }
  return made;
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
    adopt_existing_segments(dir.fd->get(), dir.fd, dir.path);
  }
}

Registry::~Registry() = default;

Status Registry::give_to_owner(int fd, const Stream& stream, mode_t bits,
                               const std::string& what) const {
  // A root daemon keeps the files of in-memory streams itself, in the owner's group: systemd-
  // logind's RemoveIPC removes a user's files in /dev/shm when they log out, never root's, so it
  // never takes a stream the daemon serves. The producer reads reader pages through the group.
  const bool kept = geteuid() == 0 && stream.directory.empty();
  const uid_t uid = kept ? 0 : stream.owner.uid;
  if (kept && bits == 0400) bits = 0440;
  struct stat st {};
  if (fstat(fd, &st) != 0) return from_errno(errno, what);
  if ((st.st_uid != uid || st.st_gid != stream.owner.gid) &&
      fchown(fd, uid, stream.owner.gid) != 0) {
    int err = errno;
    return Status(
        ErrorCode::kPermissionDenied,
        fmt::format("{}: this daemon (uid {}) cannot give its files to uid {} gid {}: {}; "
                    "other users need the system-wide daemon (shmstreamd --system), "
                    "which runs as root",
                    what, geteuid(), uid, stream.owner.gid, std::strerror(err)));
  }
  // Explicit, whatever the daemon's umask.
  if (fchmod(fd, bits) != 0) return from_errno(errno, what + ": setting its mode");
  return Status();
}

Status Registry::ensure_reader_table(Stream& stream, bool reuse, uint32_t max_readers) {
  std::string file = stream.table_file_name();
  std::string what = fmt::format("stream \"{}\"", stream.name);
  if (reuse) {
    kj::AutoCloseFd fd(
        openat(stream.dir_fd, file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    // The daemon's own file: one of another user (planted in their directory) is not read.
    struct stat st {};
    auto table = fd.get() < 0 ? Result<shm::ReaderTable>(Status(ErrorCode::kNotFound, "missing"))
                 : fstat(fd.get(), &st) != 0 || st.st_uid != geteuid()
                     ? Result<shm::ReaderTable>(
                           Status(ErrorCode::kPermissionDenied, "not this daemon's file"))
                     : shm::ReaderTable::map(fd.get(), stream.id, shm::Access::kReadWrite, what);
    if (table.ok()) {
      stream.table = std::move(table).value();
      stream.table_fd = std::make_shared<kj::AutoCloseFd>(reopen(fd.get(), O_RDONLY));
      adopt_reader_slots(stream);
      return Status();
    }
    // Missing or unusable. A live producer keeps the table it mapped: readers given a new one
    // would be invisible to it (never woken, never waited for). Such a stream takes no new
    // readers; one whose production ended gets a fresh table.
    if (shm::load_state(stream.segment.header()) == shm::StreamState::kOpen) {
      stream.damage_note = fmt::format("its reader table is unusable ({}): no new readers",
                                       table.status().message());
      return Status();
    }
    if (fd.get() >= 0) {
      quarantine(stream.dir_fd, stream.directory, file, "table",
                 fmt::format("stream \"{}\": its reader table is unusable ({}); a new one is "
                             "made",
                             stream.name, table.status().message()));
    }
  }
  Made made = create_whole(
      stream.dir_fd, file, 0600, /*lock=*/false,
      [&](int fd) {
        // The daemon's own file (0600), whatever the daemon's umask: only the daemon writes it;
        // the producer gets a read-only descriptor (proto SideFile), readers nothing.
        if (fchmod(fd, 0600) != 0) return from_errno(errno, what + ": the reader table's mode");
        return shm::format_reader_table(fd, stream.id, max_readers).with_context(what);
      },
      what + ": creating the reader table");
  if (!made.status.ok()) return made.status;
  kj::AutoCloseFd fd = kj::mv(made.fd);
  auto table = shm::ReaderTable::map(fd.get(), stream.id, shm::Access::kReadWrite, what);
  if (!table.ok()) return table.status();
  stream.table = std::move(table).value();
  stream.table_fd = std::make_shared<kj::AutoCloseFd>(reopen(fd.get(), O_RDONLY));
  return Status();
}

void Registry::adopt_reader_slots(Stream& stream) {
  // The readers of an earlier daemon: those still alive (this boot) keep their slots and pages,
  // to reattach (the server watches their pids); the others' slots are freed. Named cursors
  // stay, committed where their page says, held by their reader if it lives.
  const bool this_boot = shm::created_this_boot(stream.segment.header());
  std::set<std::string, std::less<>> cursors;
  for (const shm::SlotInfo& slot : shm::slots_in_use(stream.table)) {
    auto pid = static_cast<pid_t>(slot.pid);
    bool live = pid != 0 && this_boot && process_alive(pid);
    kj::AutoCloseFd page;
    if (slot.page != 0) {
      page = kj::AutoCloseFd(openat(stream.dir_fd,
                                    shm::reader_page_file(stream.file_name, slot.page).c_str(),
                                    O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    }
    const bool cursor = slot.cursor && shm::validate_cursor_name(slot.name).ok() &&
                        cursors.insert(slot.name).second;
    if (cursor) {
      stream.cursors[slot.name] = Cursor{slot.index, live ? pid : 0, 0, slot.uid};
      stream.slot_users[slot.index] = slot.uid;
      if (live && page.get() >= 0) {
        stream.pages[slot.index] = Stream::PageFile{slot.page, kj::mv(page)};
        stream.orphans[slot.index] = pid;
      } else if (slot.page != 0) {
        // Its reader is gone: the cursor stays committed where its page says, unheld.
        shm::CursorPosition at{slot.hold, slot.token};
        if (page.get() >= 0) {
          auto state = shm::read_reader_page(page.get(), stream.id, slot.index, slot.page);
          if (state.ok()) at = state->committed;
        }
        stream.cursors[slot.name].reader_pid = 0;
        shm::set_slot_reader(stream.table, stream.segment.mutable_header(), slot.index, 0, 0,
                             at.position, at.token);
        unlink_page(stream, slot.page);
      }
    } else if (live && !slot.cursor && page.get() >= 0) {
      stream.slot_users[slot.index] = slot.uid;
      stream.pages[slot.index] = Stream::PageFile{slot.page, kj::mv(page)};
      stream.orphans[slot.index] = pid;
    } else {
      shm::release_slot(stream.table, stream.segment.mutable_header(), slot.index);
      if (slot.page != 0) unlink_page(stream, slot.page);
    }
  }
}

void Registry::unlink_page(const Stream& stream, uint64_t page) {
  std::string file = shm::reader_page_file(stream.file_name, page);
  if (unlinkat(stream.dir_fd, file.c_str(), 0) != 0 && errno != ENOENT) {
    spdlog::warn("stream \"{}\": unlinking {}: {}", stream.name, file, std::strerror(errno));
  }
}

Result<uint64_t> Registry::make_page(Stream& stream, uint32_t slot, uint64_t start,
                                     uint64_t token) {
  std::string what = fmt::format("stream \"{}\": a reader page", stream.name);
  for (int attempt = 0; attempt < 8; ++attempt) {
    uint64_t number = random_id() | 1;  // never 0 (no page)
    std::string file = shm::reader_page_file(stream.file_name, number);
    Made made = create_whole(
        stream.dir_fd, file, 0400, /*lock=*/false,
        [&](int fd) {
          // The owner's, read-only: its producer opens it by name (read-only); its reader
          // writes it through the descriptor it is given; nobody else can open it.
          Status s = give_to_owner(fd, stream, 0400, what);
          if (s.ok()) s = shm::format_reader_page(fd, stream.id, slot, number, start, token);
          return s;
        },
        what);
    if (made.name_taken) continue;
    if (!made.status.ok()) return made.status.with_context(what);
    stream.pages[slot] = Stream::PageFile{number, kj::mv(made.fd)};
    return number;
  }
  return Status(ErrorCode::kInternal, what + ": no free page name");
}

void Registry::unlink_files(const Stream& stream) {
  // The side files first, the segment last: a daemon killed half-way leaves a stream its
  // successor adopts (and removes again when asked), never side files of no stream.
  // Its reader pages: those it knows, and for an adopted stream any an earlier daemon left
  // ("<segment>.r<N>").
  for (const auto& [slot, page] : stream.pages) unlink_page(stream, page.number);
  const std::string prefix = stream.file_name + ".r";
  int dir = stream.stray_pages_possible ? fcntl(stream.dir_fd, F_DUPFD_CLOEXEC, 0) : -1;
  if (DIR* listing = dir >= 0 ? fdopendir(dir) : nullptr) {
    rewinddir(listing);  // a dup shares the directory's offset, left at its end by earlier scans
    while (dirent* entry = readdir(listing)) {
      std::string file = entry->d_name;
      if (file.rfind(prefix, 0) == 0) unlinkat(stream.dir_fd, file.c_str(), 0);
    }
    closedir(listing);
  } else if (dir >= 0) {
    ::close(dir);
  }
  for (const std::string& file : {stream.table_file_name(), stream.file_name}) {
    if (unlinkat(stream.dir_fd, file.c_str(), 0) != 0 && errno != ENOENT) {
      spdlog::warn("stream \"{}\": unlinking {}: {}", stream.name, file, std::strerror(errno));
    }
  }
}

uint64_t Registry::memory_held_by(uid_t uid) const {
  uint64_t bytes = 0;
  each_stream([&](const std::shared_ptr<Stream>& stream) {
    if (stream->owner.uid == uid && stream->directory.empty()) bytes += allocated_bytes(*stream);
  });
  return bytes;
}

Registry::Holdings Registry::holdings() const {
  Holdings out;
  out.streams = live_.size();
  out.removing = removing_.size();
  each_stream([&](const std::shared_ptr<Stream>& stream) {
    (stream->directory.empty() ? out.memory_bytes : out.disk_bytes) += allocated_bytes(*stream);
  });
  return out;
}

Status Registry::may_take_memory(const std::string& name, const CreateParams& create, uid_t uid,
                                 uint64_t* max_bytes) const {
  // What the new stream takes at once: a ring all of its capacity, else its header.
  const uint64_t now = shm::kHeaderSize + shm::ring_capacity_for(create.ring_capacity);
  if (config_.max_bytes_per_user != 0) {
    const uint64_t held = memory_held_by(uid);
    if (held + now > config_.max_bytes_per_user) {
      return Status(ErrorCode::kLimitExceeded,
                    fmt::format("stream \"{}\": uid {} holds {} bytes of memory in streams; {} "
                                "more would pass its quota of {} (shmstreamd "
                                "--max-bytes-per-user)",
                                name, uid, held, now, config_.max_bytes_per_user));
    }
    // No one stream may grow past the whole quota (the daemon checks the sum as they grow).
    *max_bytes = std::min(*max_bytes, config_.max_bytes_per_user);
  }
  struct statvfs fs {};
  if (config_.reserve_bytes != 0 && fstatvfs(dir_fd_.get(), &fs) == 0) {
    const uint64_t free = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
    if (free < now + config_.reserve_bytes) {
      return Status(ErrorCode::kNoSpace,
                    fmt::format("stream \"{}\": {} has {} bytes free, and {} are kept in "
                                "reserve for everyone (shmstreamd --reserve-bytes)",
                                name, config_.segment_dir, free, config_.reserve_bytes));
    }
  }
  return Status();
}

size_t Registry::enforce_byte_quotas() {
  if (config_.max_bytes_per_user == 0) return 0;
  std::map<uid_t, uint64_t> held;
  // Removed streams too: their producers may still grow them (a removal must not lift a quota).
  each_stream([&](const std::shared_ptr<Stream>& stream) {
    uid_t uid = stream->owner.uid;
    if (memory_limited(uid) && stream->directory.empty() && held.count(uid) == 0) {
      held[uid] = memory_held_by(uid);
    }
  });
  size_t aborted = 0;
  for (const auto& [held_uid, held_bytes] : held) {
    // Copies: clang before 16 lets no lambda capture a structured binding.
    const uid_t uid = held_uid;
    const uint64_t bytes = held_bytes;
    if (bytes <= config_.max_bytes_per_user) continue;
    const AbortReason why{AbortKind::kQuota, 0,
                          fmt::format("uid {} holds {} bytes, its quota is {}", uid, bytes,
                                      config_.max_bytes_per_user)};
    each_stream([&](const std::shared_ptr<Stream>& stream) {
      shm::SegmentHeader& h = stream->segment.mutable_header();
      if (stream->owner.uid != uid || !stream->directory.empty() || h.ring_capacity != 0 ||
          !shm::abort_stream(h, why, shm::Claimant::kDaemon)) {
        return;
      }
      ++aborted;
      spdlog::warn(
          "stream \"{}\": aborted: uid {} holds {} bytes of memory in streams, past "
          "its quota of {} (shmstreamd --max-bytes-per-user)",
          stream->name, uid, bytes, config_.max_bytes_per_user);
    });
  }
  return aborted;
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
  // Streams removed but still held count too: their memory is still taken.
  const auto counted = streams_of_.find(peer.uid);
  if (const size_t total = counted != streams_of_.end() ? counted->second : 0;
      total >= config_.max_streams_per_user) {
    size_t held = 0;
    for (const auto& stream : removing_) held += stream->owner.uid == peer.uid ? 1 : 0;
    const size_t owned = total - held;
    return Status(
        ErrorCode::kLimitExceeded,
        fmt::format(
            "stream \"{}\": uid {} already has {} streams{}, the most this "
            "daemon allows (shmstreamd --max-streams-per-user)",
            name, peer.uid, owned + held,
            held == 0 ? std::string() : fmt::format(" ({} of them removed but still held)", held)));
  }
  const bool in_memory = !create.persistent && create.directory.empty();
  if (in_memory && memory_limited(peer.uid)) {
    if (Status s = may_take_memory(name, create, peer.uid, &max_bytes); !s.ok()) return s;
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
    if (create.directory.empty() && persistent_.own().empty()) {
      return Status(ErrorCode::kInvalidArgument,
                    what +
                        ": this daemon has no persistent directory (shmstreamd --persist-dir); "
                        "name one with --dir");
    }
    // Another user may only name a directory of their own: the daemon writes there for them.
    // Checked on the descriptor the files are then created through (no swap can change it).
    auto dir = create.directory.empty()
                   ? persistent_.open_own()
                   : persistent_.open_named(create.directory, peer.uid,
                                            /*must_own=*/peer.uid != geteuid());
    if (!dir.ok()) return dir.status().with_context(what);
    stream->dir_fd = dir->fd->get();
    stream->dir_holder = dir->fd;
    stream->directory = dir->path;
  }
  stream->segment_path = (stream->directory.empty() ? config_.segment_dir : stream->directory) +
                         "/" + stream->file_name;
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
  params.stall_limit_ms = create.stall_limit_ms;
  params.daemon_socket = config_.socket_path;
  params.key = &config_.key;
  // Whole before it is named (no successor of a daemon killed here finds half a header), and
  // locked before it is named (`shmstream gc` cannot take the lock of a named segment), on the
  // open file description the daemon's mapping (stream->segment) keeps; the producer gets one
  // of its own (below), so the lock goes with the daemon.
  Made made = create_whole(
      stream->dir_fd, stream->file_name, 0600, /*lock=*/true,
      [&](int fd) {
        Status s = give_to_owner(fd, *stream, file_mode(create.mode), what);
        return s.ok() ? shm::format_segment(fd, params) : s;
      },
      what + ": creating segment");
  if (!made.status.ok()) return made.status;
  kj::AutoCloseFd fd = kj::mv(made.fd);
  Status s;
  Result<shm::Segment> segment =
      shm::Segment::map(fd.get(), shm::Access::kReadWrite, shm::MapExtent::kHeaderOnly, what);
  if (segment.ok()) {
    stream->segment = std::move(segment).value();
    s = ensure_reader_table(*stream, /*reuse=*/false, max_readers);
  } else {
    s = segment.status();
  }
  if (!s.ok()) {
    unlink_files(*stream);
    return s;
  }
  stream->producer_attached = true;
  stream->producer_epoch = 1;
  // A persistent stream's new directory entries reach the disk now (its data on close).
  if (!stream->directory.empty()) fsync(stream->dir_fd);
  kj::AutoCloseFd producer_fd(reopen(fd.get(), O_RDWR));
  if (producer_fd.get() < 0) {
    Status s = from_errno(errno, what + ": opening it for its producer");
    unlink_files(*stream);
    return s;
  }
  stream->writes.window_ns = monotonic_ns();  // empty now: every byte from here is a write seen
  live_.emplace(name, stream);
  ++streams_of_[stream->owner.uid];
  spdlog::info("stream \"{}\": created by pid {} uid {} (segment {})", name, peer.pid, peer.uid,
               stream->file_name);
  return ProducerAccess{std::move(stream), kj::mv(producer_fd)};
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
  if (!stream->table.valid()) {
    return Status(ErrorCode::kCorrupt, fmt::format("stream \"{}\": {}", name, stream->damage_note));
  }
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
      // Relaxed: the daemon reads its own writes.
      if ((stream->table.slot(held->slot).flags.load(std::memory_order_relaxed) &
           shm::kSlotEvicted) != 0) {
        return Status(ErrorCode::kOverrun,
                      fmt::format("stream \"{}\": cursor \"{}\" was evicted: it held the producer "
                                  "longer than the stream's stall limit ({} ms); remove it "
                                  "(shmstream rm {} --cursor {}) to start again",
                                  name, cursor, stream->segment.stall_limit_ms(), name, cursor),
                      shm::load_oldest(stream->segment.header()));
      }
    }
  }
  if (held == nullptr) {
    if (Status s = may_take_slot(name, stream->owner, peer, geteuid(),
                                 stream->slots_held_by(peer.uid), stream->table.max_readers());
        !s.ok()) {
      return s;
    }
  }
  // A fresh read-only open: the reader cannot gain write access through it, even by mprotect.
  // Of the daemon's own descriptor, never of the name (which the owner of a persistent
  // stream's directory may have replaced by a fifo, a symlink or another file).
  kj::AutoCloseFd fd(reopen(stream->segment.fd(), O_RDONLY));
  if (fd.get() < 0) return from_errno(errno, fmt::format("stream \"{}\": opening", name));
  // A new reader starts at the oldest offset still available (it may seek anywhere later).
  uint64_t oldest = shm::load_oldest(stream->segment.header());
  auto pid = static_cast<uint32_t>(peer.pid);
  shm::SegmentHeader& header = stream->segment.mutable_header();
  ReaderGrant out_grant;
  if (held != nullptr) {
    // The cursor's reader gets a page of its own, committed where the cursor is (its previous
    // reader keeps a descriptor of its old page, which from now on counts for nothing).
    shm::CursorPosition at = cursor_position(*stream, held->slot);
    drop_page(*stream, held->slot);
    auto page = make_page(*stream, held->slot, at.position, at.token);
    if (!page.ok()) return page.status();
    held->reader_pid = peer.pid;
    ++held->generation;
    shm::set_slot_reader(stream->table, header, held->slot, pid, *page, at.position, at.token);
    out_grant = ReaderGrant{held->slot, cursor, held->generation};
  } else {
    // Claimed first (holding `oldest`), then given its page: the page names its slot.
    auto slot = shm::claim_slot(
        stream->table, shm::SlotClaim{oldest, 0, pid, static_cast<uint32_t>(peer.uid), 0, cursor});
    if (!slot.ok()) {
      return slot.status().with_context(fmt::format("stream \"{}\": too many readers", name));
    }
    auto page = make_page(*stream, *slot, oldest, 0);
    if (!page.ok()) {
      shm::release_slot(stream->table, header, *slot);
      return page.status();
    }
    shm::set_slot_reader(stream->table, header, *slot, pid, *page, oldest, 0);
    out_grant = ReaderGrant{*slot, cursor, cursor.empty() ? 0u : 1u};
    stream->slot_users[*slot] = peer.uid;
    if (!cursor.empty()) {
      stream->cursors[cursor] = Cursor{*slot, peer.pid, 1, peer.uid};
      spdlog::info("stream \"{}\": cursor \"{}\" created at {}", name, cursor, oldest);
    }
  }
  kj::AutoCloseFd page_fd(fcntl(stream->pages[out_grant.slot].fd.get(), F_DUPFD_CLOEXEC, 0));
  if (page_fd.get() < 0) {
    Status s = from_errno(errno, fmt::format("stream \"{}\": its reader page", name));
    // Let go as a reader that came and went: a cursor (new or not) stays, unheld.
    auto c = cursor.empty() ? stream->cursors.end() : stream->cursors.find(cursor);
    let_go(*stream, out_grant.slot, c != stream->cursors.end() ? &c->second : nullptr);
    return s;
  }
  ++stream->readers;
  return ReaderAccess{stream, kj::mv(fd), std::move(out_grant), kj::mv(page_fd)};
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
  drop_page(stream, c->second.slot);
  shm::release_slot(stream.table, stream.segment.mutable_header(), c->second.slot);
  stream.slot_users.erase(c->second.slot);
  stream.cursors.erase(c);
  spdlog::info("stream \"{}\": cursor \"{}\" removed", name, cursor);
  return Status();
}

Status Registry::remove(const std::string& name, bool force, const Peer& peer) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  auto found = find_live(name);
  if (!found.ok()) return remove_removing(name, force, peer, found.status());
  std::shared_ptr<Stream> stream = *found;
  if (Status s = may_own(name, stream->owner, peer, geteuid(), "remove"); !s.ok()) return s;
  live_.erase(name);
  retire(stream, force);
  spdlog::info("stream \"{}\": removed{} ({} readers, producer {})", name, force ? " by force" : "",
               stream->readers,
               stream->producer_attached    ? "attached"
               : stream->producer_unclaimed ? "still to reattach"
                                            : "gone");
  release_if_unheld(stream);
  return Status();
}

void Registry::retire(const std::shared_ptr<Stream>& stream, bool cancel) {
  if (cancel) shm::end_stream(stream->segment.mutable_header(), shm::StreamState::kCancelled);
  // Unlinked now: nobody can open it any more; mappings held keep the memory until released.
  unlink_files(*stream);
  stream->removed = true;
  stream->removed_seq = ++removals_;
  removing_.insert(stream);
}

std::vector<std::shared_ptr<Stream>> Registry::removing_named(const std::string& name) const {
  std::vector<std::shared_ptr<Stream>> out;
  for (const auto& stream : removing_) {
    if (stream->name == name) out.push_back(stream);
  }
  return out;
}

size_t Registry::remove_memory_streams_for_exit() {
  size_t removed = 0;
  // Removed ones still held are cancelled too: with no daemon left, their producer's death would
  // go unseen, and their readers would wait on forever.
  for (const auto& stream : removing_) {
    if (stream->directory.empty()) {
      shm::end_stream(stream->segment.mutable_header(), shm::StreamState::kCancelled);
    }
  }
  for (auto it = live_.begin(); it != live_.end();) {
    std::shared_ptr<Stream> stream = it->second;
    if (!stream->directory.empty()) {
      ++it;
      continue;
    }
    it = live_.erase(it);
    retire(stream, /*cancel=*/true);
    ++removed;
  }
  return removed;
}

Status Registry::remove_removing(const std::string& name, bool force, const Peer& peer,
                                 Status not_found) {
  std::vector<std::shared_ptr<Stream>> held = removing_named(name);
  if (held.empty()) return not_found;
  if (!force) {
    return Status(ErrorCode::kNotFound,
                  fmt::format("stream \"{}\": already removed, still held by its readers or "
                              "producer (rm --force cancels them)",
                              name));
  }
  // Force on a stream being removed: cancel what still holds it, as a forced removal does.
  for (const auto& stream : held) {
    if (Status s = may_own(name, stream->owner, peer, geteuid(), "remove"); !s.ok()) return s;
  }
  for (const auto& stream : held) {
    shm::end_stream(stream->segment.mutable_header(), shm::StreamState::kCancelled);
    spdlog::info("stream \"{}\": its removal forced ({} readers cancelled)", name, stream->readers);
  }
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
  if (it != live_.end() && it->second->id == stream_id) return it->second;
  // Removed since this daemon adopted it: still held for what reattaches (see release_if_unheld).
  for (const auto& stream : removing_named(name)) {
    if (stream->id == stream_id) return stream;
  }
  return Status(ErrorCode::kNotFound,
                fmt::format("stream \"{}\": gone (removed while the daemon restarted)", name));
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
  stream->producer_unclaimed = false;
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
  return ReaderAccess{stream, kj::AutoCloseFd(), std::move(out_grant), kj::AutoCloseFd()};
}

bool Registry::forget_orphan(Stream& stream, uint32_t slot, pid_t pid, bool tell) {
  auto orphan = stream.orphans.find(slot);
  if (orphan == stream.orphans.end() || orphan->second != pid) return false;  // reattached
  stream.orphans.erase(orphan);
  Cursor* cursor = nullptr;
  for (auto& [name, c] : stream.cursors) {
    if (c.slot == slot) cursor = &c;
  }
  // A live reader's slot let go: unwoken from now on (the producer no longer reads its page), it
  // must learn it, even asleep; else it would wait on, unseen, for as long as the stream is open.
  auto page = stream.pages.find(slot);
  const bool told = tell && page != stream.pages.end() &&
                    shm::mark_page_evicted(page->second.fd.get(), shm::kEvictedUnclaimed).ok();
  let_go(stream, slot, cursor);
  // Woken after the pwrite (a system call: ordered before this release increment), the reader
  // re-checks its page (acquire) and finds why.
  if (told) shm::wake_readers(stream.segment.mutable_header());
  return true;
}

void Registry::orphan_reader_exited(const std::shared_ptr<Stream>& stream, uint32_t slot,
                                    pid_t pid) {
  if (forget_orphan(*stream, slot, pid, /*tell=*/false)) {
    spdlog::info("stream \"{}\": reader pid {} exited before reattaching; slot {} let go",
                 stream->name, pid, slot);
    release_if_unheld(stream);
  }
}

void Registry::expire_orphans() {
  for (const auto& orphan : orphan_readers()) {
    if (forget_orphan(*orphan.stream, orphan.slot, orphan.pid, /*tell=*/true)) {
      spdlog::info("stream \"{}\": reader pid {} did not reattach in time; slot {} let go",
                   orphan.stream->name, orphan.pid, orphan.slot);
      release_if_unheld(orphan.stream);
    }
  }
}

void Registry::release_ended_unclaimed() {
  std::vector<std::shared_ptr<Stream>> ended;
  for (const auto& stream : removing_) {
    if (stream->producer_unclaimed &&
        shm::load_state(stream->segment.header()) != shm::StreamState::kOpen) {
      ended.push_back(stream);
    }
  }
  for (const auto& stream : ended) {
    stream->producer_unclaimed = false;
    spdlog::info("stream \"{}\": its producer ended it without reattaching", stream->name);
    release_if_unheld(stream);
  }
}

std::vector<Registry::Orphan> Registry::orphan_readers() const {
  std::vector<Orphan> out;
  // Removed streams too: removed since adoption, held for them.
  each_stream([&out](const std::shared_ptr<Stream>& stream) {
    for (const auto& [slot, pid] : stream->orphans) out.push_back(Orphan{stream, slot, pid});
  });
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
  kj::AutoCloseFd fd(reopen(stream->segment.fd(), O_RDWR));  // the daemon's file, not the name
  if (fd.get() < 0) return from_errno(errno, fmt::format("stream \"{}\": reopening", name));
  uint32_t predecessor = shm::producer_pid_now(h);
  shm::store_resumed_pid(h, static_cast<uint32_t>(peer.pid));
  shm::clear_abort_claim(h);  // a predecessor killed as it claimed: the successor's is free
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
      shm::abort_stream(stream->segment.mutable_header(), died(stream->segment.header()),
                        shm::Claimant::kDaemon)) {
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
  stream->producer_unclaimed = false;  // it will not reattach now
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
  if (shm::abort_stream(h, died(h), shm::Claimant::kDaemon)) {
    spdlog::warn("stream \"{}\": producer pid {} exited without closing; aborted", stream->name,
                 pid);
  }
  release_if_unheld(stream);  // a removed stream only its unclaimed producer held
  return false;
}

void Registry::successor_overdue(const std::shared_ptr<Stream>& stream, uint64_t epoch) {
  if (!stream->awaiting_producer || stream->producer_epoch != epoch) return;  // resumed
  stream->awaiting_producer = false;
  const AbortReason why{AbortKind::kNoSuccessor, static_cast<int32_t>(stream->resume_grace_ms()),
                        ""};
  if (shm::abort_stream(stream->segment.mutable_header(), why, shm::Claimant::kDaemon)) {
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
  if (!stream.table.valid()) return;
  shm::SegmentHeader& header = stream.segment.mutable_header();
  if (cursor != nullptr) {
    // Unheld, it holds exactly its last commit (its reader published its hold lazily).
    shm::CursorPosition at = cursor_position(stream, slot);
    cursor->reader_pid = 0;
    shm::set_slot_reader(stream.table, header, slot, 0, 0, at.position, at.token);
    drop_page(stream, slot);
  } else {
    shm::release_slot(stream.table, header, slot);
    drop_page(stream, slot);
    stream.slot_users.erase(slot);
  }
}

shm::CursorPosition Registry::cursor_position(const Stream& stream, uint32_t slot) const {
  shm::CursorPosition at;
  if (slot < stream.table.max_readers()) {
    const shm::TableSlot& entry = stream.table.slot(slot);
    // Relaxed: the daemon reads its own writes.
    at = {entry.hold.load(std::memory_order_relaxed), entry.token.load(std::memory_order_relaxed)};
  }
  if (auto page = stream.pages.find(slot); page != stream.pages.end()) {
    auto state = shm::read_reader_page(page->second.fd.get(), stream.id, slot, page->second.number);
    if (state.ok()) at = state->committed;
  }
  return at;
}

void Registry::drop_page(Stream& stream, uint32_t slot) {
  auto page = stream.pages.find(slot);
  if (page == stream.pages.end()) return;
  unlink_page(stream, page->second.number);
  stream.pages.erase(page);
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
  // The daemon's own descriptors: the names may have been replaced since.
  for (int fd : {stream.segment.fd(), stream.table_fd ? stream.table_fd->get() : -1}) {
    if (fd >= 0 && sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE) != 0) {
      spdlog::warn("stream \"{}\": writing its files back: {}", stream.name, std::strerror(errno));
    }
  }
}

void Registry::release_if_unheld(const std::shared_ptr<Stream>& stream) {
  // Held by its readers, its producer, and what an earlier daemon's clients may still take back:
  // an unclaimed producer (until it reattaches, ends the stream or exits) and adopted reader
  // slots (until they reattach, exit or outlast the grace).
  if (stream->removed && stream->readers == 0 && !stream->producer_attached &&
      !stream->producer_unclaimed && stream->orphans.empty()) {
    if (removing_.erase(stream) != 0) {
      if (auto counted = streams_of_.find(stream->owner.uid);
          counted != streams_of_.end() && --counted->second == 0) {
        streams_of_.erase(counted);
      }
      spdlog::info("stream \"{}\": released (segment {})", stream->name, stream->file_name);
      if (schedule_burial_) {
        released_.push_back(stream);
        if (released_.size() == 1) schedule_burial_();
      }
    }
  }
}

uint64_t stalled_ms_since(uint64_t since_ns) {
  const uint64_t now_ns = monotonic_ns();
  return now_ns > since_ns ? (now_ns - since_ns) / 1'000'000 : 0;
}

std::string damage_of(const Stream& stream) {
  if (stream.segment.faulted()) return "its segment file shrank under the daemon's mapping";
  if (stream.table.faulted()) return "its reader table shrank under the daemon's mapping";
  if (!stream.damage_note.empty()) return stream.damage_note;
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
  if (stream.table.valid() && stream.table_fd && fstat(stream.table_fd->get(), &st) == 0 &&
      static_cast<uint64_t>(st.st_size) < shm::table_file_size(stream.table.max_readers())) {
    return fmt::format("its reader table is {} bytes, shorter than its {} reader slots need",
                       st.st_size, stream.table.max_readers());
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
  s.max_readers = stream.table.valid() ? stream.table.max_readers() : 0;
  s.slowest_reader = s.bytes;
  if (stream.table.valid()) {
    for (const shm::SlotInfo& slot : shm::slots_in_use(stream.table)) {
      // What the reader's own page says (pread: the daemon never maps a page), else its hold.
      uint64_t position = slot.hold;
      if (auto page = stream.pages.find(slot.index); page != stream.pages.end()) {
        auto state = shm::read_reader_page(page->second.fd.get(), stream.id, slot.index,
                                           page->second.number);
        if (state.ok()) position = slot.cursor ? state->committed.position : state->position;
      }
      if (!slot.evicted) s.slowest_reader = std::min(s.slowest_reader, position);
      if (!slot.cursor) {
        s.attached.push_back(ReaderSnapshot{slot.pid, position, ""});
        continue;
      }
      auto cursor = stream.cursors.find(slot.name);
      if (cursor == stream.cursors.end() || cursor->second.slot != slot.index) continue;
      auto pid = static_cast<uint32_t>(cursor->second.reader_pid);
      s.cursors.push_back(CursorSnapshot{slot.name, position, pid});
      if (pid != 0) s.attached.push_back(ReaderSnapshot{pid, position, slot.name});
    }
    std::sort(s.cursors.begin(), s.cursors.end(),
              [](const auto& a, const auto& b) { return a.name < b.name; });
  }
  if (stream.segment.block_when_full()) {
    // Relaxed: the producer's display fields; they publish nothing.
    const uint64_t since = h.stalled_since_ns.load(std::memory_order_relaxed);
    const uint64_t wanted = h.space_wanted.load(std::memory_order_relaxed);
    if (since != 0 && wanted != shm::kNobody) {
      s.producer_waits_for = wanted;
      s.stalled_ms = stalled_ms_since(since);
    }
  }
  s.directory = stream.directory;
  s.owner_gid = stream.owner.gid;
  s.mode = stream.owner.mode;
  s.origin = h.origin_offset;
  s.resume_grace_ms = stream.resume_grace_ms();
  s.awaiting_producer = stream.awaiting_producer;
  s.damage = damage_of(stream);
  s.stall_limit_ms = stream.segment.stall_limit_ms();
  if (s.state == shm::StreamState::kAborted) s.abort_reason = shm::load_abort_reason(h);
  // Relaxed: the producer's display count; it publishes nothing.
  if (s.records) s.record_count = h.records_committed.load(std::memory_order_relaxed);
  s.write_rate = stream.writes.rate_bytes_per_s;
  if (stream.writes.changed_ns != 0) {
    s.last_write_age_ms = stalled_ms_since(stream.writes.changed_ns);
  }
  s.allocated_bytes = files_allocated_bytes(stream);
  if (!s.damage.empty() && !stream.damage_reported) {
    stream.damage_reported = true;
    spdlog::warn("stream \"{}\": damaged: {}", stream.name, s.damage);
  }
  return s;
}

void Registry::sample_writes() {
  const uint64_t now = monotonic_ns();
  each_stream([now](const std::shared_ptr<Stream>& stream) {
    Stream::Writes& w = stream->writes;
    const uint64_t bytes = shm::load_committed(stream->segment.header());
    if (w.window_ns == 0) {  // first sight: what it had is not a write seen
      w = Stream::Writes{bytes, 0, now, bytes, 0};
      return;
    }
    if (bytes != w.bytes) w.changed_ns = now;
    w.bytes = bytes;
    if (now - w.window_ns >= 1000000000) {
      // A producer may lie about its length: a shrinking one writes at no rate.
      w.rate_bytes_per_s = bytes >= w.window_bytes
                               ? static_cast<double>(bytes - w.window_bytes) * 1e9 /
                                     static_cast<double>(now - w.window_ns)
                               : 0;
      w.window_ns = now;
      w.window_bytes = bytes;
    }
  });
}

void Registry::enforce_stall_limits() {
  // Removed streams too: a removal does not free their producer from a stuck reader.
  each_stream([](const std::shared_ptr<Stream>& stream) {
    const uint32_t limit = stream->segment.stall_limit_ms();
    if (limit == 0 || !stream->table.valid()) return;
    shm::SegmentHeader& h = stream->segment.mutable_header();
    // Relaxed: the producer's display fields (an owner lying there evicts its own readers).
    const uint64_t since = h.stalled_since_ns.load(std::memory_order_relaxed);
    const uint64_t wanted = h.space_wanted.load(std::memory_order_relaxed);
    if (since == 0 || wanted == shm::kNobody || stalled_ms_since(since) <= limit) return;
    for (const shm::SlotInfo& slot : shm::slots_in_use(stream->table)) {
      if (slot.evicted) continue;
      uint64_t position = slot.hold;
      auto page = stream->pages.find(slot.index);
      if (page != stream->pages.end()) {
        auto state = shm::read_reader_page(page->second.fd.get(), stream->id, slot.index,
                                           page->second.number);
        if (!state.ok()) continue;   // a page its reader broke holds nothing already
        position = state->position;  // what the producer waits for (a cursor: its commit)
      }
      if (position >= wanted) continue;
      if (page != stream->pages.end()) {
        (void)shm::mark_page_evicted(page->second.fd.get(), shm::kEvictedStall);
      }
      shm::evict_slot(stream->table, h, slot.index);
      spdlog::warn(
          "stream \"{}\": evicted {} at offset {}: it held the producer longer than the "
          "stall limit ({} ms)",
          stream->name,
          slot.cursor ? fmt::format("cursor \"{}\"", slot.name)
                      : fmt::format("reader pid {}", slot.pid),
          position, limit);
    }
  });
}

std::vector<StreamSnapshot> Registry::list() const {
  std::vector<StreamSnapshot> out;
  out.reserve(live_.size() + removing_.size());
  each_stream([&](const std::shared_ptr<Stream>& stream) { out.push_back(snapshot(*stream)); });
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

Result<StreamSnapshot> Registry::stat(const std::string& name) const {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  auto found = find_live(name);
  if (found.ok()) return snapshot(**found);
  // Removed but still held: shown as `ls` shows it (removing). Of several, the last removed.
  auto held = removing_named(name);
  if (held.empty()) return found.status();
  return snapshot(**std::max_element(held.begin(), held.end(), [](const auto& a, const auto& b) {
    return a->removed_seq < b->removed_seq;
  }));
}

}  // namespace shmstream::daemon
