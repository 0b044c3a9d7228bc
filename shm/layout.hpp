// shm/layout.hpp — the segment layout: the one place it is written down.
//
// A segment is one file (in /dev/shm, or a directory for persistent streams) holding a 4 KiB
// header followed by the data region. The producer maps it read-write; readers map it
// read-only (their fd is opened O_RDONLY, so they cannot write it even with mprotect).
//
//   +----------------------------+ 0
//   | header (SegmentHeader)     |   immutable identity | checksum | producer hot line |
//   |                            |   lifecycle line | name
//   +----------------------------+ 4096 = kHeaderSize
//   | data                       |   unbounded: stream offset o is at data + o; the file grows
//   |                            |   (fallocate) as the producer appends; mappings reserve
//   |                            |   max_data_size up front (MAP_NORESERVE).
//   |                            |   ring: ring_capacity bytes, allocated at creation; offset o
//   |                            |   is at data + o % ring_capacity, and every mapping maps the
//   |                            |   data twice, back to back, so that any range of up to
//   |                            |   ring_capacity bytes is contiguous in memory.
//   +----------------------------+ kHeaderSize + data_file_size
//
// Header fields (offset, size, writer, ordering):
//   0   8  magic            creator, before the segment is handed out  plain (see below)
//   8   4  layout_version   creator                                    plain
//   12  4  header_size      creator                                    plain
//   16  8  max_data_size    creator: mapping reservation, stream limit plain
//   24  8  ring_capacity    creator: 0 = unbounded, else a ring of     plain
//                           this many bytes (a multiple of 4096)
//   32  8  stream_id        creator: random, also the file name suffix plain
//   40  8  created_unix_ns  creator                                    plain
//   48  4  producer_pid     creator (daemon, from SO_PEERCRED)         plain
//   52  4  producer_uid     creator (daemon, from SO_PEERCRED)         plain
//   56  4  name_length      creator                                    plain
//   60  4  flags            creator: kFlagRecords, kFlagBlockWhenFull  plain
//   64  8  header_checksum  creator: FNV-1a of [0,64) and the name     plain
//   72  16 boot_id          creator: the kernel's boot id when it was  plain
//                           created (producer_pid means nothing after a reboot)
//   128 8  committed_length producer                release store / reader acquire load
//   136 4  wait_word        producer, daemon        fetch_add(release) before a wake-up of
//                                                   readers; readers FUTEX_WAIT on it
//   140 4  light_producer   producer: 1 while its commits use a light barrier (see
//                           min_wanted). Set (relaxed store, then a seq_cst fence) after 64
//                           commits in a row woke nobody; cleared (seq_cst fence, then a
//                           release store) when a commit wakes a reader within 64 commits of
//                           the previous wake-up. Readers acquire-
//                           load it after their fence: 0 means the producer fences.
//   192 4  state            producer, daemon        CAS (acq_rel) / reader acquire load
//   196 4  resumed_pid      daemon: the pid of the producer that resumed the stream after its
//                           predecessor died (Control.resume); 0 while the creator produces.
//                           Relaxed: names the producer for the daemon and in messages only
//   200 8  oldest_offset    producer (rings)        relaxed store then a release fence, before
//                           overwriting the bytes below it; readers read bytes, then an acquire
//                           fence, then load it: bytes read below it may be overwritten (a
//                           seqlock). Advances in steps of ring_capacity / 16, so that it
//                           changes rarely and readers' loads of it hit their cache.
//   208 8  data_file_size   producer                release store after the file grew
//   216 8  origin_offset    creator: the offset, in the stream it republishes (bridge in), of
//                           this stream's offset 0; 0 otherwise. Plain, like the identity.
//   224 4  resume_grace_ms  creator: how long the stream stays open for a successor after its
//                           producer died (Control.resume); 0 = abort at once. Plain.
//   (resumed_pid, origin_offset and resume_grace_ms came within v4: older v4 segments hold
//   zero there, which means what it meant before.)
//   256 256 name            creator                 plain, NUL-padded
//
// The plain (immutable) fields are written before the creator passes the fd to anyone; the
// fd's passage over the control socket orders those writes before any other process's reads.
//
// Records (kFlagRecords): the data is a sequence of frames, each a RecordHeader (u32 length,
// u32 check = ~length) then the payload, padded to a multiple of 64 bytes (a cache line: a
// reader reading a fresh record never holds a line the producer is still filling, which
// otherwise halves the rate of small records; payloads up to 56 bytes take one line).
// committed_length only ever advances by whole frames, so a committed frame is never torn.
//
// Beside each segment lives its wait file, "<segment file>.w", which readers map read-write
// (the segment itself they map read-only): a control page, then one slot per reader.
//
//   0   8  magic            creator                                    plain
//   8   4  layout_version   creator                                    plain
//   12  4  max_readers      creator: the number of slots               plain
//   16  8  stream_id        creator: the segment's                     plain
//   64  8  min_wanted       readers: CAS to min(min_wanted, the offset they will sleep for),
//                           then a seq_cst fence, then re-check committed_length, then sleep.
//                           producer: after storing committed_length, a seq_cst fence, then a
//                           load; if min_wanted <= committed_length, exchange it to kNobody,
//                           bump wait_word and wake. (Dekker: either the reader sees the new
//                           length or the producer sees the reader's offset.)
//                           A light_producer replaces its fence by a compiler barrier, and
//                           a reader that sees the flag adds a membarrier(GLOBAL_EXPEDITED)
//                           after its fence (asymmetric Dekker, futex.hpp): a streaming commit
//                           then costs no fence, which would stall on the cache line the reader
//                           keeps reading. A reader that cannot issue it sleeps at most 1 ms at
//                           a time instead. Readers that sleep between most commits turn the
//                           producer back to fences: their barriers would delay their wake-ups.
//   128 8  space_wanted     producer of a kFlagBlockWhenFull ring: the offset every reader slot
//                           must reach before it may overwrite; kNobody when it does not wait.
//                           Stored, then a seq_cst fence, then the slots are re-scanned. A
//                           reader that moves its slot from below to at/above it (slot store,
//                           seq_cst fence, load: Dekker) bumps space_word and wakes it.
//   136 4  space_word       the futex the waiting producer sleeps on (with wait_word)
//   140 4  slots_in_use_hint daemon: 1 + the highest slot index handed out (scan bound)
//   4096 + 128 i: ReaderSlot i
//     0  8  position        reader: release store of the offset below which it needs no bytes
//                           (published lazily, every ring_capacity / 16 bytes and before it
//                           sleeps; a named cursor publishes only its committed position);
//                           producer: acquire load when it needs room
//     8  4  in_use          daemon: position first, then release store of 1 on open; 0 when
//                           the reader goes away (then a space_word wake-up). A named
//                           cursor's slot stays in use while no reader holds it.
//     12 4  pid             daemon: the reader's pid (0: a cursor nobody holds), for display
//     16 4  cursor          daemon: 1 for a named cursor's slot
//     20 4  commit_seq      reader: committed[commit_seq & 1] is the cursor's committed
//                           position and token. A commit writes the other entry (relaxed),
//                           then release-stores commit_seq + 1, then stores position: a
//                           crash at any point leaves one whole entry current.
//     24 16 committed[0]    {position, token}
//     40 16 committed[1]
//     56 1  name_length     daemon: the cursor's name, up to 64 bytes
//     57 64 name
//
// Ending a stream (close, abort, cancel) always wakes every reader, whatever min_wanted says,
// and a producer waiting for room (it also sleeps on wait_word).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace shmstream::shm {

