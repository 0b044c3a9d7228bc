#include "shm/reader_set.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <utility>

namespace shmstream::shm {

ReaderSet::ReaderSet(ReaderTable table, PageOpener open_page, uint64_t stream_id)
    : table_(std::move(table)), open_page_(std::move(open_page)), stream_id_(stream_id) {}

void ReaderSet::refresh() {
  if (!table_.valid()) return;
  const uint32_t generation = load_generation(table_.page());
  if (loaded_ && generation == generation_) return;
  loaded_ = true;
  generation_ = generation;
  std::vector<Entry> fresh;
  // Relaxed: a scan bound the daemon published before the generation we loaded.
  const uint32_t bound =
      std::min(table_.page().slots_bound.load(std::memory_order_relaxed), table_.max_readers());
  for (uint32_t i = 0; i < bound; ++i) {
    const TableSlot& slot = table_.slot(i);
    if (!slot_in_use(slot)) continue;
    // Relaxed: ordered by load_generation()'s acquire (the daemon wrote them before its bump).
    if ((slot.flags.load(std::memory_order_relaxed) & kSlotEvicted) != 0) continue;
    Entry e;
    e.slot = i;
    e.page_number = slot.page.load(std::memory_order_relaxed);
    e.hold = slot.hold.load(std::memory_order_relaxed);
    auto kept = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& old) {
      return old.slot == i && old.page_number == e.page_number && e.page_number != 0;
    });
    if (kept != entries_.end()) {
      e.page = std::move(kept->page);
    } else if (e.page_number != 0 && open_page_) {
      // The daemon made the page before it published the slot. One that cannot be opened or is
      // not this slot's (its reader truncated it, or it went meanwhile) holds nothing.
      int fd = open_page_(e.page_number);
      if (fd >= 0) {
        auto mapped =
            ReaderPageMap::map(fd, Access::kReadOnly, stream_id_, i, e.page_number, "reader page");
        ::close(fd);
        if (mapped.ok()) e.page = std::move(mapped).value();
      }
    }
    fresh.push_back(std::move(e));
  }
  entries_ = std::move(fresh);
  wake_pages_.clear();
  for (const Entry& e : entries_) {
    if (e.page.valid()) wake_pages_.push_back(&e.page.page());
  }
}

uint64_t ReaderSet::held_by(const Entry& e) {
  if (e.page_number == 0) return e.hold;
  if (!e.page.valid()) return kNobody;
  const uint64_t position = load_page_position(e.page.page());
  // Checked after the load: the load itself may have faulted (its reader truncated the page),
  // and then read a zero that means nothing.
  return e.page.faulted() ? kNobody : position;
}

bool ReaderSet::faulted(const ReaderPage* page) const {
  for (const Entry& e : entries_) {
    if (e.page.valid() && &e.page.page() == page) return e.page.faulted();
  }
  return true;
}

uint64_t ReaderSet::slowest() {
  refresh();
  uint64_t slowest = kNobody;
  for (const Entry& e : entries_) slowest = std::min(slowest, held_by(e));
  return slowest;
}

size_t ReaderSet::holder_watches(uint64_t needed, std::span<FutexWatch> out, bool* all) {
  refresh();
  size_t n = 0;
  *all = true;
  for (const Entry& e : entries_) {
    if (held_by(e) >= needed || !e.page.valid()) continue;  // no page: the daemon's news wakes us
    if (n == out.size()) {
      *all = false;
      break;
    }
    // Acquire: pairs with the reader's release fetch_add in store_position(); loaded before the
    // caller scans again, so a move after this load changes the word we sleep on.
    const auto& seq = e.page.page().space_seq;
    const uint32_t seen = seq.load(std::memory_order_acquire);
    if (e.page.faulted()) continue;  // zeros now: the reader let go of its page
    out[n++] = FutexWatch{&seq, seen, true};
  }
  return n;
}

ReaderSet::PageOpener open_reader_page_by_path(std::string segment_path) {
  return [path = std::move(segment_path)](uint64_t page) {
    std::string file = reader_page_file(path, page);
    return ::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  };
}

}  // namespace shmstream::shm
