// create_loop SOCKET DIR COUNT: creates COUNT persistent streams ("s1", "s2", ...) in directory
// DIR, closing each, and prints one line per try: "CREATED" or the error. The creating side of
// the --dir race in attacks_test.cpp, in one process (1,000 CLI processes are slow under the
// sanitizers).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "shmstream/client.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: create_loop SOCKET DIR COUNT\n");
    return 2;
  }
  shmstream::ClientOptions options;
  options.socket_path = argv[1];
  options.autostart = false;
  auto client = shmstream::Client::connect(options);
  if (!client.ok()) {
    std::fprintf(stderr, "%s\n", client.status().to_string().c_str());
    return 1;
  }
  shmstream::CreateOptions create;
  create.directory = argv[2];
  const long count = std::strtol(argv[3], nullptr, 10);
  for (long i = 1; i <= count; ++i) {
    auto producer = client->create("s" + std::to_string(i), create);
    if (producer.ok() && producer->close().ok()) {
      std::printf("CREATED\n");
    } else {
      std::printf("%s\n", producer.status().to_string().c_str());
    }
  }
  return 0;
}