inline constexpr uint64_t kMagic = 0x004D5254534D4853ULL;  // "SHMSTRM\0", little-endian
// Bump on any change to this file's layouts or to the meaning of a field.
// v2: wait page; the producer wakes readers only when one sleeps for what it committed.
// v3: rings (drop-oldest or block), records, reader slots in the wait file, light producers.
// v4: 128-byte reader slots carrying named cursors; boot_id in the header.
inline constexpr uint32_t kLayoutVersion = 4;
inline constexpr uint32_t kHeaderSize = 4096;
inline constexpr uint32_t kMaxNameLength = 255;
inline constexpr size_t kCacheLine = 64;

// Lifecycle of a stream, in SegmentHeader::state. Only kOpen ever changes; kCancelled may
// also replace kClosed or kAborted (a forced removal ends every reader at once).
// SegmentHeader::flags.
inline constexpr uint32_t kFlagRecords = 1;        // the data is framed records
inline constexpr uint32_t kFlagBlockWhenFull = 2;  // ring: the producer waits for slow readers
inline constexpr uint32_t kKnownFlags = kFlagRecords | kFlagBlockWhenFull;

// Frame of one record in a kFlagRecords stream; the payload follows, padded to 64 bytes.
struct RecordHeader {
  uint32_t length;
  uint32_t check;  // ~length: a frame boundary that is not one is detected as corrupt
};
static_assert(sizeof(RecordHeader) == 8);
inline constexpr uint64_t record_frame_size(uint64_t length) {
  return (sizeof(RecordHeader) + length + kCacheLine - 1) & ~uint64_t{kCacheLine - 1};
}
inline constexpr uint64_t kMaxRecordLength = 0xFFFFFFF0u;

