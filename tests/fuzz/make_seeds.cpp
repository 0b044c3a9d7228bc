// make_seeds — writes the fuzz targets' seed corpus (tests/fuzz/corpus/), so that the fuzzers
// start from inputs that pass validation and then mutate their way into the corners:
//   segment/  whole segment files: byte and records streams, rings that wrapped, ended states
//   control/  control-socket sessions: the Cap'n Proto RPC messages a client sends (bootstrap,
//             then calls of every Control method on it)
//
//   make_seeds OUTDIR
#include <capnp/message.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "proto/control.capnp.h"
#include "shm/producer_core.hpp"
#include "support/rpc_session.hpp"

using namespace shmstream;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "make_seeds: %s\n", what.c_str());
  std::exit(1);
}

void save(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) die("writing " + path.string());
}

// A segment made by the real producer, `fill` writing into it; returns the file's bytes.
std::string segment_file(const shm::SegmentParams& params,
                         const std::function<void(shm::ProducerCore&)>& fill) {
  int fd = memfd_create("seed", MFD_CLOEXEC);
  if (!shm::format_segment(fd, params).ok()) die("formatting a segment");
  {
    auto segment = shm::Segment::map(fd, shm::Access::kReadWrite, shm::MapExtent::kWhole, "seed");
    if (!segment.ok()) die("mapping a segment");
    shm::ProducerCore producer(std::move(segment.value()), shm::ReaderSet());  // no readers
    fill(producer);
  }
  std::string bytes(static_cast<size_t>(lseek(fd, 0, SEEK_END)), '\0');
  if (pread(fd, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    die("reading a segment");
  }
  close(fd);
  return bytes;
}

std::span<const std::byte> text(const std::string& s) { return std::as_bytes(std::span(s)); }

void segment_seeds(const std::filesystem::path& dir) {
  shm::SegmentParams p;
  p.name = "seed";
  p.stream_id = 42;
  p.producer_pid = 1;
  p.max_data_size = 8192;  // small files: the fuzzer mutates all of it
  save(dir / "bytes-closed", segment_file(p, [](shm::ProducerCore& w) {
         (void)w.append(text(std::string(3000, 'b')));
         (void)w.close();
       }));
  save(dir / "bytes-open-empty", segment_file(p, [](shm::ProducerCore&) {}));
  p.records = true;
  save(dir / "records-open", segment_file(p, [](shm::ProducerCore& w) {
         for (const char* r : {"", "one", "a record of some length, longer than a line"}) {
           (void)w.publish(text(r));
         }
       }));
  save(dir / "records-aborted", segment_file(p, [](shm::ProducerCore& w) {
         (void)w.publish(text(std::string(100, 'r')));
         (void)w.abort(AbortReason::because("seed"));
       }));
  p.ring_capacity = 4096;
  save(dir / "records-ring-wrapped", segment_file(p, [](shm::ProducerCore& w) {
         for (int i = 0; i < 200; ++i) (void)w.publish(text("record " + std::to_string(i)));
         (void)w.close();
       }));
  p.records = false;
  p.block_when_full = true;
  save(dir / "bytes-block-ring",
       segment_file(p, [](shm::ProducerCore& w) { (void)w.append(text(std::string(2048, 'k'))); }));
}

// One control session: the bootstrap, then `calls` on the bootstrap capability.
using Call = test::RpcCall;
std::string session(const std::vector<Call>& calls) { return test::rpc_session(calls); }

void control_seeds(const std::filesystem::path& dir) {
  auto create = [](const char* name, proto::Retention retention, uint64_t ring, bool records) {
    return Call{0, [=](capnp::AnyPointer::Builder p) {
                  auto params = p.initAs<proto::Control::CreateParams>();
                  params.setName(name);
                  auto options = params.initOptions();
                  options.setRetention(retention);
                  options.setRingCapacity(ring);
                  options.setRecords(records);
                  options.setMaxReaders(2);
                }};
  };
  auto open = [](const char* name, const char* cursor) {
    return Call{1, [=](capnp::AnyPointer::Builder p) {
                  auto params = p.initAs<proto::Control::OpenParams>();
                  params.setName(name);
                  params.initOptions().setCursor(cursor);
                }};
  };
  Call list{2, [](capnp::AnyPointer::Builder p) { p.initAs<proto::Control::ListParams>(); }};
  auto stat = [](const char* name) {
    return Call{3, [=](capnp::AnyPointer::Builder p) {
                  p.initAs<proto::Control::StatParams>().setName(name);
                }};
  };
  auto remove = [](const char* name, bool force) {
    return Call{4, [=](capnp::AnyPointer::Builder p) {
                  auto params = p.initAs<proto::Control::RemoveParams>();
                  params.setName(name);
                  params.setForce(force);
                }};
  };
  auto remove_cursor = [](const char* name, const char* cursor) {
    return Call{5, [=](capnp::AnyPointer::Builder p) {
                  auto params = p.initAs<proto::Control::RemoveCursorParams>();
                  params.setName(name);
                  params.setCursor(cursor);
                }};
  };
  auto reattach_producer = [](const char* name, uint64_t id) {
    return Call{6, [=](capnp::AnyPointer::Builder p) {
                  auto params = p.initAs<proto::Control::ReattachProducerParams>();
                  params.setName(name);
                  params.setStreamId(id);
                }};
  };
  auto reattach_reader = [](const char* name, uint64_t id, uint32_t slot) {
    return Call{7, [=](capnp::AnyPointer::Builder p) {
                  auto params = p.initAs<proto::Control::ReattachReaderParams>();
                  params.setName(name);
                  params.setStreamId(id);
                  params.setSlot(slot);
                }};
  };
  auto resume = [](const char* name) {
    return Call{8, [=](capnp::AnyPointer::Builder p) {
                  p.initAs<proto::Control::ResumeParams>().setName(name);
                }};
  };
  auto create_graced = [](const char* name, uint32_t grace_ms, uint64_t origin) {
    return Call{0, [=](capnp::AnyPointer::Builder p) {
                  auto params = p.initAs<proto::Control::CreateParams>();
                  params.setName(name);
                  params.initOptions().setResumeGraceMs(grace_ms);
                  params.getOptions().setOrigin(origin);
                }};
  };
  save(dir / "bootstrap-only", session({}));
  // Resuming a stream whose producer lives (this very session), one without a grace, none; a
  // grace past the limit.
  save(dir / "resume",
       session({create_graced("g", 60000, 1000), resume("g"),
                create("p", proto::Retention::UNBOUNDED, 0, false), resume("p"), resume("nope"),
                create_graced("x", 4000000000u, ~0ull), stat("g")}));
  save(dir / "list", session({list}));
  save(dir / "create-open-stat-list", session({create("s", proto::Retention::UNBOUNDED, 0, false),
                                               open("s", ""), stat("s"), list}));
  save(dir / "ring-records-cursor",
       session({create("r", proto::Retention::DROP_OLDEST, 65536, true), open("r", "c1"),
                open("r", "c1"), remove_cursor("r", "c1"), remove("r", true)}));
  save(dir / "block-ring-remove",
       session({create("b", proto::Retention::BLOCK, 4096, false), open("b", ""), open("b", ""),
                open("b", ""), remove("b", false), stat("b")}));
  // Reattaching what the caller never held: refused, whatever the ids.
  save(dir / "reattach-foreign",
       session({create("m", proto::Retention::UNBOUNDED, 0, false), reattach_producer("m", 1),
                reattach_reader("m", 1, 0), reattach_reader("m", 0, 4000000000u),
                reattach_producer("nope", 0)}));
  // Modes: each of them, and one past the last.
  auto create_with_mode = [](const char* name, uint16_t mode) {
    return Call{0, [=](capnp::AnyPointer::Builder p) {
                  auto params = p.initAs<proto::Control::CreateParams>();
                  params.setName(name);
                  params.initOptions().setMode(static_cast<proto::Mode>(mode));
                }};
  };
  save(dir / "modes", session({create_with_mode("o", 0), create_with_mode("g", 1),
                               create_with_mode("e", 2), create_with_mode("x", 3), list}));
  save(dir / "bad-names", session({create("", proto::Retention::UNBOUNDED, 0, false),
                                   open("../etc", ""), stat("a/b"), open("s", "bad cursor")}));
}

}  // namespace

