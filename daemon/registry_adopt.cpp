// The registry's side of a daemon restart: the streams an earlier daemon left in a directory
// come back into the table (Registry::adopt_existing_segments).
#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "daemon/registry.hpp"
#include "shm/naming.hpp"

namespace shmstream::daemon {

// Segments left by an earlier daemon on the same socket come back into the table, so that
// committed data stays readable; a corrupt or foreign file with our prefix is unlinked.
void Registry::adopt_existing_segments(int dir_fd, const std::shared_ptr<kj::AutoCloseFd>& holder,
                                       const std::string& directory) {
  int scan_fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  DIR* dir = fdopendir(scan_fd);
  if (dir != nullptr) rewinddir(dir);  // a dup shares the offset of the directory fd
  if (dir == nullptr) return;
  std::string prefix = shm::segment_file_prefix(config_.instance);
  std::vector<std::string> side_files;  // reader tables and pages: "<segment>.t", ".r<N>"
  while (dirent* entry = readdir(dir)) {
    std::string file = entry->d_name;
    if (file.rfind(prefix, 0) != 0) continue;
    if (file.find('.', prefix.size()) != std::string::npos) {
      side_files.push_back(file);  // handled with its segment, below
      continue;
    }
    kj::AutoCloseFd fd(openat(dir_fd, file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) continue;
    auto segment =
        shm::Segment::map(fd.get(), shm::Access::kReadWrite, shm::MapExtent::kHeaderOnly, file);
    if (!segment.ok()) {
      spdlog::warn("unlinking unusable segment {}: {}", file, segment.status().message());
      unlinkat(dir_fd, file.c_str(), 0);
      continue;
    }
    auto stream = std::make_shared<Stream>();
    stream->name = segment->name();
    stream->id = segment->header().stream_id;
    stream->file_name = file;
    stream->dir_fd = dir_fd;
    stream->dir_holder = holder;
    stream->directory = directory;
    stream->segment_path = (directory.empty() ? config_.segment_dir : directory) + "/" + file;
    stream->segment = std::move(segment).value();
    struct stat st {};
    if (fstat(fd.get(), &st) == 0) {  // ownership and mode live in the file itself
      stream->owner = Owner{st.st_uid, st.st_gid, mode_of_file(st.st_mode)};
    }
    if (live_.count(stream->name) != 0 ||
        file != shm::segment_file_name(config_.instance, stream->id)) {
      spdlog::warn("unlinking duplicate or misnamed segment {} (stream \"{}\")", file,
                   stream->name);
      unlinkat(dir_fd, file.c_str(), 0);
      continue;
    }
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
        shm::end_stream(h, shm::StreamState::kAborted);
        spdlog::info("stream \"{}\": producer pid {} died while no daemon ran; aborted",
                     stream->name, producer);
      }
    }
    spdlog::info("stream \"{}\": adopted ({} bytes, {})", stream->name, shm::load_committed(h),
                 shm::state_name(shm::load_state(h)));
    live_.emplace(stream->name, std::move(stream));
  }
  closedir(dir);
  for (const auto& file : side_files) {
    std::string segment = file.substr(0, file.find('.', prefix.size()));
    bool used = false;
    for (const auto& [name, stream] : live_) {
      used = used || (stream->file_name == segment && stream->dir_fd == dir_fd);
    }
    if (!used) {
      spdlog::warn("unlinking {}: the side file of no stream", file);
      unlinkat(dir_fd, file.c_str(), 0);
    }
  }
}

}  // namespace shmstream::daemon
