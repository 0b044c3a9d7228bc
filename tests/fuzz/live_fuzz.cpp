// Fuzz target: a live segment, its reader table and a reader page, mutated while an in-process
// reader reads. The input is a program: each step either produces (appends bytes or a record,
// as an honest producer), or attacks (as a hostile owner or reader: writes any value into any
// shared field, truncates or grows the segment or the page), or reads (next, read_at, view,
// next_record, seek, commit, with deadlines already past, so nothing blocks). After every read:
// no crash, and every byte delivered lies inside the reader's own mapping.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "shm/producer_core.hpp"
#include "shm/reader_core.hpp"
#include "shm/reader_set.hpp"

using namespace shmstream;

namespace {

// Reads the program's bytes, returning zeros once it ran out.
class Program {
 public:
  Program(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return at_ >= size_; }
  uint8_t byte() { return at_ < size_ ? data_[at_++] : 0; }
  uint64_t word() {
    uint64_t out = 0;
    for (int i = 0; i < 8; ++i) out |= uint64_t{byte()} << (8 * i);
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

// A view the reader returned must lie inside its own mapping of the segment.
void check_inside(const shm::ReaderCore& reader, std::span<const std::byte> view) {
  if (view.empty()) return;
  auto mapping = reader.segment().mapping();
  if (!reader.segment().valid()) __builtin_trap();
  if (view.data() < mapping.data() || view.data() + view.size() > mapping.data() + mapping.size()) {
    __builtin_trap();  // a read outside the mapping
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Program program(data, size);
  // The stream's kind from the first byte: unbounded or a ring (drop-oldest or block), bytes
  // or records.
  const uint8_t kind = program.byte();
  shm::SegmentParams params;
  params.name = "live";
  params.stream_id = 11;
  params.max_data_size = 1 << 20;
  params.ring_capacity = (kind & 1) != 0 ? 16384 : 0;
  params.block_when_full = (kind & 3) == 3;
  params.records = (kind & 4) != 0;
  int fd = memfd_create("live-fuzz", MFD_CLOEXEC);
  int table_fd = memfd_create("live-fuzz.t", MFD_CLOEXEC);
  int page_fd = memfd_create("live-fuzz.r", MFD_CLOEXEC);
  if (fd < 0 || table_fd < 0 || page_fd < 0 || !shm::format_segment(fd, params).ok() ||
      !shm::format_reader_table(table_fd, 11, 4).ok() ||
      !shm::format_reader_page(page_fd, 11, 0, 1, 0, 0).ok()) {
    __builtin_trap();
  }
  {
    auto table = shm::ReaderTable::map(table_fd, 11, shm::Access::kReadWrite, "fuzz").value();
    auto claimed = shm::claim_slot(table, shm::SlotClaim{0, 0, 1, 1, 1, {}});
    if (!claimed.ok()) __builtin_trap();
  }
  // The attacker's own read-write views of every shared byte.
  auto* header = static_cast<std::byte*>(
      mmap(nullptr, shm::kHeaderSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  auto* page = static_cast<std::byte*>(
      mmap(nullptr, shm::kReaderPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, page_fd, 0));
  if (header == MAP_FAILED || page == MAP_FAILED) __builtin_trap();
  shm::FaultGuard header_guard(header, shm::kHeaderSize, PROT_READ | PROT_WRITE);
  shm::FaultGuard page_guard(page, shm::kReaderPageSize, PROT_READ | PROT_WRITE);
  {
    auto segment = shm::Segment::map(fd, shm::Access::kReadWrite, shm::MapExtent::kWhole, "fuzz");
    auto table = shm::ReaderTable::map(table_fd, 11, shm::Access::kReadOnly, "fuzz");
    if (!segment.ok() || !table.ok()) __builtin_trap();
    shm::ProducerCore producer(
        std::move(segment).value(),
        shm::ReaderSet(
            std::move(table).value(), [page_fd](uint64_t) { return dup(page_fd); }, 11));
    int ro = open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_RDONLY | O_CLOEXEC);
    auto reader_segment =
        shm::Segment::map(ro, shm::Access::kReadOnly, shm::MapExtent::kWhole, "fuzz");
    close(ro);
    auto reader_page = shm::ReaderPageMap::map(page_fd, shm::Access::kReadWrite, 11, 0, 1, "fuzz");
    if (!reader_segment.ok() || !reader_page.ok()) __builtin_trap();
    shm::ReaderCore reader(std::move(reader_segment).value(), std::move(reader_page).value(),
                           (kind & 8) != 0);
    const auto past = shm::Clock::now();  // every wait's deadline: nothing blocks
    std::byte buf[512];
    std::byte payload[2048] = {};
    for (int step = 0; step < 512 && !program.done(); ++step) {
      const uint8_t op = program.byte();
      switch (op % 12) {
        case 0: {  // produce bytes
          size_t n = program.byte() * 8u;
          if (params.records) {
            (void)producer.publish(std::span(payload, n), past, nullptr);
          } else {
            (void)producer.append(std::span(payload, n), past, nullptr);
          }
          break;
        }
        case 1: {  // hostile owner: any value into a mutable header line (128..320)
          size_t offset = 128 + (program.byte() % 24) * 8;
          uint64_t value = program.word();
          std::memcpy(header + offset, &value, sizeof(value));
          break;
        }
        case 2: {  // hostile owner: any byte of the header, identity included
          size_t offset = program.word() % shm::kHeaderSize;
          header[offset] = static_cast<std::byte>(program.byte());
          break;
        }
        case 3:  // hostile owner: shrink or grow the segment
          (void)ftruncate(fd, static_cast<off_t>(program.word() % (shm::kHeaderSize + (1 << 20))));
          break;
        case 4: {  // hostile reader: any value into its page
          size_t offset = (program.byte() % 48) * 8;
          uint64_t value = program.word();
          std::memcpy(page + offset, &value, sizeof(value));
          break;
        }
        case 5:  // hostile reader: shrink or grow its page
          (void)ftruncate(page_fd, static_cast<off_t>(program.word() % 8192));
          break;
        case 6:
          if (auto view = reader.next(program.byte() * 64u + 1, past, nullptr); view.ok()) {
            check_inside(reader, *view);
          }
          break;
        case 7:
          (void)reader.read_at(program.word() % (1 << 21), buf, past, nullptr);
          break;
        case 8:
          if (auto view = reader.view(program.word() % (1 << 21), program.byte() * 16u);
              view.ok()) {
            check_inside(reader, *view);
          }
          break;
        case 9:
          if (auto record = reader.next_record(past, nullptr); record.ok() && *record) {
            check_inside(reader, (*record)->data);
          }
          break;
        case 10:
          (void)reader.seek(static_cast<int64_t>(program.word() % (1 << 21)), shm::Whence::kStart);
          break;
        case 11:
          (void)reader.commit(program.word() % (1 << 21), program.word());
          break;
      }
    }
    (void)producer.close();
  }
  header_guard.reset();
  page_guard.reset();
  munmap(header, shm::kHeaderSize);
  munmap(page, shm::kReaderPageSize);
  close(fd);
  close(table_fd);
  close(page_fd);
  return 0;
}
