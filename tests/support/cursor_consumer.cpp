// cursor_consumer — a consumer process that reads a records stream as a named cursor and
// appends each record, as a line, to an output file. Tests kill it with SIGKILL and start it
// again; what the file holds then shows the delivery guarantee.
//
//   cursor_consumer SOCKET NAME CURSOR OUTPUT explicit|auto
//
// explicit: after appending a record, commits the position with the file's new length as the
//   token; on start, truncates the file to the committed token. The append and the commit
//   thus take effect together: every record lands in the file exactly once.
// auto: the library commits a record when the next one is asked for; on start, nothing is
//   truncated: a record appended but not yet committed is appended again (at least once).
//
// Prints "started POSITION" once it resumed, and exits 0 at the stream's clean end. Any error:
// a message on stderr and exit 1.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "shmstream/client.hpp"

namespace {

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "cursor_consumer: %s\n", message.c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: cursor_consumer SOCKET NAME CURSOR OUTPUT explicit|auto\n");
    return 2;
  }
  std::string mode = argv[5];
  if (mode != "explicit" && mode != "auto") die("mode must be explicit or auto, not " + mode);
  bool exactly_once = mode == "explicit";
  shmstream::ClientOptions client_options;
  client_options.socket_path = argv[1];
  client_options.autostart = false;
  auto client = shmstream::Client::connect(client_options);
  if (!client.ok()) die(client.status().to_string());
  shmstream::OpenOptions options;
  options.cursor = argv[3];
  options.commit = exactly_once ? shmstream::CommitMode::kExplicit : shmstream::CommitMode::kAuto;
  auto reader = client->open(argv[2], options);
  if (!reader.ok()) die(reader.status().to_string());

  int out = ::open(argv[4], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) die(std::string("opening ") + argv[4]);
  if (exactly_once && ftruncate(out, static_cast<off_t>(reader->cursor_token())) != 0) {
    die("truncating the output");
  }
  off_t length = lseek(out, 0, SEEK_END);
  std::printf("started %llu\n", static_cast<unsigned long long>(reader->position()));
  std::fflush(stdout);

  for (;;) {
    auto record = reader->next_record(std::chrono::seconds(30));
    if (!record.ok()) die(record.status().to_string());
    if (!*record) break;
    std::string line(reinterpret_cast<const char*>((*record)->data.data()), (*record)->data.size());
    line += '\n';
    if (::write(out, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      die("writing the output");
    }
    length += static_cast<off_t>(line.size());
    if (exactly_once) {
      if (auto s = reader->commit(reader->position(), static_cast<uint64_t>(length)); !s.ok()) {
        die(s.to_string());
      }
    }
  }
  ::close(out);
  return 0;
}
