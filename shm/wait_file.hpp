// shm/wait_file.hpp — a stream's wait file: the control page the wake protocol runs on, and
// the reader slots (positions that hold back a blocking ring's producer, named cursors).
// See layout.hpp for the layout and the protocols; this file is the daemon's side of the slots
// (claim, release, cursors, adoption after a restart) and the mapping every role shares.
//
// Thread-safety: the slot-management functions are the daemon's, called from one thread. A
// WaitFile's accessors may be used from any thread while nobody moves or destroys it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "shm/fault_guard.hpp"
#include "shm/layout.hpp"
#include "shmstream/status.hpp"

namespace shmstream::shm {

// Default number of reader slots in a wait file (readers a stream allows at once).
inline constexpr uint32_t kDefaultMaxReaders = 64;

// Makes an empty file (fd open read-write) the wait file of segment `stream_id`, with
// `max_readers` reader slots.
Status format_wait_file(int fd, uint64_t stream_id, uint32_t max_readers);

// A validated read-write mapping of a wait file. Owns the mapping; the slot count is the one
// validated when mapped, kept here.
class WaitFile {
 public:
  static Result<WaitFile> map(int fd, uint64_t stream_id, std::string_view what);
  WaitFile() = default;
  WaitFile(WaitFile&& other) noexcept
      : page_(std::exchange(other.page_, nullptr)),
        length_(std::exchange(other.length_, 0)),
        guard_(std::move(other.guard_)),
        max_readers_(std::exchange(other.max_readers_, 0)) {}
  WaitFile& operator=(WaitFile&& other) noexcept;
  ~WaitFile();

  bool valid() const { return page_ != nullptr; }
  WaitPage& page() const { return *page_; }
  uint32_t max_readers() const { return max_readers_; }
  // Whether the file shrank under the mapping (fault_guard.hpp): it reads zeros from then on.
  bool faulted() const { return guard_.faulted(); }
  // Slot `index` (< max_readers()).
  ReaderSlot& slot(uint32_t index) const {
    return reinterpret_cast<ReaderSlot*>(reinterpret_cast<std::byte*>(page_) +
                                         kWaitPageSize)[index];
  }

 private:
  WaitPage* page_ = nullptr;
  size_t length_ = 0;
  FaultGuard guard_;
  uint32_t max_readers_ = 0;
};

// Takes a free slot for a reader (of user `uid`) starting at `position` (kTooManyReaders when
// none is free). With a `cursor` name, the slot is a named cursor's, committed at `position`,
// and belongs to `uid`.
Result<uint32_t> claim_reader_slot(const WaitFile& wait, uint64_t position, uint32_t pid,
                                   uint32_t uid, std::string_view cursor = {});
// Gives a slot back, waking a producer waiting for room.
void release_reader_slot(const WaitFile& wait, uint32_t index);
// Wakes a blocking ring's producer waiting for room (space_word): release fetch_add, then
// FUTEX_WAKE. For whoever moved a slot past what the producer waits for.
void wake_producer_for_space(WaitPage& page);

// Named cursors: a slot that stays in use while no reader holds it, so that its committed
// position survives the reader (and the daemon: it lives in the wait file).
// Whether `name` may name a cursor: 1 to 64 of [A-Za-z0-9._:@-].
Status validate_cursor_name(std::string_view name);
std::string_view cursor_name(const ReaderSlot& slot);
struct CursorPosition {
  uint64_t position = 0;
  uint64_t token = 0;
};
// The cursor's committed position and token (the entry commit_seq names).
CursorPosition cursor_committed(const ReaderSlot& slot);
// The cursor of slot `index` changes hands: `pid` is the reader that takes it (for display and
// adoption), 0 when its reader let go. Either way its hold (the slot position, which a reader
// publishes lazily) becomes exactly its committed position, waking a producer that waits for
// room.
void hold_cursor(const WaitFile& wait, uint32_t index, uint32_t pid);

// What a slot in use shows (ls, stat, top).
struct SlotInfo {
  uint32_t index = 0;
  uint32_t pid = 0;
  uint64_t position = 0;  // the published position (the producer's hold)
  bool cursor = false;
};
std::vector<SlotInfo> slots_in_use(const WaitFile& wait);

// A slot kept when a daemon adopts the wait file of an earlier one.
struct AdoptedSlot {
  uint32_t index = 0;
  uint32_t pid = 0;    // the live reader holding it (it may reattach); 0 for an unheld cursor
  uint32_t uid = 0;    // the user that claimed it (a cursor's owner)
  std::string cursor;  // the cursor's name; empty for an anonymous reader's slot
};
// Adoption after a daemon restart: the slots of readers still alive (`this_boot` and
// `alive(pid)`) are kept for them to reattach; named cursors stay, committed where they were,
// held by their reader if it lives; every other slot is freed.
std::vector<AdoptedSlot> adopt_reader_slots(const WaitFile& wait, bool this_boot,
                                            const std::function<bool(uint32_t pid)>& alive);

}  // namespace shmstream::shm