// Programs for live_fuzz (see there): a kind byte, then operations. Each seed starts the fuzzer
// at one attack: a length past the ring, a shrunk file, a scribbled page, records.
void live_seeds(const std::filesystem::path& dir) {
  auto program = [](std::initializer_list<uint8_t> bytes) {
    return std::string(bytes.begin(), bytes.end());
  };
  const uint8_t kAppend = 0, kHeaderWord = 1, kTruncate = 3, kPageWord = 4, kPageTruncate = 5,
                kNext = 6, kReadAt = 7, kView = 8, kRecord = 9;
  save(dir / "bytes-read", program({0, kAppend, 100,   kNext, 255, kReadAt, 0, 0, 0, 0, 0, 0,
                                    0, 0,       kView, 0,     0,   0,       0, 0, 0, 0, 0, 50}));
  // Ring: committed_length (offset 128 = line 0 of the mutable lines) set past the ring.
  save(dir / "ring-length-lie",
       program({1, kAppend, 200, kHeaderWord, 0, 0, 0, 0x98, 0, 0, 0, 0, 0, kNext, 255}));
  save(dir / "shrunk-under-reader",
       program({0, kAppend, 255, kNext,   1, kTruncate, 0x10, 0x10, 0, 0, 0, 0, 0,
                0, kNext,   255, kReadAt, 0, 0x20,      0,    0,    0, 0, 0, 0}));
  save(
      dir / "block-page-scribble",
      program(
          {3,   kAppend,       255, kPageWord, 16,   0,    0,    0,    0,    0,    0,       0,
           0,   kPageWord,     8,   0xff,      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,    kAppend,
           255, kPageTruncate, 0,   0,         0,    0,    0,    0,    0,    0,    kAppend, 255}));
  save(dir / "records-garbage-state",
       program({4, kAppend, 10, kRecord, kHeaderWord, 8, 77, 0, 0, 0, 0, 0, 0, 0, kRecord}));
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds OUTDIR\n");
    return 2;
  }
  std::filesystem::path out = argv[1];
  std::filesystem::create_directories(out / "segment");
  std::filesystem::create_directories(out / "control");
  std::filesystem::create_directories(out / "live");
  live_seeds(out / "live");
  segment_seeds(out / "segment");
  control_seeds(out / "control");
  return 0;
}
