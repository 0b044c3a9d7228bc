// shm/reader_table.hpp — a stream's reader table (the daemon's record of its reader slots and
// named cursors) and its reader pages (each reader's own state). See layout.hpp for the layouts
// and the protocols.
//
// The daemon is the table's only writer, from one thread; the producer maps it read-only.
// The daemon never maps a reader page (its reader may truncate it): it creates, reads and
// writes pages with pwrite/pread. A reader maps its own page read-write, the producer maps
// every page read-only; both mappings are guarded (fault_guard.hpp).
//
// Thread-safety: the slot-management functions are the daemon's, called from one thread. A
// ReaderTable's or ReaderPageMap's accessors may be used from any thread while nobody moves
// or destroys it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shm/fault_guard.hpp"
#include "shm/layout.hpp"
#include "shm/segment.hpp"
#include "shmstream/status.hpp"

namespace shmstream::shm {

// Default number of reader slots (readers a stream allows at once).
inline constexpr uint32_t kDefaultMaxReaders = 64;

// Makes an empty file (fd open read-write) the reader table of segment `stream_id`, with
// `max_readers` slots, all free. Allocates every page first (kNoSpace on a full file system).
Status format_reader_table(int fd, uint64_t stream_id, uint32_t max_readers);

// A validated mapping of a reader table: read-write for the daemon, read-only for the
// producer. The slot count is the one validated when mapped, kept here.
class ReaderTable {
 public:
  static Result<ReaderTable> map(int fd, uint64_t stream_id, Access access, std::string_view what);
  ReaderTable() = default;
  ReaderTable(ReaderTable&& other) noexcept
      : page_(std::exchange(other.page_, nullptr)),
        length_(std::exchange(other.length_, 0)),
        guard_(std::move(other.guard_)),
        max_readers_(std::exchange(other.max_readers_, 0)) {}
  ReaderTable& operator=(ReaderTable&& other) noexcept;
  ~ReaderTable();

  bool valid() const { return page_ != nullptr; }
  const TablePage& page() const { return *page_; }
  TablePage& mutable_page() const { return *page_; }  // the daemon's read-write mapping only
  uint32_t max_readers() const { return max_readers_; }
  // Whether the file shrank under the mapping (fault_guard.hpp): it reads zeros from then on.
  bool faulted() const { return guard_.faulted(); }
  // Slot `index` (< max_readers()).
  TableSlot& slot(uint32_t index) const {
    return reinterpret_cast<TableSlot*>(reinterpret_cast<std::byte*>(page_) +
                                        kTablePageSize)[index];
  }

 private:
  TablePage* page_ = nullptr;
  size_t length_ = 0;
  FaultGuard guard_;
  uint32_t max_readers_ = 0;
};

// Whether `name` may name a cursor: 1 to 64 of [A-Za-z0-9._:@-].
Status validate_cursor_name(std::string_view name);
std::string_view cursor_name(const TableSlot& slot);

// What the daemon puts in a slot it claims.
struct SlotClaim {
  uint64_t hold = 0;        // where the reader starts (a cursor: its committed position)
  uint64_t token = 0;       // a cursor's committed token
  uint32_t pid = 0;         // the reader (0: a cursor nobody holds)
  uint32_t uid = 0;         // the user claiming it
  uint64_t page = 0;        // its reader page's number (0: none)
  std::string_view cursor;  // a named cursor's name; empty for an anonymous reader
};
// Takes a free slot (kTooManyReaders when none is free), publishes it (generation).
Result<uint32_t> claim_slot(const ReaderTable& table, const SlotClaim& claim);
// Changes who holds slot `index`: its reader (pid, page; 0 for none) and, while it has no page,
// what it holds back (hold, token). Publishes the change and wakes a producer waiting for room.
void set_slot_reader(const ReaderTable& table, SegmentHeader& header, uint32_t index, uint32_t pid,
                     uint64_t page, uint64_t hold, uint64_t token);
// Frees slot `index`, publishes it and wakes a producer waiting for room.
void release_slot(const ReaderTable& table, SegmentHeader& header, uint32_t index);
// Marks slot `index` evicted (it holds nothing from now on) and wakes the producer.
void evict_slot(const ReaderTable& table, SegmentHeader& header, uint32_t index);
// After a slot changed: a seq_cst fence, then, if the producer waits for room, a release
// fetch_add of space_word and FUTEX_WAKE (Dekker with its space_wanted store and re-scan).
void wake_space_waiter(SegmentHeader& header);

// What a slot in use shows (ls, stat, top, adoption).
struct SlotInfo {
  uint32_t index = 0;
  uint32_t pid = 0;
  uint32_t uid = 0;
  uint64_t page = 0;
  uint64_t hold = 0;
  uint64_t token = 0;
  bool cursor = false;
  bool evicted = false;
  std::string name;  // a cursor's
};
std::vector<SlotInfo> slots_in_use(const ReaderTable& table);

// ---------------------------------------------------------------------------------------------
// Reader pages.

// The file name of page `page` of the segment file `segment_file`: "<segment_file>.r<hex>".
std::string reader_page_file(std::string_view segment_file, uint64_t page);

struct CursorPosition {
  uint64_t position = 0;
  uint64_t token = 0;
};
// Makes an empty file (fd open read-write) reader page `page` of slot `slot`, its reader
// starting at `start` (a cursor: committed at `start` with `token`). pwrite only: the daemon
// never maps a page.
Status format_reader_page(int fd, uint64_t stream_id, uint32_t slot, uint64_t page, uint64_t start,
                          uint64_t token);
// What the daemon reads of a page (pread only), validated against its identity.
struct PageState {
  uint64_t position = 0;
  CursorPosition committed;
  bool evicted = false;
};
Result<PageState> read_reader_page(int fd, uint64_t stream_id, uint32_t slot, uint64_t page);
// Tells the page's reader it was evicted, and why (kEvicted*; pwrite).
Status mark_page_evicted(int fd, uint32_t why);

// A validated mapping of one reader page: its reader's (read-write) or the producer's
// (read-only), checked to be slot `slot`'s of stream `stream_id` (and number `page`, unless 0).
// Guarded: a page its reader truncated reads zeros and says faulted().
class ReaderPageMap {
 public:
  static Result<ReaderPageMap> map(int fd, Access access, uint64_t stream_id, uint32_t slot,
                                   uint64_t page, std::string_view what);
  ReaderPageMap() = default;
  ReaderPageMap(ReaderPageMap&& other) noexcept
      : page_(std::exchange(other.page_, nullptr)), guard_(std::move(other.guard_)) {}
  ReaderPageMap& operator=(ReaderPageMap&& other) noexcept;
  ~ReaderPageMap();

  bool valid() const { return page_ != nullptr; }
  ReaderPage& page() const { return *page_; }
  bool faulted() const { return guard_.faulted(); }

 private:
  ReaderPage* page_ = nullptr;
  FaultGuard guard_;
};
// The cursor's committed position and token in a page (the entry commit_seq names).
CursorPosition page_committed(const ReaderPage& page);

}  // namespace shmstream::shm
