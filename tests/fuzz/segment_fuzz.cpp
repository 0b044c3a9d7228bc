// segment_fuzz — libFuzzer target: a reader opening a segment file of arbitrary content.
//
// The input is the whole file (header, then data). Segment::map must refuse what does not
// validate, with an error, and a reader of what does validate must never crash, hang or read
// outside the file, whatever the committed length, ring geometry, state or record frames say.
// The file cannot change under the reader here (that is the producer's side of the trust
// model); what a hostile *live* producer can do is issue 5's threat model.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include "shm/reader_core.hpp"

using namespace shmstream;

namespace {

int memfd_with(const uint8_t* data, size_t size) {
  int fd = memfd_create("segment-fuzz", MFD_CLOEXEC);
  if (fd < 0) __builtin_trap();
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) __builtin_trap();
    done += static_cast<size_t>(n);
  }
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = memfd_with(data, size);
  auto segment = shm::Segment::map(fd, shm::Access::kReadOnly, shm::MapExtent::kWhole, "fuzz");
  ::close(fd);  // the mapping stays valid
  if (!segment.ok()) return 0;
  // No reader page: it never sleeps here (every wait has a deadline in the past).
  const bool records = segment->records();
  shm::ReaderCore reader(std::move(segment.value()));
  const auto now = shm::Clock::now();
  uint64_t sum = 0;
  for (int i = 0; i < 256; ++i) {
    if (records) {
      auto record = reader.next_record(now, nullptr);
      if (!record.ok() || !*record) break;
      for (std::byte b : (*record)->data) sum += static_cast<uint8_t>(b);
      (void)reader.intact((*record)->offset);
    } else {
      auto view = reader.next(4096, now, nullptr);
      if (!view.ok() || view->empty()) break;
      for (std::byte b : *view) sum += static_cast<uint8_t>(b);
    }
  }
  // Random access too: views and reads at and around the committed end.
  const uint64_t committed = reader.committed();
  for (uint64_t offset :
       {uint64_t{0}, committed / 2, committed > 0 ? committed - 1 : 0, committed}) {
    (void)reader.view(offset, 1);
    std::byte buf[64];
    (void)reader.read_at(offset, buf, now, nullptr);
  }
  (void)reader.seek(0, shm::Whence::kEnd);
  asm volatile("" : : "g"(sum) : "memory");  // keep the reads
  return 0;
}
