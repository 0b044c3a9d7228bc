// shm/layout.hpp — the shared-memory layouts of shmstream: the one place they are written down,
// and the named accessors through which every process reads and writes their shared fields.
//
// Each stream has a segment, a reader table, and a page per reader. Every process writes only
// its own state: nothing a reader can write reaches another reader, the producer or the daemon
// except as a hint about that reader itself.
//   "<segment>"     the segment: a 4 KiB header (SegmentHeader), then the data. Its owner's
//                   file. The producer maps it read-write; readers map it read-only (their fd
//                   is opened O_RDONLY, so they cannot write it even with mprotect).
//   "<segment>.t"   the reader table: a 4 KiB page (TablePage), then one TableSlot per reader
//                   slot. Written by the daemon only (its own file, 0600); the producer maps it
//                   read-only from a descriptor the daemon gives it; readers never see it.
//   "<segment>.r<N>" a reader page (ReaderPage), one per reader the daemon lets in (N, a
//                   random number, is in the reader's table slot). The reader maps it
//                   read-write from the descriptor the daemon gives it; the producer opens it
//                   read-only by name (the file is the stream owner's, 0400); the daemon reads
//                   and writes it with pread/pwrite only. A reader that truncates its page
//                   harms only itself: every mapping of it is guarded (fault_guard.hpp).
//
//   segment                                       reader table
//   +----------------------------+ 0              +----------------------------+ 0
//   | SegmentHeader              |                | TablePage                  |
//   |   identity (checksummed)   | 0..128         +----------------------------+ 4096
//   |   producer hot line        | 128..192       | TableSlot 0 (128 bytes)    |
//   |   lifecycle line           | 192..256       | ...  max_readers slots     |
//   |   room line (block rings)  | 256..320       +----------------------------+
//   |   name                     | 320..576
//   |   daemon socket            | 576..684
//   +----------------------------+ 4096           reader page (4096 bytes)
//   | data                       |                +----------------------------+ 0
//   |   unbounded: offset o at   |                | identity (daemon)          | 0..64
//   |   data + o; the file grows |                | wake line (reader)         | 64..128
//   |   (fallocate) as the       |                | position line (reader)     | 128..192
//   |   producer appends; maps   |                | commit line (reader)       | 192..256
//   |   reserve max_data_size    |                | daemon line                | 256..320
//   |   (MAP_NORESERVE).         |                +----------------------------+
//   |   ring: ring_capacity      |
//   |   bytes, allocated at      |
//   |   creation; offset o at    |
//   |   data + o % capacity; the |
//   |   data is mapped twice,    |
//   |   back to back, so any     |
//   |   range of up to capacity  |
//   |   bytes is contiguous.     |
//   +----------------------------+ 4096 + data_file_size
//
// ## SegmentHeader (layout version 8)
//
//  off size field             writer                  ordering
//  --- ---- ----------------- ----------------------- ------------------------------------------
//    0    8 magic             creator                 plain, before the fd is handed out (1)
//    8    4 layout_version    creator                 plain (1)
//   12    4 header_size       creator                 plain (1)
//   16    8 max_data_size     creator                 plain (1): mapping reservation and limit
//   24    8 ring_capacity     creator                 plain (1): 0 = unbounded, else a ring of
//                                                     this many bytes (a multiple of 4096)
//   32    8 stream_id         creator                 plain (1): random; the file name suffix
//   40    8 created_unix_ns   creator                 plain (1)
//   48    4 producer_pid      creator (daemon,        plain (1)
//                             from SO_PEERCRED)
//   52    4 producer_uid      creator (idem)          plain (1)
//   56    4 name_length       creator                 plain (1)
//   60    4 flags             creator                 plain (1): kFlagRecords, kFlagBlockWhenFull
//   64   16 boot_id           creator                 plain (1): the kernel's boot id at creation
//                                                     (producer_pid means nothing after a reboot)
//   80    8 origin_offset     creator                 plain (1): the offset, in the stream it
//                                                     republishes (bridge in), of offset 0
//   88    4 resume_grace_ms   creator                 plain (1): how long the stream stays open
//                                                     for a successor after its producer died
//   92    4 stall_limit_ms    creator                 plain (1): block rings: a reader (or idle
//                                                     cursor) holding the producer longer than
//                                                     this is evicted by the daemon; 0 = never
//   96   16 authenticator     creator (daemon)        plain (1): a keyed MAC (SipHash-2-4, two
//                                                     64-bit halves) of [0, 96), the name and the
//                                                     daemon socket, under the daemon's secret
//                                                     key (authenticator.hpp): what a restarted
//                                                     daemon adopts. Zero: made by no daemon.
//  120    8 header_checksum   creator                 plain (1): FNV-1a of [0, 120), the name
//                                                     and the daemon socket
//  128    8 committed_length  producer                release store (publish_committed) /
//                                                     acquire load (load_committed)
//  136    4 wait_word         producer, daemon        release fetch_add before waking readers
//                                                     (signal_readers) / acquire load; readers
//                                                     FUTEX_WAIT on it. See "Wake protocol".
//  140    4 light_producer    producer                see "Light barriers"
//  192    4 state             producer, daemon        acq_rel CAS (end_stream) / acquire load
//                                                     (load_state). Only kOpen ever changes;
//                                                     kCancelled may replace kClosed/kAborted.
//  196    4 resumed_pid       daemon                  relaxed: names the producer that resumed
//                                                     the stream (Control.resume); display only
//  200    8 oldest_offset     producer (rings)        see "Ring overwrites"
//  208    8 data_file_size    producer                release store after the file grew /
//                                                     acquire load after committed_length
//  216    4 abort_claim       producer, daemon        acq_rel CAS 0 -> who (kClaimProducer,
//                                                     kClaimDaemon): the one that may write
//                                                     the reason below, once (abort_stream).
//                                                     The daemon clears it when a successor
//                                                     resumes an open stream.
//  220    4 abort_kind        the claimer             relaxed, before end_stream's CAS, which
//  224    4 abort_code        the claimer             publishes them; read relaxed after
//                                                     load_state() saw kAborted (its acquire)
//                                                     (load_abort_reason). AbortKind, code.
//  256    8 space_wanted      producer (block rings)  see "Blocking rings"; kNobody when it
//                                                     does not wait
//  264    4 space_word        daemon, producer        the futex a waiting producer sleeps on for
//                                                     the daemon's news (a slot freed, a cursor
//                                                     let go, an eviction)
//  272    8 stalled_since_ns  producer                relaxed: CLOCK_MONOTONIC when it began to
//                                                     wait for room, 0 when it does not: what
//                                                     the daemon's stall limit and `ls` read
//  320  256 name              creator                 plain (1), NUL-padded, covered by the
//                                                     checksum
//  576  108 daemon_socket     creator (daemon)        plain (1), NUL-padded: the control socket
//                                                     of the daemon that made the segment, so
//                                                     that `shmstream gc` can ask whether it
//                                                     still runs. Covered by the checksum.
//  704  128 abort_message     the claimer             plain, as abort_kind: the reason's text,
//                                                     NUL-terminated; readers take it as
//                                                     hostile (cut, control bytes replaced).
//                                                     Added in layout 8 without a new version:
//                                                     zero (no reason recorded) in older files.
//  (1) Identity. Written before the creator passes the fd to anyone; the fd's passage over
//      the control socket orders those writes before any other process's reads. Every
//      identity field, the name and the daemon socket are covered by header_checksum. Unused
//      bytes are zero.
//
// ## TablePage and TableSlot (the reader table: the daemon writes, the producer reads)
//
//  off size field             writer                  ordering
//  --- ---- ----------------- ----------------------- ------------------------------------------
//    0    8 magic             daemon                  plain, before the fd is handed out
//    8    4 layout_version    daemon                  plain
//   12    4 max_readers       daemon                  plain: the number of slots
//   16    8 stream_id         daemon                  plain: the segment's
//   64    4 generation        daemon                  release fetch_add after changing any slot
//                                                     (load_generation(): the producer's cue to
//                                                     look at the slots again)
//   68    4 slots_bound       daemon                  relaxed: 1 + the highest slot in use
//  4096 + 128 i: TableSlot i
//    0    4 in_use            daemon                  release store of 1 after the fields below
//                                                     (claim) / 0 (release); then generation
//    4    4 flags             daemon                  relaxed: kSlotCursor, kSlotEvicted
//    8    4 pid               daemon                  relaxed: the reader's pid (0: a cursor
//                                                     nobody holds), for display and adoption
//   12    4 uid               daemon                  relaxed: the user that claimed the slot (a
//                                                     named cursor's owner)
//   16    8 page              daemon                  relaxed: the number N of the reader's page
//                                                     file "<segment>.r<N>"; 0: none (a cursor
//                                                     nobody holds)
//   24    8 hold              daemon                  relaxed: what the slot holds back while its
//                                                     page is not mapped (or there is none):
//                                                     where its reader started, or a cursor's
//                                                     committed position when let go
//   32    8 token             daemon                  relaxed: a cursor's committed token (with
//                                                     hold) while nobody holds it
//   40    1 name_length       daemon                  before in_use: the cursor's name
//   41   64 name              daemon                  before in_use
//
// ## ReaderPage (one reader's own state)
//
//  off size field             writer                  ordering
//  --- ---- ----------------- ----------------------- ------------------------------------------
//    0    8 magic             daemon                  plain, before the fd is handed out
//    8    4 layout_version    daemon                  plain
//   12    4 slot              daemon                  plain: its slot in the table
//   16    8 stream_id         daemon                  plain
//   24    8 page              daemon                  plain: N, as in the file name
//   64   16 wake[0]           reader                  {wanted, seen_word}: see "Wake protocol";
//                                                     the reader's own waits
//   80   16 wake[1]           reader                  the same, for its event-loop relay thread
//                                                     (watch()), which may sleep at the same time
//   96    4 space_seq         reader                  see "Blocking rings"
//  128    8 position          reader                  release store (lazily, every capacity/16
//                                                     bytes and before sleeping) / producer
//                                                     acquire load: the reader needs no bytes
//                                                     below it. A named cursor publishes only
//                                                     its committed position.
//  192    4 commit_seq        reader                  see "Cursor commits"
//  200   16 committed[0]      reader                  {position, token}
//  216   16 committed[1]      reader                  {position, token}
//  256    4 evicted           daemon (pwrite)         why the daemon let go of this reader
//                                                     (kEvicted*); its reads fail from then on
//                                                     (acquire load)
//
// Nothing in a page is trusted by anyone but its reader: the producer bounds-checks what it
// reads there (a page may claim any position), and a page that faults is ignored.
//
// ## Wake protocol (wanted, wait_word)
// A reader that wants offset t, having loaded wait_word (value w) before checking: relaxed store
// of w in its page's wake request's seen_word, release store of t in its wanted, a seq_cst
// fence, re-load committed_length; if still short of t, FUTEX_WAIT on wait_word for w; awake
// again, it stores kNobody in wanted unless wait_word moved past w (then the request matches
// nothing already, and not storing leaves its line with the producer). (Each of a reader's two
// sleepers, its own thread and its event-loop relay, has its own request.) The producer, after its
// release store of committed_length: a seq_cst fence, then for each request of each reader page it
// maps an acquire load of wanted; if <= committed and the request's seen_word is the current
// wait_word (its sleeper would sleep through), a release fetch_add of wait_word and FUTEX_WAKE.
// (Dekker: either the reader sees the new length or the producer sees its registration, seen_word
// with it.) One wake-up per registration: a reader the producer woke sleeps on a stale value until
// it registers again. The daemon makes a reader's page before it hands the reader its descriptor,
// and bumps the table's generation in between (a system call, a full barrier, orders the bump
// before the reader's first registration), so a producer whose fence follows that registration maps
// the page. A reader can only make the producer wake everyone more often, never keep another reader
// asleep. Ending a stream (close, abort, cancel) always bumps wait_word and wakes everyone.
//
// ## Light barriers (light_producer)
// A producer whose commits woke nobody 64 times in a row stores 1 (relaxed, then a seq_cst
// fence) and replaces its per-commit fence by a compiler barrier; a reader that acquire-loads 1
// after its own fence adds membarrier(GLOBAL_EXPEDITED) (asymmetric Dekker, futex.hpp), or,
// if it cannot, sleeps at most 1 ms at a time. A commit that wakes a reader within 64 commits
// of the previous wake-up turns fences back on: a seq_cst fence, then a release store of 0.
//
// ## Ring overwrites (oldest_offset)
// Before overwriting bytes below offset x, the producer stores oldest_offset >= x (relaxed
// store is enough for the value; release store plus a release fence order it before the
// overwriting writes). A reader copies bytes, then an acquire fence, then loads oldest_offset:
// bytes it read below that value may have been overwritten (a seqlock's read side). It
// advances in steps of capacity / 16, so that readers' loads of it hit their cache. In a
// records stream it stays on a frame boundary.
//
// ## Blocking rings (space_wanted, space_word, space_seq, positions)
// A producer that needs readers past offset n: relaxed store of n in space_wanted, a seq_cst
// fence, then for each holder (a slot in use below n) an acquire load of its page's space_seq,
// then the scan again (positions); if one is still below n, FUTEX_WAITV on every holder's
// space_seq and on the header's space_word (the daemon's news) and wait_word (the stream's
// end). A reader that moves its position from below n to at/above it: the position store, a
// seq_cst fence, a load of space_wanted; then a release fetch_add of its own space_seq and
// FUTEX_WAKE on it. (Dekker again: the producer sees the move, or the reader sees n and its
// wake-up changes a word the producer waits on.) The daemon, after freeing a slot or moving a
// hold: a seq_cst fence, a load of space_wanted, then a release fetch_add of space_word and
// FUTEX_WAKE. A reader can wake the producer needlessly (it then scans again), never keep it
// asleep: the words it may write are its own.
//
// ## Cursor commits (commit_seq, committed[2])
// A commit writes the entry committed[(commit_seq + 1) & 1] (relaxed), then release-stores
// commit_seq + 1, then publishes position. A reader of the cursor acquire-loads commit_seq and
// reads the entry it names: a crash at any point leaves one whole entry current.
//
// ## Records (kFlagRecords)
// The data is a sequence of frames, each a RecordHeader (u32 length, u32 check = ~length)
// then the payload, padded to a multiple of 64 bytes (a reader reading a fresh record never
// holds a line the producer is still filling; payloads up to 56 bytes take one line).
// committed_length only ever advances by whole frames, so a committed frame is never torn.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "shmstream/abort_reason.hpp"

