// hostile_reader — a reader that attacks what it is given. It opens a stream through the
// control protocol directly (as any local program may), takes the descriptors the daemon hands
// a reader (the segment, read-only; its own reader page, read-write) and abuses them:
//
//   hostile_reader SOCKET STREAM ATTACK MILLISECONDS
//     truncate   ftruncate its page to nothing (the producer and the daemon read it)
//     grow       ftruncate its page to 1 GiB
//     scribble   write random values over every field of its page, again and again
//     storm      ask to be woken at every commit (wanted 0, seen_word current), again and again
//     hold       publish position 0 forever (hold a blocking ring's producer back)
//     escape     try to reach what is not its own: write or truncate the segment, map it
//                writable, open the reader table and other readers' pages by name
//     exhaust    open readers (and named cursors) until the daemon refuses one
//   It keeps its reader (attacking, for the storms) for MILLISECONDS, then exits. Prints one
//   line per finding; exits 0, or 3 if "escape" reached anything.
#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <dirent.h>
#include <fcntl.h>
#include <kj/async-io.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "proto/control.capnp.h"
#include "shm/layout.hpp"

namespace {

using namespace shmstream;
using Clock = std::chrono::steady_clock;

int connect_unix(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::perror("hostile_reader: connect");
    std::exit(2);
  }
  return fd;
}

struct Opened {
  bool ok = false;
  std::string message;
  int segment_fd = -1;
  int page_fd = -1;
  capnp::Capability::Client reader{nullptr};
  capnp::Capability::Client page{nullptr};
};

Opened open_stream(kj::WaitScope& ws, proto::Control::Client& control, const std::string& name,
                   const std::string& cursor) {
  auto request = control.openRequest();
  request.setName(name);
  request.initOptions().setCursor(cursor);
  auto response = request.send().wait(ws);
  Opened out;
  out.ok = response.getStatus().getCode() == 0;
  out.message = response.getStatus().getMessage();
  if (!out.ok) return out;
  out.reader = response.getReader();
  out.page = response.getPage();
  out.segment_fd = out.reader.getFd().wait(ws).orDefault(-1);
  out.page_fd = out.page.getFd().wait(ws).orDefault(-1);
  return out;
}

void report(const char* what, bool refused) {
  std::printf("%s: %s\n", what, refused ? "refused" : "REACHED");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: hostile_reader SOCKET STREAM ATTACK MILLISECONDS\n");
    return 2;
  }
  const std::string socket_path = argv[1];
  const std::string name = argv[2];
  const std::string attack = argv[3];
  const auto duration = std::chrono::milliseconds(std::stol(argv[4]));

  auto io = kj::setupAsyncIo();
  auto stream = io.lowLevelProvider->wrapUnixSocketFd(connect_unix(socket_path),
                                                      kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP);
  capnp::TwoPartyVatNetwork network(*stream, 4, capnp::rpc::twoparty::Side::CLIENT);
  auto rpc = capnp::makeRpcClient(network);
  capnp::MallocMessageBuilder host_message;
  auto host = host_message.initRoot<capnp::rpc::twoparty::VatId>();
  host.setSide(capnp::rpc::twoparty::Side::SERVER);
  auto control = rpc.bootstrap(host).castAs<proto::Control>();

  std::vector<Opened> held;
  held.push_back(open_stream(io.waitScope, control, name, ""));
  Opened& me = held.back();
  if (!me.ok) {
    std::printf("open: %s\n", me.message.c_str());
    return 2;
  }
  auto* page = static_cast<shm::ReaderPage*>(
      mmap(nullptr, shm::kReaderPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, me.page_fd, 0));
  auto* header = static_cast<const shm::SegmentHeader*>(
      mmap(nullptr, shm::kHeaderSize, PROT_READ, MAP_SHARED, me.segment_fd, 0));
  if (page == MAP_FAILED || header == MAP_FAILED) {
    std::perror("hostile_reader: mmap");
    return 2;
  }
  std::mt19937_64 rng(42);
  const auto until = Clock::now() + duration;
  int status = 0;
  if (attack == "truncate") {
    report("truncate own page", ftruncate(me.page_fd, 0) != 0);
  } else if (attack == "grow") {
    report("grow own page", ftruncate(me.page_fd, 1 << 30) != 0);
  } else if (attack == "scribble") {
    auto* words = reinterpret_cast<uint64_t*>(page);
    while (Clock::now() < until) {
      for (size_t i = 0; i < shm::kReaderPageSize / 8; ++i) words[i] = rng();
    }
  } else if (attack == "storm") {
    while (Clock::now() < until) {
      for (auto& request : page->wake) {
        request.seen_word.store(header->wait_word.load(std::memory_order_relaxed));
        request.wanted.store(0);
      }
      page->space_seq.fetch_add(1);
    }
  } else if (attack == "hold") {
    while (Clock::now() < until) {
      page->position.store(0);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  } else if (attack == "escape") {
    bool all_refused = true;
    auto check = [&](const char* what, bool refused) {
      report(what, refused);
      all_refused = all_refused && refused;
    };
    check("truncate the segment", ftruncate(me.segment_fd, 0) != 0);
    check("write the segment", pwrite(me.segment_fd, "x", 1, 0) != 1);
    void* writable =
        mmap(nullptr, shm::kHeaderSize, PROT_READ | PROT_WRITE, MAP_SHARED, me.segment_fd, 0);
    check("map the segment writable", writable == MAP_FAILED);
    check("mprotect the segment writable", mprotect(const_cast<shm::SegmentHeader*>(header),
                                                    shm::kHeaderSize, PROT_READ | PROT_WRITE) != 0);
    // The side files beside the segment, by name: the reader table, other readers' pages.
    char link[64];
    char path[4096] = {};
    std::snprintf(link, sizeof(link), "/proc/self/fd/%d", me.segment_fd);
    ssize_t n = readlink(link, path, sizeof(path) - 1);
    std::string segment = n > 0 ? std::string(path, static_cast<size_t>(n)) : "";
    std::string dir = segment.substr(0, segment.rfind('/'));
    std::string base = segment.substr(segment.rfind('/') + 1);
    if (DIR* d = opendir(dir.c_str())) {
      while (dirent* e = readdir(d)) {
        std::string file = e->d_name;
        if (file.rfind(base + ".", 0) != 0) continue;
        std::string full = dir + "/" + file;
        int fd = open(full.c_str(), O_RDWR | O_NONBLOCK | O_CLOEXEC);
        check(("open " + file + " read-write").c_str(), fd < 0);
        if (fd >= 0) close(fd);
        fd = open(full.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        check(("open " + file + " read-only").c_str(), fd < 0);
        if (fd >= 0) close(fd);
      }
      closedir(d);
    }
    status = all_refused ? 0 : 3;
  } else if (attack == "exhaust") {
    for (int i = 0; i < 100000; ++i) {
      std::string cursor = i % 2 == 0 ? "" : "hog" + std::to_string(i);
      held.push_back(open_stream(io.waitScope, control, name, cursor));
      if (!held.back().ok) {
        std::printf("refused after %d more: %s\n", i, held.back().message.c_str());
        break;
      }
    }
  } else {
    std::fprintf(stderr, "hostile_reader: unknown attack %s\n", attack.c_str());
    return 2;
  }
  std::fflush(stdout);
  std::this_thread::sleep_until(until);
  return status;
}
