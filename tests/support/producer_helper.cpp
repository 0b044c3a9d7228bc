// producer_helper — a producer process for multi-process tests, built on the client library.
//
//   producer_helper SOCKET NAME BYTES SEED CHUNK [hold]
//
// Creates NAME and prints "created"; waits for a line on stdin; appends BYTES deterministic
// bytes (fill_random(SEED)) in CHUNK-byte reserve/commit steps, printing "half" when it passes
// half; with "hold", prints "written" and waits for stdin to close before closing the stream;
// prints "closed" and exits 0. Any error: a message on stderr and exit 1.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: producer_helper SOCKET NAME BYTES SEED CHUNK [hold]\n");
    return 2;
  }
  std::string socket = argv[1];
  std::string name = argv[2];
  uint64_t bytes = std::strtoull(argv[3], nullptr, 10);
  uint64_t seed = std::strtoull(argv[4], nullptr, 10);
  size_t chunk = std::strtoull(argv[5], nullptr, 10);
  bool hold = argc > 6 && std::string(argv[6]) == "hold";
  auto fail = [](const shmstream::Status& s) {
    std::fprintf(stderr, "producer_helper: %s\n", s.to_string().c_str());
    std::exit(1);
  };
  shmstream::ClientOptions options;
  options.socket_path = socket;
  options.autostart = false;
  auto client = shmstream::Client::connect(options);
  if (!client.ok()) fail(client.status());
  auto producer = client->create(name);
  if (!producer.ok()) fail(producer.status());
  std::printf("created\n");
  std::fflush(stdout);
  char c;
  while (read(STDIN_FILENO, &c, 1) == 1 && c != '\n') {
  }
  bool half_said = false;
  for (uint64_t off = 0; off < bytes;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, bytes - off));
    auto span = producer->reserve(n);
    if (!span.ok()) fail(span.status());
    shmstream::test::fill_random(seed, off, span->data(), n);
    if (auto s = producer->commit(n); !s.ok()) fail(s);
    off += n;
    if (!half_said && off >= bytes / 2) {
      std::printf("half\n");
      std::fflush(stdout);
      half_said = true;
    }
  }
  if (hold) {
    std::printf("written\n");
    std::fflush(stdout);
    while (read(STDIN_FILENO, &c, 1) > 0) {
    }
  }
  if (auto s = producer->close(); !s.ok()) fail(s);
  std::printf("closed\n");
  std::fflush(stdout);
  return 0;
}