namespace shmstream::shm {

inline constexpr uint64_t kMagic = 0x004D5254534D4853ULL;  // "SHMSTRM\0", little-endian
// Bump on any change to these layouts or to the meaning of a field.
// v2: wait page; the producer wakes readers only when one sleeps for what it committed.
// v3: rings (drop-oldest or block), records, reader slots in the wait file, light producers.
// v4: 128-byte reader slots carrying named cursors; boot_id in the header.
// v5: origin_offset and resume_grace_ms in the identity line, covered by the checksum, which
//     moved to offset 120.
// v6: the uid that claimed each reader slot (named cursors belong to a user).
// v7: the wait file became the daemon's reader table plus a page per reader: a reader writes
//     only its own page; the room-wait words and stall_limit_ms moved into the segment header.
// v8: the authenticator (a keyed MAC: a restarted daemon adopts only what it made) and the
//     daemon's socket path (what `shmstream gc` asks) in the header.
inline constexpr uint32_t kLayoutVersion = 8;
inline constexpr uint32_t kHeaderSize = 4096;
inline constexpr uint32_t kMaxNameLength = 255;
inline constexpr uint32_t kMaxSocketPathLength = 107;  // sockaddr_un's sun_path, less its NUL
inline constexpr size_t kAuthenticatorSize = 16;
inline constexpr size_t kCacheLine = 64;

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

// Lifecycle of a stream, in SegmentHeader::state.
enum class StreamState : uint32_t {
  kOpen = 1,       // the producer may append
  kClosed = 2,     // the producer closed it: a clean end at committed_length
  kAborted = 3,    // the producer died (or went away) without closing
  kCancelled = 4,  // removed by force: every reader gets kCancelled, even on committed bytes
};

// Padding comes from alignas on the first field of each cache line and on the struct (whose
// size is then the page): no hand-counted pad arrays; the offsets are pinned below.
struct alignas(kHeaderSize) SegmentHeader {
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
  std::byte boot_id[16];
  uint64_t origin_offset;
  uint32_t resume_grace_ms;
  uint32_t stall_limit_ms;
  std::byte authenticator[kAuthenticatorSize];
  uint64_t reserved1_;
  uint64_t header_checksum;  // the last identity word: covers everything before it

