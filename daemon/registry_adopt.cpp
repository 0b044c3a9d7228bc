// The registry's side of a daemon restart: the streams an earlier daemon left in a directory
// come back into the table (Registry::adopt_existing_segments).
//
// Every file found is hostile input: users can plant files in /dev/shm and in the directories
// they name. A segment is adopted only if it is a regular file whose header this daemon signed
// (shm/authenticator.hpp) and whose owner is the user it was made for. Nothing is deleted on
// doubt: what is not adopted is moved aside, renamed "shmstream-quarantine.<file>.<reason>" in
// its directory, logged, and listed by `shmstream gc` (which removes it on request).
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "daemon/registry.hpp"
#include "shm/authenticator.hpp"
#include "shm/naming.hpp"

namespace shmstream::daemon {

namespace {

// Why a file is not adopted: the suffix of its quarantined name, and the words of the log.
struct Doubt {
  std::string tag;
  std::string why;
};

// The checks made on a header read from the file (pread: a shrinking file cannot fault here),
// before anything of it is mapped or trusted.
std::optional<Doubt> doubt_header(const shm::SegmentHeader& h, const struct stat& st,
                                  const shm::DaemonKey& key) {
  if (h.magic != shm::kMagic) return Doubt{"foreign", "not a shmstream segment"};
  if (h.layout_version != shm::kLayoutVersion) {
    return Doubt{fmt::format("version{}", h.layout_version),
                 fmt::format("layout version {} (this daemon reads {})", h.layout_version,
                             shm::kLayoutVersion)};
  }
  if (h.header_checksum != shm::header_checksum(h)) {
    return Doubt{"corrupt", "header checksum mismatch"};
  }
  if (!shm::header_authentic(h, key)) {
    return Doubt{"unsigned",
                 "not signed with this daemon's key (a forgery, another daemon's, or made "
                 "before the key changed)"};
  }
  // A genuine header copied into a file of another user claims a stream that is not theirs.
  if (st.st_uid != h.producer_uid && st.st_uid != geteuid()) {
    return Doubt{"owner", fmt::format("owned by uid {}, made for uid {}: a copy", st.st_uid,
                                      h.producer_uid)};
  }
  return std::nullopt;
}

}  // namespace

std::string quarantined_name(const std::string& file, const std::string& tag) {
  return fmt::format("{}{}.{}", shm::kQuarantinePrefix, file, tag);
}

void Registry::quarantine(int dir_fd, const std::string& directory, const std::string& file,
                          const std::string& tag, const std::string& why) {
  const std::string shown = (directory.empty() ? config_.segment_dir : directory) + "/" + file;
  std::string to = quarantined_name(file, tag);
  for (int n = 1; n < 100; ++n) {
    if (renameat2(dir_fd, file.c_str(), dir_fd, to.c_str(), RENAME_NOREPLACE) == 0) {
      spdlog::warn("{}: {}: not adopted, moved aside as {} (shmstream gc lists it)", shown, why,
                   to);
      ++quarantined_;
      return;
    }
    if (errno != EEXIST) break;
    to = fmt::format("{}.{}", quarantined_name(file, tag), n);
  }
  spdlog::warn("{}: {}: not adopted, and left in place (moving it aside: {})", shown, why,
               std::strerror(errno));
}

void Registry::adopt_existing_segments(int dir_fd, const std::shared_ptr<kj::AutoCloseFd>& holder,
                                       const std::string& directory) {
  int scan_fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR* dir = scan_fd >= 0 ? fdopendir(scan_fd) : nullptr;
  if (dir == nullptr) {
    if (scan_fd >= 0) close(scan_fd);
    spdlog::warn("{}: cannot be listed: {}", directory.empty() ? config_.segment_dir : directory,
                 std::strerror(errno));
    return;
  }
  std::string prefix = shm::segment_file_prefix(config_.instance);
  std::vector<std::string> segments;
  std::vector<std::string> side_files;  // reader tables and pages: "<segment>.t", ".r<N>"
  while (dirent* entry = readdir(dir)) {
    std::string file = entry->d_name;
    if (file.rfind(prefix, 0) != 0) continue;
    (file.find('.', prefix.size()) != std::string::npos ? side_files : segments).push_back(file);
  }
  closedir(dir);
  std::set<std::string> adopted;
  for (const std::string& file : segments) {
    // Never blocks (a fifo), never follows (a symlink).
    kj::AutoCloseFd fd(openat(dir_fd, file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    struct stat st {};
    if (fd.get() < 0) {
      const int err = errno;
      quarantine(dir_fd, directory, file, err == ELOOP ? "symlink" : "unopenable",
                 err == ELOOP ? "a symlink" : std::strerror(err));
      continue;
    }
    if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
      quarantine(dir_fd, directory, file, "not-regular", "not a regular file");
      continue;
    }
    // Shared, as a serving daemon holds it; refused only while `shmstream gc` holds it
    // exclusive, to remove the file. On the description the daemon's mapping keeps.
    if (flock(fd.get(), LOCK_SH | LOCK_NB) != 0) {
      spdlog::warn("{}: locked by shmstream gc (being removed): not adopted", file);
      continue;
    }
    alignas(shm::SegmentHeader) std::byte raw[sizeof(shm::SegmentHeader)];
    if (pread(fd.get(), raw, sizeof(raw), 0) != static_cast<ssize_t>(sizeof(raw))) {
      quarantine(dir_fd, directory, file, "truncated",
                 fmt::format("{} bytes: shorter than a header", st.st_size));
      continue;
    }
    const auto& copy = *reinterpret_cast<const shm::SegmentHeader*>(raw);
    if (auto doubt = doubt_header(copy, st, config_.key)) {
      quarantine(dir_fd, directory, file, doubt->tag, doubt->why);
      continue;
    }
    auto segment =
        shm::Segment::map(fd.get(), shm::Access::kReadWrite, shm::MapExtent::kHeaderOnly, file);
    const bool cut = !segment.ok() && segment.status().code() == ErrorCode::kCorrupt &&
                     (shm::load_state(copy) != shm::StreamState::kOpen ||
                      !shm::created_this_boot(copy) || !process_alive(copy.producer_pid));
    if (cut) {
      // Genuine, but its file lost its tail: what the file still holds stays readable.
      auto kept = shm::keep_intact_prefix(fd.get());
      if (kept.ok()) {
        spdlog::warn("{}: {}; the stream keeps its first {} bytes ({} lost) and is ended", file,
                     segment.status().message(), kept->kept, kept->lost);
        segment =
            shm::Segment::map(fd.get(), shm::Access::kReadWrite, shm::MapExtent::kHeaderOnly, file);
      }
    }
    if (!segment.ok()) {
      quarantine(dir_fd, directory, file, "corrupt", segment.status().message());
      continue;
    }
    auto stream = std::make_shared<Stream>();
    stream->name = segment->name();
    stream->id = segment->header().stream_id;
    stream->file_name = file;
    stream->stray_pages_possible = true;
    stream->dir_fd = dir_fd;
    stream->dir_holder = holder;
    stream->directory = directory;
    stream->segment_path = (directory.empty() ? config_.segment_dir : directory) + "/" + file;
    stream->segment = std::move(segment).value();
    // The owner is the signed header's (a root daemon keeps in-memory streams' files itself);
    // group and mode live in the file, which only the daemon (or the owner) may change.
    stream->owner = Owner{static_cast<uid_t>(stream->segment.header().producer_uid), st.st_gid,
                          mode_of_file(st.st_mode)};
    if (live_.count(stream->name) != 0 ||
        file != shm::segment_file_name(config_.instance, stream->id)) {
      quarantine(
          dir_fd, directory, file, "duplicate",
          fmt::format("a second segment of stream \"{}\" (or a misnamed one)", stream->name));
      continue;
    }
    if (cut) stream->damage_note = "its file was truncated: only its intact start is kept";
    if (Status s = ensure_reader_table(*stream, /*reuse=*/true, config_.default_max_readers);
        !s.ok()) {
      // Its data stays (it may be read again once a table can be made, after a restart).
      stream->damage_note = fmt::format("no reader table ({}): no new readers", s.message());
      spdlog::warn("stream \"{}\": {}", stream->name, stream->damage_note);
    }
    shm::SegmentHeader& h = stream->segment.mutable_header();
    uint32_t producer = shm::producer_pid_now(h);
    if (shm::load_state(h) == shm::StreamState::kOpen &&
        (!shm::created_this_boot(h) || !process_alive(producer))) {
      if (stream->resume_grace_ms() != 0) {
        stream->awaiting_producer = true;
        spdlog::info(
            "stream \"{}\": producer pid {} died while no daemon ran; open {} ms for a "
            "successor",
            stream->name, producer, stream->resume_grace_ms());
      } else {
        shm::abort_stream(h,
                          AbortReason{AbortKind::kProducerDied, static_cast<int32_t>(producer), ""},
                          shm::Claimant::kDaemon);
        spdlog::info("stream \"{}\": producer pid {} died while no daemon ran; aborted",
                     stream->name, producer);
      }
    } else if (shm::load_state(h) == shm::StreamState::kOpen) {
      stream->producer_unclaimed = true;  // to reattach; the server watches its pid
    }
    spdlog::info("stream \"{}\": adopted ({} bytes, {})", stream->name, shm::load_committed(h),
                 shm::state_name(shm::load_state(h)));
    adopted.insert(file);
    ++streams_of_[stream->owner.uid];
    live_.emplace(stream->name, std::move(stream));
  }
  for (const auto& file : side_files) {
    std::string segment = file.substr(0, file.find('.', prefix.size()));
    if (adopted.count(segment) == 0) {
      quarantine(dir_fd, directory, file, "orphan", "the side file of no adopted stream");
    }
  }
}

}  // namespace shmstream::daemon
