// The segment tests' fixture: a fresh segment and wait file in memfds, in one process.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
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
    wait_fd_ = memfd_create("segment_test.w", MFD_CLOEXEC);
  }
  void TearDown() override {
    close(fd_);
    close(wait_fd_);
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
    ASSERT_TRUE(format_wait_file(wait_fd_, 42, kDefaultMaxReaders).ok());
  }
  WaitFile wait_page() { return WaitFile::map(wait_fd_, 42, "unit").value(); }
  ProducerCore producer() {
    return ProducerCore(Segment::map(fd_, Access::kReadWrite, MapExtent::kWhole, "unit").value(),
                        wait_page());
  }
  // A reader maps through a read-only fd, as the daemon hands out.
  Result<Segment> map_readonly() {
    int ro = open(("/proc/self/fd/" + std::to_string(fd_)).c_str(), O_RDONLY | O_CLOEXEC);
    auto segment = Segment::map(ro, Access::kReadOnly, MapExtent::kWhole, "stream \"unit\"");
    close(ro);
    return segment;
  }
  ReaderCore reader() { return ReaderCore(map_readonly().value(), wait_page()); }
  // A reader with a slot, as the daemon opens them (a blocking ring waits for its position).
  ReaderCore slotted_reader(uint32_t* slot_out = nullptr) {
    WaitFile wait = wait_page();
    uint32_t slot = claim_reader_slot(wait, 0, static_cast<uint32_t>(getpid()), getuid()).value();
    if (slot_out != nullptr) *slot_out = slot;
    return ReaderCore(map_readonly().value(), std::move(wait), static_cast<int>(slot));
  }
  uint32_t wait_word() { return raw_header().wait_word.load(); }
  SegmentHeader& raw_header() {
    if (raw_ == nullptr) {
      raw_ = mmap(nullptr, kHeaderSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    }
    return *static_cast<SegmentHeader*>(raw_);
  }
  void reseal() { raw_header().header_checksum = header_checksum(raw_header()); }

  int fd_ = -1;
  int wait_fd_ = -1;
  void* raw_ = nullptr;
};

}  // namespace shmstream::shm