enum class StreamState : uint32_t {
  kOpen = 1,       // the producer may append
  kClosed = 2,     // the producer closed it: a clean end at committed_length
  kAborted = 3,    // the producer died (or went away) without closing
  kCancelled = 4,  // removed by force: every reader gets kCancelled, even on committed bytes
};

struct alignas(kCacheLine) SegmentHeader {
  // Identity: written once by the creator, covered by header_checksum.
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_size;
  uint64_t max_data_size;
  uint64_t ring_capacity;
  uint64_t stream_id;
  uint64_t created_unix_ns;
  uint32_t producer_pid;
  uint32_t producer_uid;
  uint32_t name_length;
  uint32_t flags;

  uint64_t header_checksum;
  std::byte boot_id[16];
  std::byte pad1_[kCacheLine - 24];

  // Producer's hot line: written on every commit, read by every reader.
  std::atomic<uint64_t> committed_length;
  std::atomic<uint32_t> wait_word;
  std::atomic<uint32_t> light_producer;
  std::byte pad2_[kCacheLine - 16];

  // Lifecycle line: written rarely (close, abort, cancel, file growth).
  std::atomic<uint32_t> state;
  std::atomic<uint32_t> resumed_pid;
  std::atomic<uint64_t> oldest_offset;
  std::atomic<uint64_t> data_file_size;
  uint64_t origin_offset;
  uint32_t resume_grace_ms;
  std::byte pad3_[kCacheLine - 36];

  char name[kMaxNameLength + 1];
  std::byte reserved_[kHeaderSize - 512];
};

static_assert(sizeof(SegmentHeader) == kHeaderSize);
static_assert(offsetof(SegmentHeader, magic) == 0);
static_assert(offsetof(SegmentHeader, layout_version) == 8);
static_assert(offsetof(SegmentHeader, header_size) == 12);
static_assert(offsetof(SegmentHeader, max_data_size) == 16);
static_assert(offsetof(SegmentHeader, ring_capacity) == 24);
static_assert(offsetof(SegmentHeader, stream_id) == 32);
static_assert(offsetof(SegmentHeader, created_unix_ns) == 40);
static_assert(offsetof(SegmentHeader, producer_pid) == 48);
static_assert(offsetof(SegmentHeader, producer_uid) == 52);
static_assert(offsetof(SegmentHeader, name_length) == 56);
static_assert(offsetof(SegmentHeader, flags) == 60);
static_assert(offsetof(SegmentHeader, header_checksum) == 64);
static_assert(offsetof(SegmentHeader, boot_id) == 72);
static_assert(offsetof(SegmentHeader, committed_length) == 128);
static_assert(offsetof(SegmentHeader, wait_word) == 136);
static_assert(offsetof(SegmentHeader, light_producer) == 140);
static_assert(offsetof(SegmentHeader, state) == 192);
static_assert(offsetof(SegmentHeader, oldest_offset) == 200);
static_assert(offsetof(SegmentHeader, data_file_size) == 208);
static_assert(offsetof(SegmentHeader, resumed_pid) == 196);
static_assert(offsetof(SegmentHeader, origin_offset) == 216);
static_assert(offsetof(SegmentHeader, resume_grace_ms) == 224);
static_assert(offsetof(SegmentHeader, name) == 256);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
// The futex syscall operates on the 32-bit word itself.
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

