// shm/reader_set.hpp — the producer's view of a stream's readers: the daemon's reader table
// (read-only) and the pages of the readers in it (read-only, opened by name), refreshed when
// the table's generation moves. What it tells the producer per commit (whether a reader sleeps
// for what it committed) and in a blocking ring (how far the slowest reader got, and the words
// to sleep on until one moves) comes from each reader's own page, bounds-checked: a reader can
// lie only about itself.
//
// Thread-safety: used by the producer's thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "shm/futex.hpp"
#include "shm/reader_table.hpp"

namespace shmstream::shm {

class ReaderSet {
 public:
  // Opens reader page `page` read-only (returns an fd, or -1). The producer's opens
  // "<segment path>.r<N>" (open_reader_page_by_path()).
  using PageOpener = std::function<int(uint64_t page)>;

  ReaderSet() = default;  // no table: no readers to wake or wait for
  ReaderSet(ReaderTable table, PageOpener open_page, uint64_t stream_id);

  bool valid() const { return table_.valid(); }
  // Per commit: whether a reader sleeps, on wait_word value `word`, for an offset <=
  // `committed`. One load of the table's generation, and one of each mapped page's wake line.
  // Inline: it runs on every commit.
  bool anyone_wants(uint64_t committed, uint32_t word) {
    if (!table_.valid()) return false;
    if (!loaded_ || load_generation(table_.page()) != generation_) refresh();
    for (const ReaderPage* page : wake_pages_) {
      for (const WakeRequest& request : page->wake) {
        // Acquire: pairs with the reader's release store of wanted in sleep_for_commit(); its
        // seen_word, stored before, comes with it. (The Dekker fence in publish_committed()
        // orders this load after our store of the committed length.)
        if (request.wanted.load(std::memory_order_acquire) > committed) continue;
        // Relaxed: ordered by the acquire above.
        if (request.seen_word.load(std::memory_order_relaxed) == word && !faulted(page)) {
          return true;
        }
      }
    }
    return false;
  }
  // Block rings: the lowest position a reader holds (kNobody if none).
  uint64_t slowest();
  // Block rings, before sleeping for room up to `needed`: for each reader still below it, a
  // watch on its page's space_seq (as loaded now) in `out`. Returns how many were written; more
  // holders than fit make `*all` false (the caller then sleeps in short slices).
  size_t holder_watches(uint64_t needed, std::span<FutexWatch> out, bool* all);

 private:
  struct Entry {
    uint32_t slot = 0;
    uint64_t page_number = 0;  // 0: no page (a cursor nobody holds): `hold` holds
    uint64_t hold = 0;
    ReaderPageMap page;  // invalid if the page could not be mapped (then it holds nothing)
  };
  // Takes the table's slots again if its generation moved: maps new pages, drops gone ones.
  void refresh();
  // What entry `e` holds back (kNobody for nothing).
  static uint64_t held_by(const Entry& e);
  // Whether the mapping of `page` faulted (it reads zeros: its wake requests mean nothing).
  bool faulted(const ReaderPage* page) const;

  ReaderTable table_;
  PageOpener open_page_;
  uint64_t stream_id_ = 0;
  uint32_t generation_ = 0;
  bool loaded_ = false;
  std::vector<Entry> entries_;
  std::vector<const ReaderPage*> wake_pages_;  // the mapped pages of entries_, for the commit path
};

// The producer's PageOpener for segment file `segment_path`: opens "<segment_path>.r<N>"
// read-only, never following a symlink nor blocking on a fifo.
ReaderSet::PageOpener open_reader_page_by_path(std::string segment_path);

}  // namespace shmstream::shm
