#include "cli/common.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "terminal.hpp"

namespace shmstream_cli {

void fail(const std::string& message) {
  end_progress_line();
  std::fprintf(stderr, "shmstream: %s\n", message.c_str());
  std::exit(1);
}

void check(const shmstream::Status& status) {
  if (!status.ok()) fail(status.message());
}

bool write_all(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  return true;
}

bool is_pipe(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

std::chrono::milliseconds milliseconds_of(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

CLI::Option* add_format_option(CLI::App* app, Format* format, const std::string& what) {
  static const std::map<std::string, Format> kFormats = {{"line", Format::kLine},
                                                         {"len", Format::kLen}};
  return app
      ->add_option("--format", *format,
                   what + ": line (default) or len (u32 little-endian length + bytes)")
      ->transform(CLI::CheckedTransformer(kFormats).description(""))
      ->type_name("line|len");
}

CLI::Option* add_size_option(CLI::App* app, const std::string& name, uint64_t* bytes,
                             const std::string& what) {
  // AsSizeValue(false): K, M, G (with or without i, B) are all multiples of 1024.
  return app->add_option(name, *bytes, what + " (bytes, or with a suffix: 64K, 16M, 1G)")
      ->transform(CLI::AsSizeValue(false).description(""))
      ->type_name("SIZE");
}

uint64_t RingOptions::ring_capacity() const {
  bool ring = retention != shmstream::Retention::kUnbounded;
  if (ring && capacity == 0) {
    fail(std::string("--retention ") + shmstream::to_string(retention) + " needs --capacity BYTES");
  }
  if (!ring && capacity != 0) fail("--capacity needs --retention drop-oldest or block");
  return ring ? capacity : 0;
}

void add_ring_options(CLI::App* app, RingOptions* ring, const std::string& whose) {
  static const std::map<std::string, shmstream::Retention> kRetentions = {
      {"unbounded", shmstream::Retention::kUnbounded},
      {"drop-oldest", shmstream::Retention::kDropOldest},
      {"block", shmstream::Retention::kBlock}};
  app->add_option("--retention", ring->retention,
                  whose + "Retention: unbounded, drop-oldest or block")
      ->transform(CLI::CheckedTransformer(kRetentions).description(""))
      ->type_name("unbounded|drop-oldest|block")
      ->default_str("unbounded");
  add_size_option(app, "--capacity", &ring->capacity,
                  whose + "Ring capacity, for drop-oldest and block");
}

void add_mode_option(CLI::App* app, shmstream::StreamMode* mode, const std::string& what) {
  static const std::map<std::string, shmstream::StreamMode> kModes = {
      {"owner", shmstream::StreamMode::kOwner},
      {"group", shmstream::StreamMode::kGroup},
      {"everyone", shmstream::StreamMode::kEveryone}};
  app->add_option("--mode", *mode, what)
      ->transform(CLI::CheckedTransformer(kModes).description(""))
      ->type_name("owner|group|everyone")
      ->default_str("owner");
}

}  // namespace shmstream_cli
