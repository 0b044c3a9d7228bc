#include "cli/common.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>

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

namespace {

// An option naming one of an enum's values, checked and converted by the library's own parse
// function (one table of names, shared with the Python module).
template <typename Enum>
CLI::Option* add_named_option(CLI::App* app, const std::string& name, Enum* value,
                              shmstream::Result<Enum> (*parse)(std::string_view),
                              const std::string& names, const std::string& what) {
  auto text = std::make_shared<std::string>();
  return app->add_option(name, *text, what)
      ->check(CLI::Validator(
          [parse](std::string& s) {
            auto parsed = parse(s);
            return parsed.ok() ? std::string() : parsed.status().message();
          },
          ""))
      // Holds `text` (the option's storage) for as long as the option lives.
      ->each([value, parse, text](const std::string& s) { *value = parse(s).value(); })
      ->type_name(names);
}

}  // namespace

void add_ring_options(CLI::App* app, RingOptions* ring, const std::string& whose) {
  add_named_option(app, "--retention", &ring->retention, &shmstream::parse_retention,
                   "unbounded|drop-oldest|block",
                   whose + "Retention: unbounded (default), drop-oldest or block");
  add_size_option(app, "--capacity", &ring->capacity,
                  whose + "Ring capacity, for drop-oldest and block");
}

void add_mode_option(CLI::App* app, shmstream::StreamMode* mode, const std::string& what) {
  add_named_option(app, "--mode", mode, &shmstream::parse_mode, "owner|group|everyone",
                   what + " (default: owner)");
}

}  // namespace shmstream_cli
