// The segment tests' fixture: a fresh segment, reader table and reader pages in memfds, in one
// process. The fixture plays the daemon: it claims slots and makes pages as the daemon does.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "shm/producer_core.hpp"
#include "shm/reader_core.hpp"

namespace shmstream::shm {

inline std::span<const std::byte> bytes_of(std::string_view s) {
  return std::as_bytes(std::span(s));
}
inline std::string text_of(std::span<const std::byte> b) {
  return std::string(reinterpret_cast<const char*>(b.data()), b.size());
}
inline Clock::time_point in(std::chrono::milliseconds ms) { return Clock::now() + ms; }

// A fresh segment in a memfd (nothing to clean up in /dev/shm).
class SegmentTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fd_ = memfd_create("segment_test", MFD_CLOEXEC);
    table_fd_ = memfd_create("segment_test.t", MFD_CLOEXEC);
  }
  void TearDown() override {
    close(fd_);
    close(table_fd_);
    for (auto& [number, fd] : page_fds_) close(fd);
  }

  void format(uint64_t max = kDefaultMaxDataSize) {
    SegmentParams params;
    params.max_data_size = max;
    format(params);
  }
  // `params` with this fixture's name, id and pid.
  void format(SegmentParams params) {
    params.name = "unit";
    params.stream_id = 42;
    params.producer_pid = static_cast<uint32_t>(getpid());
    Status s = format_segment(fd_, params);
    ASSERT_TRUE(s.ok()) << s.to_string();
    ASSERT_TRUE(format_reader_table(table_fd_, 42, kTableSlots).ok());
    table_ = ReaderTable::map(table_fd_, 42, Access::kReadWrite, "unit").value();
  }
  // The producer's view of the readers: the table read-only, pages opened as the fixture keeps
  // them (by number, as the producer opens files by name).
  ReaderSet reader_set() {
    int ro = open(("/proc/self/fd/" + std::to_string(table_fd_)).c_str(), O_RDONLY | O_CLOEXEC);
    auto table = ReaderTable::map(ro, 42, Access::kReadOnly, "unit");
    close(ro);
    return ReaderSet(
        std::move(table).value(),
        [this](uint64_t page) {
          auto found = page_fds_.find(page);
          return found == page_fds_.end() ? -1 : dup(found->second);
        },
        42);
  }
  ProducerCore producer() {
    return ProducerCore(Segment::map(fd_, Access::kReadWrite, MapExtent::kWhole, "unit").value(),
                        reader_set());
  }
  // A reader maps through a read-only fd, as the daemon hands out.
  Result<Segment> map_readonly() {
    int ro = open(("/proc/self/fd/" + std::to_string(fd_)).c_str(), O_RDONLY | O_CLOEXEC);
    auto segment = Segment::map(ro, Access::kReadOnly, MapExtent::kWhole, "stream \"unit\"");
    close(ro);
    return segment;
  }
  // A reader as the daemon lets them in: a slot holding `start` and a page of its own (a
  // blocking ring waits for its position; a producer wakes it through its page).
  ReaderCore reader(uint32_t* slot_out = nullptr, uint64_t start = 0) {
    return ReaderCore(map_readonly().value(), reader_page(slot_out, start));
  }
  std::unique_ptr<ReaderCore> new_reader(uint32_t* slot_out = nullptr) {
    return std::make_unique<ReaderCore>(map_readonly().value(), reader_page(slot_out, 0));
  }
  // What the daemon does for a new reader: a slot, and a page (returned mapped read-write).
  ReaderPageMap reader_page(uint32_t* slot_out, uint64_t start) {
    uint32_t slot =
        claim_slot(
            table_,
            SlotClaim{
                start, 0, static_cast<uint32_t>(getpid()), static_cast<uint32_t>(getuid()), 0, {}})
            .value();
    uint64_t number = next_page_++;
    int page_fd = memfd_create("segment_test.r", MFD_CLOEXEC);
    EXPECT_TRUE(format_reader_page(page_fd, 42, slot, number, start, 0).ok());
    page_fds_[number] = page_fd;
    pages_by_slot_[slot] = number;
    set_slot_reader(table_, raw_header(), slot, static_cast<uint32_t>(getpid()), number, start, 0);
    if (slot_out != nullptr) *slot_out = slot;
    return ReaderPageMap::map(page_fd, Access::kReadWrite, 42, slot, number, "unit").value();
  }
  ReaderCore slotted_reader(uint32_t* slot_out = nullptr) { return reader(slot_out); }
  // The daemon's side when a reader goes: its slot freed.
  void release(uint32_t slot) { release_slot(table_, raw_header(), slot); }
  // The page of the reader in `slot`, as its reader maps it.
  ReaderPage& page_of(uint32_t slot) {
    if (page_maps_.count(slot) == 0) {
      uint64_t number = pages_by_slot_.at(slot);
      page_maps_[slot] =
          ReaderPageMap::map(page_fds_.at(number), Access::kReadWrite, 42, slot, number, "unit")
              .value();
    }
    return page_maps_[slot].page();
  }
  uint32_t wait_word() { return raw_header().wait_word.load(); }
  SegmentHeader& raw_header() {
    if (raw_ == nullptr) {
      raw_ = mmap(nullptr, kHeaderSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    }
    return *static_cast<SegmentHeader*>(raw_);
  }
  void reseal() { raw_header().header_checksum = header_checksum(raw_header()); }

  static constexpr uint32_t kTableSlots = 256;
  int fd_ = -1;
  int table_fd_ = -1;
  ReaderTable table_;
  std::map<uint64_t, int> page_fds_;  // by page number
  std::map<uint32_t, uint64_t> pages_by_slot_;
  std::map<uint32_t, ReaderPageMap> page_maps_;
  uint64_t next_page_ = 1;
  void* raw_ = nullptr;
};

}  // namespace shmstream::shm
