// The floor of any shared-memory transport on this machine, measured in the same run as
// shmstream: a ring in memory shared by forked processes, written by one and read by the
// others with nothing but a release store of each side's position and acquire loads of the
// other's. No daemon, no files, no checks, no sleeping (a party with nothing to do spins, then
// yields its CPU). shmstream / floor is what the library costs; floor / memcpy is what moving
// the bytes from one core to another costs on this machine, which no library can avoid.
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <vector>

#include "bench/harness.hpp"

namespace shmstream::bench {
namespace {

constexpr int kMaxFloorReaders = 8;

// Each position on its own cache line (the producer's is read by every reader, each reader's
// only by the producer when it runs out of space).
struct alignas(64) FloorPosition {
  std::atomic<uint64_t> bytes{0};
};

struct FloorShared {
  FloorPosition head;                     // bytes the producer has published
  FloorPosition tails[kMaxFloorReaders];  // bytes each reader is done with
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// Spin a little, then give the CPU away: five parties on two CPUs must share them.
inline void relax(unsigned* spins) {
  if (++*spins < 256) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    sched_yield();
  }
}

// The ring: FloorShared on its own page, then `capacity` bytes, mapped before the fork.
class FloorRing {
 public:
  explicit FloorRing(size_t capacity) : capacity_(capacity) {
    void* p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    base_ = static_cast<std::byte*>(p);
    shared_ = new (base_) FloorShared;
    std::memset(data(), 0, capacity_);  // pre-faulted, like the stream's populated ring
  }
  ~FloorRing() { munmap(base_, bytes()); }
  FloorRing(const FloorRing&) = delete;
  FloorRing& operator=(const FloorRing&) = delete;

  size_t capacity() const { return capacity_; }
  std::byte* data() const { return base_ + kPage; }
  FloorShared& shared() const { return *shared_; }

  // The producer may reuse bytes before the slowest reader's tail.
  uint64_t slowest(int readers) const {
    uint64_t out = UINT64_MAX;
    for (int i = 0; i < readers; ++i) {
      // Acquire: pairs with the reader's release store after it consumed; the producer
      // overwrites those bytes only after this load.
      out = std::min(out, shared_->tails[i].bytes.load(std::memory_order_acquire));
    }
    return out;
  }

 private:
  static constexpr size_t kPage = 4096;
  size_t bytes() const { return kPage + capacity_; }
  size_t capacity_;
  std::byte* base_;
  FloorShared* shared_;
};

// Waits until `needed` more bytes fit before the slowest reader; returns the new cached tail.
uint64_t floor_make_room(const FloorRing& ring, int readers, uint64_t head, uint64_t needed,
                         uint64_t tail) {
  unsigned spins = 0;
  while (head + needed - tail > ring.capacity()) {
    tail = ring.slowest(readers);
    if (head + needed - tail <= ring.capacity()) break;
    relax(&spins);
  }
  return tail;
}

// Waits until the producer has published past `position`; returns what it published.
uint64_t floor_await(const FloorRing& ring, uint64_t position) {
  unsigned spins = 0;
  for (;;) {
    // Acquire: pairs with the producer's release store of head; the bytes before it are written.
    uint64_t head = ring.shared().head.bytes.load(std::memory_order_acquire);
    if (head > position) return head;
    relax(&spins);
  }
}

}  // namespace

double floor_fanout(const Options& o, int readers) {
  if (readers > kMaxFloorReaders) die("floor_fanout: too many readers");
  FloorRing ring(o.ring != 0 ? o.ring : 4 << 20);
  if (o.chunk > ring.capacity()) die("floor_fanout: the chunk is larger than the ring");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    uint64_t head = 0, tail = 0;
    for (uint64_t off = 0; off < o.bytes; off += o.chunk) {
      auto src = chunk_at(off, o.chunk);
      tail = floor_make_room(ring, readers, head, src.size(), tail);
      size_t at = head % ring.capacity();
      size_t first = std::min(src.size(), ring.capacity() - at);
      std::memcpy(ring.data() + at, src.data(), first);
      std::memcpy(ring.data(), src.data() + first, src.size() - first);
      head += src.size();
      // Release: publishes the bytes just copied; pairs with floor_await()'s acquire load.
      ring.shared().head.bytes.store(head, std::memory_order_release);
    }
    return 0.0;
  });
  for (int i = 0; i < readers; ++i) {
    bodies.push_back([&, i](int go_fd) {
      ready_and_wait(go_fd);
      uint64_t mine = 0, head = 0, acc = 0;
      while (mine < o.bytes) {
        if (head == mine) head = floor_await(ring, mine);
        size_t at = mine % ring.capacity();
        size_t n = std::min<uint64_t>({head - mine, ring.capacity() - at, 1 << 20});
        acc = consume(ring.data() + at, n, acc);
        mine += n;
        // Release: the bytes are consumed; pairs with slowest()'s acquire load.
        ring.shared().tails[i].bytes.store(mine, std::memory_order_release);
      }
      return static_cast<double>(acc & 0xffff);
    });
  }
  RunResult r = run_parties(bodies);
  return gbps(o.bytes, r.seconds);
}

double floor_records(const Options& o, uint64_t count, size_t record_bytes) {
  // The stream's framing: an 8-byte header (length, ~length), the payload, padded to 64 bytes.
  const size_t frame = (8 + record_bytes + 63) & ~size_t{63};
  FloorRing ring(o.ring != 0 ? o.ring : 4 << 20);
  if (ring.capacity() % frame != 0) die("floor_records: frames must divide the ring");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    uint64_t head = 0, tail = 0;
    for (uint64_t i = 0; i < count; ++i) {
      auto payload = chunk_at(i * record_bytes, record_bytes);
      tail = floor_make_room(ring, 1, head, frame, tail);
      std::byte* at = ring.data() + head % ring.capacity();
      uint32_t header[2] = {static_cast<uint32_t>(record_bytes), ~uint32_t(record_bytes)};
      std::memcpy(at, header, sizeof(header));
      std::memcpy(at + sizeof(header), payload.data(), payload.size());
      head += frame;
      // Release: publishes the record; pairs with floor_await()'s acquire load.
      ring.shared().head.bytes.store(head, std::memory_order_release);
    }
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    ready_and_wait(go_fd);
    uint64_t mine = 0, head = 0, acc = 0, seen = 0;
    while (seen < count) {
      if (head == mine) head = floor_await(ring, mine);
      const std::byte* at = ring.data() + mine % ring.capacity();
      uint32_t header[2];
      std::memcpy(header, at, sizeof(header));
      if (header[1] != ~header[0] || header[0] != record_bytes) die("floor_records: torn frame");
      acc = consume(at + sizeof(header), header[0], acc);
      mine += frame;
      ++seen;
      // Release: the record is consumed; pairs with slowest()'s acquire load.
      ring.shared().tails[0].bytes.store(mine, std::memory_order_release);
    }
    return static_cast<double>(acc & 0xffff);
  });
  RunResult r = run_parties(bodies);
  return static_cast<double>(count) / r.seconds;
}

}  // namespace shmstream::bench