  // Producer's hot line: written on every commit, read by every reader.
  alignas(kCacheLine) std::atomic<uint64_t> committed_length;
  std::atomic<uint32_t> wait_word;
  std::atomic<uint32_t> light_producer;
  std::atomic<uint64_t> records_committed;  // records streams: how many, for display only

  // Lifecycle line: written rarely (close, abort, cancel, resume, file growth, ring steps).
  alignas(kCacheLine) std::atomic<uint32_t> state;
  std::atomic<uint32_t> resumed_pid;
  std::atomic<uint64_t> oldest_offset;
  std::atomic<uint64_t> data_file_size;
  std::atomic<uint32_t> abort_claim;
  std::atomic<uint32_t> abort_kind;
  std::atomic<int32_t> abort_code;

  // Room line (block rings): the producer waiting for readers to move on.
  alignas(kCacheLine) std::atomic<uint64_t> space_wanted;
  std::atomic<uint32_t> space_word;
  std::atomic<uint64_t> stalled_since_ns;

  alignas(kCacheLine) char name[kMaxNameLength + 1];
  char daemon_socket[kMaxSocketPathLength + 1];
  alignas(kCacheLine) char abort_message[kMaxAbortMessage + 1];
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
static_assert(offsetof(SegmentHeader, boot_id) == 64);
static_assert(offsetof(SegmentHeader, origin_offset) == 80);
static_assert(offsetof(SegmentHeader, resume_grace_ms) == 88);
static_assert(offsetof(SegmentHeader, stall_limit_ms) == 92);
static_assert(offsetof(SegmentHeader, authenticator) == 96);
static_assert(offsetof(SegmentHeader, header_checksum) == 120);
static_assert(offsetof(SegmentHeader, committed_length) == 128);
static_assert(offsetof(SegmentHeader, wait_word) == 136);
static_assert(offsetof(SegmentHeader, light_producer) == 140);
static_assert(offsetof(SegmentHeader, records_committed) == 144);
static_assert(offsetof(SegmentHeader, state) == 192);
static_assert(offsetof(SegmentHeader, resumed_pid) == 196);
static_assert(offsetof(SegmentHeader, oldest_offset) == 200);
static_assert(offsetof(SegmentHeader, data_file_size) == 208);
static_assert(offsetof(SegmentHeader, space_wanted) == 256);
static_assert(offsetof(SegmentHeader, space_word) == 264);
static_assert(offsetof(SegmentHeader, stalled_since_ns) == 272);
static_assert(offsetof(SegmentHeader, name) == 320);
static_assert(offsetof(SegmentHeader, daemon_socket) == 576);
static_assert(offsetof(SegmentHeader, abort_claim) == 216);
static_assert(offsetof(SegmentHeader, abort_kind) == 220);
static_assert(offsetof(SegmentHeader, abort_code) == 224);
static_assert(offsetof(SegmentHeader, abort_message) == 704);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
// The futex syscall operates on the 32-bit word itself.
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
static_assert(sizeof(std::atomic<uint64_t>) == sizeof(uint64_t));

inline constexpr uint64_t kTableMagic = 0x4C42415453534853ULL;  // "SHSSTABL", little-endian
inline constexpr uint64_t kPageMagic = 0x4547415053534853ULL;   // "SHSSPAGE", little-endian
inline constexpr uint32_t kTablePageSize = 4096;
inline constexpr uint32_t kTableSlotSize = 128;
inline constexpr uint32_t kReaderPageSize = 4096;
inline constexpr uint32_t kMaxCursorNameLength = 64;
inline constexpr uint32_t kMaxReadersLimit = 16384;
// wanted and space_wanted when nobody waits.
inline constexpr uint64_t kNobody = ~uint64_t{0};

// TableSlot::flags.
inline constexpr uint32_t kSlotCursor = 1;   // a named cursor's slot: it stays while unheld
inline constexpr uint32_t kSlotEvicted = 2;  // evicted by the stall limit: holds nothing

struct alignas(kTablePageSize) TablePage {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t max_readers;
  uint64_t stream_id;
  alignas(kCacheLine) std::atomic<uint32_t> generation;
  std::atomic<uint32_t> slots_bound;
};

struct alignas(kTableSlotSize) TableSlot {
  std::atomic<uint32_t> in_use;
  std::atomic<uint32_t> flags;
  std::atomic<uint32_t> pid;
  std::atomic<uint32_t> uid;
  std::atomic<uint64_t> page;
  std::atomic<uint64_t> hold;
  std::atomic<uint64_t> token;
  uint8_t name_length;
  char name[kMaxCursorNameLength];
};

struct CursorCommit {
  std::atomic<uint64_t> position;
  std::atomic<uint64_t> token;  // the consumer's own, stored atomically with the position
};

// A sleeper's request to be woken (see "Wake protocol").
struct WakeRequest {
  std::atomic<uint64_t> wanted;     // the offset it sleeps for; kNobody (or stale) when awake
  std::atomic<uint32_t> seen_word;  // the wait_word value it sleeps on
  uint32_t reserved;
};
inline constexpr int kWakeOwn = 0;      // the reader's own waits
inline constexpr int kWakeWatcher = 1;  // its event-loop relay thread (ReaderCore::watch())

// ReaderPage::evicted: why the daemon let go of the page's reader (0: it did not).
inline constexpr uint32_t kEvictedStall = 1;  // it held a blocking ring's producer too long
// A restarted daemon kept its slot for the reattachment grace, and it did not reattach in time.
inline constexpr uint32_t kEvictedUnclaimed = 2;

struct alignas(kReaderPageSize) ReaderPage {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t slot;
  uint64_t stream_id;
  uint64_t page;
  // The reader's wake line: written before it sleeps, read by the producer per commit.
  alignas(kCacheLine) WakeRequest wake[2];
  std::atomic<uint32_t> space_seq;
  alignas(kCacheLine) std::atomic<uint64_t> position;
  alignas(kCacheLine) std::atomic<uint32_t> commit_seq;
  CursorCommit committed[2];
  alignas(kCacheLine) std::atomic<uint32_t> evicted;
};

static_assert(sizeof(TablePage) == kTablePageSize);
static_assert(sizeof(TableSlot) == kTableSlotSize);
static_assert(sizeof(ReaderPage) == kReaderPageSize);
static_assert(offsetof(TablePage, magic) == 0);
static_assert(offsetof(TablePage, layout_version) == 8);
static_assert(offsetof(TablePage, max_readers) == 12);
static_assert(offsetof(TablePage, stream_id) == 16);
static_assert(offsetof(TablePage, generation) == 64);
static_assert(offsetof(TablePage, slots_bound) == 68);
static_assert(offsetof(TableSlot, in_use) == 0);
static_assert(offsetof(TableSlot, flags) == 4);
static_assert(offsetof(TableSlot, pid) == 8);
static_assert(offsetof(TableSlot, uid) == 12);
static_assert(offsetof(TableSlot, page) == 16);
static_assert(offsetof(TableSlot, hold) == 24);
static_assert(offsetof(TableSlot, token) == 32);
static_assert(offsetof(TableSlot, name_length) == 40);
static_assert(offsetof(TableSlot, name) == 41);
static_assert(offsetof(ReaderPage, magic) == 0);
static_assert(offsetof(ReaderPage, slot) == 12);
static_assert(offsetof(ReaderPage, stream_id) == 16);
static_assert(offsetof(ReaderPage, page) == 24);
static_assert(sizeof(WakeRequest) == 16);
static_assert(offsetof(ReaderPage, wake) == 64);
static_assert(offsetof(ReaderPage, space_seq) == 96);
static_assert(offsetof(ReaderPage, position) == 128);
static_assert(offsetof(ReaderPage, commit_seq) == 192);
static_assert(offsetof(ReaderPage, committed) == 200);
static_assert(offsetof(ReaderPage, evicted) == 256);

inline constexpr uint64_t table_file_size(uint32_t max_readers) {
  return kTablePageSize + uint64_t{max_readers} * kTableSlotSize;
}

// FNV-1a over the identity fields [0, header_checksum), the name and the daemon socket: detects
// a corrupt header (not a forged one: that is the authenticator's job, authenticator.hpp).
uint64_t header_checksum(const SegmentHeader& header);

// ---------------------------------------------------------------------------------------------
// Named accessors of the shared fields (Aeron's descriptor helpers). Outside shm/, nothing
// touches a shared atomic directly; each accessor carries its field's one pairing.

// Acquire: pairs with publish_committed()'s release store; bytes below it are readable.
inline uint64_t load_committed(const SegmentHeader& h) {
  return h.committed_length.load(std::memory_order_acquire);
}
// Acquire: pairs with ProducerCore::make_room()'s release store of oldest_offset.
inline uint64_t load_oldest(const SegmentHeader& h) {
  return h.oldest_offset.load(std::memory_order_acquire);
}
// Acquire: pairs with the producer's release store after the file grew (ensure_file_size()).
inline uint64_t load_data_file_size(const SegmentHeader& h) {
  return h.data_file_size.load(std::memory_order_acquire);
}
// Acquire: pairs with end_stream()'s CAS; a reader that sees the end sees every commit before.
inline StreamState load_state(const SegmentHeader& h) {
  return static_cast<StreamState>(h.state.load(std::memory_order_acquire));
}
// Relaxed: resumed_pid publishes nothing; it only names the producer.
inline uint32_t load_resumed_pid(const SegmentHeader& h) {
  return h.resumed_pid.load(std::memory_order_relaxed);
}
inline void store_resumed_pid(SegmentHeader& h, uint32_t pid) {
  h.resumed_pid.store(pid, std::memory_order_relaxed);  // as load_resumed_pid()
}
// The pid of the stream's producer now: the one that resumed it last, else its creator.
inline uint32_t producer_pid_now(const SegmentHeader& h) {
  uint32_t resumed = load_resumed_pid(h);
  return resumed != 0 ? resumed : h.producer_pid;
}

// Acquire: pairs with the daemon's release fetch_add after it changed a slot (bump_generation()):
// the slots' new values are visible to the loads that follow.
inline uint32_t load_generation(const TablePage& table) {
  return table.generation.load(std::memory_order_acquire);
}
// Acquire: pairs with the daemon's release store in claim_slot(); the slot's fields come with it.
inline bool slot_in_use(const TableSlot& slot) {
  return slot.in_use.load(std::memory_order_acquire) != 0;
}
// Acquire: pairs with the reader's release store in ReaderCore::store_position(): its reads of
// the bytes below the position are done. Untrusted by everyone but the reader.
inline uint64_t load_page_position(const ReaderPage& page) {
  return page.position.load(std::memory_order_acquire);
}

}  // namespace shmstream::shm
