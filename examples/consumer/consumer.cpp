// Writes 1 MiB through a stream and reads it back zero-copy, with shmstream's C++ API.
// Connects to $SHMSTREAM_SOCKET (or the per-user daemon); prints one line; exit 0 if it matched.
#include <unistd.h>

#include <cstdio>
#include <shmstream/client.hpp>
#include <string>

int main() {
  auto client = shmstream::Client::connect();
  if (!client) {
    std::fprintf(stderr, "consumer_cpp: %s\n", client.status().to_string().c_str());
    return 1;
  }
  std::string name = "consumer-cpp-" + std::to_string(getpid());
  const size_t total = 1 << 20;
  auto producer = client->create(name);
  if (!producer) {
    std::fprintf(stderr, "consumer_cpp: %s\n", producer.status().to_string().c_str());
    return 1;
  }
  std::string chunk(4096, '\0');
  for (size_t off = 0; off < total; off += chunk.size()) {
    for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((off + i) * 31 % 251);
    if (auto s = producer->append(chunk); !s.ok()) {
      std::fprintf(stderr, "consumer_cpp: %s\n", s.to_string().c_str());
      return 1;
    }
  }
  if (auto s = producer->close(); !s.ok()) {
    std::fprintf(stderr, "consumer_cpp: %s\n", s.to_string().c_str());
    return 1;
  }

  auto reader = client->open(name);
  if (!reader) {
    std::fprintf(stderr, "consumer_cpp: %s\n", reader.status().to_string().c_str());
    return 1;
  }
  size_t got = 0;
  for (;;) {
    auto view = reader->next(65536);
    if (!view) {
      std::fprintf(stderr, "consumer_cpp: %s\n", view.status().to_string().c_str());
      return 1;
    }
    if (view->empty()) break;  // the clean end
    for (std::byte b : *view) {
      if (static_cast<char>(b) != static_cast<char>(got * 31 % 251)) {
        std::fprintf(stderr, "consumer_cpp: wrong byte at offset %zu\n", got);
        return 1;
      }
      ++got;
    }
  }
  if (auto s = client->remove(name); !s.ok()) {
    std::fprintf(stderr, "consumer_cpp: %s\n", s.to_string().c_str());
    return 1;
  }
  std::printf("consumer_cpp: %zu bytes written and read back intact\n", got);
  return got == total ? 0 : 1;
}