inline constexpr uint64_t kWaitMagic = 0x5449415753534853ULL;  // "SHSSWAIT", little-endian
inline constexpr uint32_t kWaitPageSize = 4096;
inline constexpr uint32_t kReaderSlotSize = 128;
inline constexpr uint32_t kMaxCursorNameLength = 64;
inline constexpr uint32_t kMaxReadersLimit = 16384;
// min_wanted and space_wanted when nobody waits.
inline constexpr uint64_t kNobody = ~uint64_t{0};

struct alignas(kCacheLine) WaitPage {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t max_readers;
  uint64_t stream_id;
  std::byte pad0_[kCacheLine - 24];
  std::atomic<uint64_t> min_wanted;  // on its own line: written by readers, read per commit
  std::byte pad1_[kCacheLine - 8];
  std::atomic<uint64_t> space_wanted;  // block rings: read by readers when they publish
  std::atomic<uint32_t> space_word;
  std::atomic<uint32_t> slots_in_use_hint;
  std::byte pad2_[kCacheLine - 16];
  std::byte reserved_[kWaitPageSize - 3 * kCacheLine];
};

struct CursorCommit {
  std::atomic<uint64_t> position;
  std::atomic<uint64_t> token;  // the consumer's own, stored atomically with the position
};

struct alignas(kCacheLine) ReaderSlot {
  std::atomic<uint64_t> position;
  std::atomic<uint32_t> in_use;
  uint32_t pid;     // relaxed-only information; written by the daemon before in_use
  uint32_t cursor;  // daemon, before in_use
  std::atomic<uint32_t> commit_seq;
  CursorCommit committed[2];
  uint8_t name_length;
  char name[kMaxCursorNameLength];
  std::byte pad_[kReaderSlotSize - 57 - kMaxCursorNameLength];
};

static_assert(sizeof(WaitPage) == kWaitPageSize);
static_assert(sizeof(ReaderSlot) == kReaderSlotSize);
static_assert(offsetof(WaitPage, magic) == 0);
static_assert(offsetof(WaitPage, layout_version) == 8);
static_assert(offsetof(WaitPage, max_readers) == 12);
static_assert(offsetof(WaitPage, stream_id) == 16);
static_assert(offsetof(WaitPage, min_wanted) == 64);
static_assert(offsetof(WaitPage, space_wanted) == 128);
static_assert(offsetof(WaitPage, space_word) == 136);
static_assert(offsetof(WaitPage, slots_in_use_hint) == 140);
static_assert(offsetof(ReaderSlot, position) == 0);
static_assert(offsetof(ReaderSlot, in_use) == 8);
static_assert(offsetof(ReaderSlot, pid) == 12);
static_assert(offsetof(ReaderSlot, cursor) == 16);
static_assert(offsetof(ReaderSlot, commit_seq) == 20);
static_assert(offsetof(ReaderSlot, committed) == 24);
static_assert(offsetof(ReaderSlot, name_length) == 56);
static_assert(offsetof(ReaderSlot, name) == 57);

inline constexpr uint64_t wait_file_size(uint32_t max_readers) {
  return kWaitPageSize + uint64_t{max_readers} * kReaderSlotSize;
}

// FNV-1a over the identity fields [0, 64) and the name: detects a corrupt or foreign header.
uint64_t header_checksum(const SegmentHeader& header);

}  // namespace shmstream::shm
