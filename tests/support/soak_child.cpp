// soak_child — a producer or a reader process for the soak test (tests/integration/soak_test.cpp).
//
//   soak_child produce SOCKET NAME SEED BYTES RING
//     Creates NAME (a `block` ring of RING bytes, or unbounded if RING is 0), appends BYTES
//     deterministic bytes (fill_random(SEED)) in random-sized appends, closes. Exit 0 when
//     closed, 1 on an error (the stream removed by force, a name already taken...).
//   soak_child read SOCKET NAME SEED
//     Opens NAME and reads to its end, checking every byte against fill_random(SEED) at its
//     offset. Prints "verified BYTES" and exits 0 when all it read matched, however the stream
//     ended (closed, producer died, removed by force); exit 3 if it could not open the stream
//     (or reach the daemon);
//     exit 2, naming the offset, at the first byte that differs.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace {

using shmstream::ErrorCode;

// Connects, or exits with `failure` (the daemon may be restarting).
shmstream::Client connect(const char* socket, int failure) {
  shmstream::ClientOptions options;
  options.socket_path = socket;
  options.autostart = false;
  auto client = shmstream::Client::connect(options);
  if (!client.ok()) {
    std::fprintf(stderr, "soak_child: %s\n", client.status().to_string().c_str());
    std::exit(failure);
  }
  return std::move(client.value());
}

int produce(const char* socket, const char* name, uint64_t seed, uint64_t bytes, uint64_t ring) {
  auto client = connect(socket, 1);
  shmstream::CreateOptions options;
  if (ring != 0) {
    options.retention = shmstream::Retention::kBlock;
    options.ring_capacity = ring;
  }
  auto producer = client.create(name, options);
  if (!producer.ok()) return 1;
  std::mt19937_64 rng(seed);
  std::vector<std::byte> buf(256 * 1024);
  for (uint64_t at = 0; at < bytes;) {
    size_t n = static_cast<size_t>(
        std::min<uint64_t>(bytes - at, std::uniform_int_distribution<size_t>(1, buf.size())(rng)));
    shmstream::test::fill_random(seed, at, buf.data(), n);
    // A block ring waits for its readers; a minute bounds a wait for a reader that hangs.
    if (!producer->append(std::span(buf.data(), n), std::chrono::seconds(60)).ok()) return 1;
    at += n;
  }
  return producer->close().ok() ? 0 : 1;
}

int read(const char* socket, const char* name, uint64_t seed) {
  auto client = connect(socket, 3);
  auto reader = client.open(name);
  if (!reader.ok()) return 3;
  std::vector<std::byte> buf(256 * 1024);
  std::vector<std::byte> want(buf.size());
  uint64_t verified = 0;
  for (;;) {
    auto n = reader->read(buf, std::chrono::seconds(60));
    if (!n.ok() || *n == 0) {
      // Every way a stream ends is fine here; only a wrong byte is not.
      ErrorCode code = n.ok() ? ErrorCode::kOk : n.status().code();
      bool ended = code == ErrorCode::kOk || code == ErrorCode::kProducerDied ||
                   code == ErrorCode::kCancelled;
      std::printf("verified %llu%s\n", static_cast<unsigned long long>(verified),
                  ended ? "" : (" (" + n.status().to_string() + ")").c_str());
      return ended ? 0 : 4;
    }
    // Where the bytes came from: the position before the read is not always it (a new reader
    // of a block ring follows the oldest offset if the producer moved on as it joined).
    uint64_t at = reader->position() - *n;
    shmstream::test::fill_random(seed, at, want.data(), *n);
    if (std::memcmp(buf.data(), want.data(), *n) != 0) {
      size_t i = 0;
      while (buf[i] == want[i]) ++i;
      auto info = client.stat(name);
      std::printf(
          "MISMATCH at offset %llu (read of %zu at %llu; got %02x want %02x; ring %llu, "
          "committed %llu, oldest %llu, state %s)\n",
          static_cast<unsigned long long>(at + i), *n, static_cast<unsigned long long>(at),
          static_cast<unsigned>(buf[i]), static_cast<unsigned>(want[i]),
          info.ok() ? static_cast<unsigned long long>(info->ring_capacity) : 0ULL,
          info.ok() ? static_cast<unsigned long long>(info->bytes) : 0ULL,
          info.ok() ? static_cast<unsigned long long>(info->oldest) : 0ULL,
          info.ok() ? shmstream::to_string(info->state) : "?");
      return 2;
    }
    verified += *n;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "produce" && argc == 7) {
    return produce(argv[2], argv[3], std::strtoull(argv[4], nullptr, 10),
                   std::strtoull(argv[5], nullptr, 10), std::strtoull(argv[6], nullptr, 10));
  }
  if (mode == "read" && argc == 5) {
    return read(argv[2], argv[3], std::strtoull(argv[4], nullptr, 10));
  }
  std::fprintf(stderr,
               "usage: soak_child produce SOCKET NAME SEED BYTES RING\n"
               "       soak_child read SOCKET NAME SEED\n");
  return 64;
}
