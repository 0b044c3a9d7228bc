// Reads streams inside a Boost.Asio event loop, without a thread blocked per reader: Asio waits
// on Reader::event_fd(), and the handler reads with a zero timeout until nothing is left.
// Asio's reactor is edge-triggered, so the wait is a read of the descriptor's 8-byte counter
// (async_read_some tries the read first): a wake-up that came before the wait is not missed.
//
//   asio_reader NAME...     copies each stream to stdout (one after another's bytes as they
//                           come), and exits once every stream ended; exit 1 on a stream error
//
// Build: link shmstream::client and Boost (headers only): see examples/asio/CMakeLists.txt.
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <shmstream/client.hpp>
#include <string>
#include <vector>

namespace asio = boost::asio;

// One stream followed in the loop.
class Follower {
 public:
  Follower(asio::io_context& io, shmstream::Reader reader, int* failures)
      : reader_(std::move(reader)), failures_(failures), fd_(io) {
    // Asio must not close the Reader's descriptor: give it a duplicate to own.
    fd_.assign(::dup(reader_.event_fd().value()));
  }
  void start() { wait(); }

 private:
  void wait() {
    fd_.async_read_some(asio::buffer(&counter_, sizeof counter_),
                        [this](const boost::system::error_code& error, size_t) {
                          if (!error) drain();
                        });
  }
  // Reads everything committed so far; a read that would block (kTimeout) re-arms the fd.
  void drain() {
    for (;;) {
      auto view = reader_.next(1 << 16, shmstream::Timeout::zero());
      if (!view.ok()) {
        if (view.status().code() == shmstream::ErrorCode::kTimeout) return wait();
        std::fprintf(stderr, "asio_reader: %s\n", view.status().to_string().c_str());
        ++*failures_;
        return;  // no more waits: the loop ends when every follower stopped
      }
      if (view->empty()) return;  // the clean end of the stream
      std::fwrite(view->data(), 1, view->size(), stdout);
    }
  }

  shmstream::Reader reader_;
  int* failures_;
  asio::posix::stream_descriptor fd_;
  uint64_t counter_ = 0;  // the eventfd's count, read only to consume the wake-up
};

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: asio_reader NAME...\n");
    return 2;
  }
  auto client = shmstream::Client::connect();
  if (!client) {
    std::fprintf(stderr, "asio_reader: %s\n", client.status().to_string().c_str());
    return 1;
  }
  asio::io_context io;
  int failures = 0;
  std::vector<std::unique_ptr<Follower>> followers;
  for (int i = 1; i < argc; ++i) {
    auto reader = client->open(argv[i]);
    if (!reader) {
      std::fprintf(stderr, "asio_reader: %s\n", reader.status().to_string().c_str());
      return 1;
    }
    followers.push_back(std::make_unique<Follower>(io, std::move(reader.value()), &failures));
    followers.back()->start();
  }
  io.run();  // returns once no follower waits any more
  std::fflush(stdout);
  return failures == 0 ? 0 : 1;
}
