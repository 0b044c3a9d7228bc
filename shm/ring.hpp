// shm/ring.hpp — where a stream offset lives in a segment's data: the index arithmetic that the
// producer core and the reader core share.
//
// Taken once, from a validated header, and kept in private memory: a value another process
// rewrites in the shared header later never changes it.
//
// A plain value: safe to copy; const methods are safe from any thread.
#pragma once

#include <algorithm>
#include <cstdint>

namespace shmstream::shm {

class RingGeometry {
 public:
  RingGeometry() = default;
  // `capacity` 0: an unbounded stream (offset o is at index o).
  explicit RingGeometry(uint64_t capacity)
      : capacity_(capacity),
        mask_(capacity != 0 && (capacity & (capacity - 1)) == 0 ? capacity - 1 : 0),
        step_(std::max<uint64_t>(capacity / 16, 1)) {}

  bool is_ring() const { return capacity_ != 0; }
  uint64_t capacity() const { return capacity_; }
  // Where offset `offset` lives, from the start of the data. Any range of up to capacity()
  // bytes from there is contiguous (the data is mapped twice, see layout.hpp).
  uint64_t index(uint64_t offset) const {
    return capacity_ == 0 ? offset : mask_ != 0 ? offset & mask_ : offset % capacity_;
  }
  // oldest_offset advances, and readers publish their positions, in steps of this many bytes.
  uint64_t step() const { return step_; }

 private:
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;  // capacity_ - 1 if it is a power of two (offset % c == offset & mask_)
  uint64_t step_ = 1;
};

}  // namespace shmstream::shm
