#include "shm/wait_file.hpp"

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <set>

#include "shm/futex.hpp"
#include "shm/posix_error.hpp"
#include "shm/segment.hpp"

namespace shmstream::shm {

Status format_wait_file(int fd, uint64_t stream_id, uint32_t max_readers) {
  if (max_readers == 0 || max_readers > kMaxReadersLimit) {
    return Status(
        ErrorCode::kInvalidArgument,
        fmt::format("maximum readers {} is out of range (1 to {})", max_readers, kMaxReadersLimit));
  }
  const uint64_t size = wait_file_size(max_readers);
  // Every page allocated before any is touched (the daemon claims slots in them): a full file
  // system is kNoSpace here, not a SIGBUS when the first reader comes.
  if (Status s = reserve_file(fd, 0, size); !s.ok()) return s.with_context("the wait file");
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return from_errno(errno, "mapping the wait file");
  }
  FaultGuard guard(base, size, PROT_READ | PROT_WRITE);
  // New and not handed out yet: plain initialisation; the fd's hand-over publishes it. The
  // slots are zero (free), as a new file's pages are.
  auto* page = new (base) WaitPage{};
  page->magic = kWaitMagic;
  page->layout_version = kLayoutVersion;
  page->max_readers = max_readers;
  page->stream_id = stream_id;
  page->min_wanted.store(kNobody, std::memory_order_relaxed);
  page->space_wanted.store(kNobody, std::memory_order_relaxed);
  const bool faulted = guard.faulted();
  guard.reset();
  munmap(base, size);
  if (faulted) return Status(ErrorCode::kCorrupt, "the wait file shrank while being formatted");
  return Status();
}

Result<WaitFile> WaitFile::map(int fd, uint64_t stream_id, std::string_view what) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || static_cast<uint64_t>(st.st_size) < kWaitPageSize) {
    return Status(ErrorCode::kCorrupt, fmt::format("{}: truncated wait file", what));
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    return from_errno(errno, fmt::format("{}: mapping the wait file", what));
  }
  WaitFile out;
  out.page_ = static_cast<WaitPage*>(base);
  out.length_ = size;
  out.guard_ = FaultGuard(base, size, PROT_READ | PROT_WRITE);
  const WaitPage& page = out.page();
  if (page.magic != kWaitMagic || page.layout_version != kLayoutVersion ||
      page.stream_id != stream_id) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: wait file does not belong to this segment (magic {:#x}, "
                              "version {}, stream id {:#x})",
                              what, page.magic, page.layout_version, page.stream_id));
  }
  if (page.max_readers == 0 || page.max_readers > kMaxReadersLimit ||
      wait_file_size(page.max_readers) != size) {
    return Status(ErrorCode::kCorrupt, fmt::format("{}: wait file of {} bytes for {} readers", what,
                                                   size, page.max_readers));
  }
  out.max_readers_ = page.max_readers;
  return out;
}

WaitFile& WaitFile::operator=(WaitFile&& other) noexcept {
  if (this != &other) {
    guard_.reset();
    if (page_ != nullptr) munmap(page_, length_);
    page_ = std::exchange(other.page_, nullptr);
    length_ = std::exchange(other.length_, 0);
    guard_ = std::move(other.guard_);
    max_readers_ = std::exchange(other.max_readers_, 0);
  }
  return *this;
}

WaitFile::~WaitFile() {
  guard_.reset();
  if (page_ != nullptr) munmap(page_, length_);
}

Result<uint32_t> claim_reader_slot(const WaitFile& wait, uint64_t position, uint32_t pid,
                                   uint32_t uid, std::string_view cursor) {
  if (!cursor.empty()) {
    if (Status s = validate_cursor_name(cursor); !s.ok()) return s;
  }
  WaitPage& page = wait.page();
  for (uint32_t i = 0; i < wait.max_readers(); ++i) {
    ReaderSlot& slot = wait.slot(i);
    // Relaxed: only the daemon (one thread) claims and releases slots.
    if (slot.in_use.load(std::memory_order_relaxed) != 0) continue;
    // Relaxed: published by the release store of in_use below.
    slot.position.store(position, std::memory_order_relaxed);
    store_slot_pid(slot, pid);
    slot.cursor = cursor.empty() ? 0 : 1;
    // Relaxed: nobody reads the entries before in_use's release store below hands them out.
    slot.commit_seq.store(0, std::memory_order_relaxed);
    slot.committed[0].position.store(position, std::memory_order_relaxed);
    slot.committed[0].token.store(0, std::memory_order_relaxed);
    slot.name_length = static_cast<uint8_t>(cursor.size());
    std::memset(slot.name, 0, sizeof(slot.name));
    if (!cursor.empty()) std::memcpy(slot.name, cursor.data(), cursor.size());
    slot.uid = uid;
    // Release: pairs with the producer's acquire load in slowest_reader(); it sees the
    // position stored above with the slot (and a reader the other fields).
    slot.in_use.store(1, std::memory_order_release);
    // Relaxed: a scan bound only; a producer that misses the new slot is caught by the
    // reader's own oldest_offset checks.
    if (page.slots_in_use_hint.load(std::memory_order_relaxed) <= i) {
      page.slots_in_use_hint.store(i + 1, std::memory_order_relaxed);
    }
    return i;
  }
  return Status(ErrorCode::kTooManyReaders,
                fmt::format("all {} reader slots are taken", wait.max_readers()));
}

Status validate_cursor_name(std::string_view name) {
  bool ok = !name.empty() && name.size() <= kMaxCursorNameLength;
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '_' || c == ':' || c == '@' || c == '-');
  }
  if (ok) return Status();
  return Status(ErrorCode::kInvalidArgument,
                fmt::format("cursor name \"{}\" is invalid: use 1 to {} of A-Z a-z 0-9 . _ : @ -",
                            name.substr(0, 80), kMaxCursorNameLength));
}

std::string_view cursor_name(const ReaderSlot& slot) {
  return std::string_view(slot.name, std::min<size_t>(slot.name_length, kMaxCursorNameLength));
}

CursorPosition cursor_committed(const ReaderSlot& slot) {
  // Acquire: pairs with ReaderCore::commit()'s release store; the entry it names is whole.
  uint32_t seq = slot.commit_seq.load(std::memory_order_acquire);
  const CursorCommit& entry = slot.committed[seq & 1];
  // Relaxed: ordered by the acquire above; the writer only rewrites the other entry next.
  return {entry.position.load(std::memory_order_relaxed),
          entry.token.load(std::memory_order_relaxed)};
}

namespace {

// After the daemon changed a slot (freed it, or moved its hold): wakes a producer waiting for
// room. seq_cst fence: Dekker with the producer's space_wanted store and re-scan: either it
// sees the slot's new value, or we see it waiting and wake it.
void wake_space_waiter(WaitPage& page) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (page.space_wanted.load(std::memory_order_relaxed) != kNobody) wake_producer_for_space(page);
}

// Makes the hold of cursor slot `index` exactly its committed position.
void settle_cursor_hold(const WaitFile& wait, uint32_t index) {
  ReaderSlot& slot = wait.slot(index);
  // Release: as the reader's own store in ReaderCore::store_position() (its reads are done).
  slot.position.store(cursor_committed(slot).position, std::memory_order_release);
  wake_space_waiter(wait.page());
}

}  // namespace

void wake_producer_for_space(WaitPage& page) {
  // Release: pairs with the producer's acquire load of space_word before it scans again.
  page.space_word.fetch_add(1, std::memory_order_release);
  futex_wake_all(&page.space_word, /*shared=*/true);
}

void hold_cursor(const WaitFile& wait, uint32_t index, uint32_t pid) {
  if (index >= wait.max_readers()) return;
  store_slot_pid(wait.slot(index), pid);
  settle_cursor_hold(wait, index);  // its last reader may have let go (or died) with a lazy hold
}

std::vector<SlotInfo> slots_in_use(const WaitFile& wait) {
  std::vector<SlotInfo> out;
  for (uint32_t i = 0; i < wait.max_readers(); ++i) {
    const ReaderSlot& slot = wait.slot(i);
    if (!slot_in_use(slot)) continue;
    out.push_back(SlotInfo{i, load_slot_pid(slot), load_slot_position(slot), slot.cursor != 0});
  }
  return out;
}

std::vector<AdoptedSlot> adopt_reader_slots(const WaitFile& wait, bool this_boot,
                                            const std::function<bool(uint32_t pid)>& alive) {
  std::vector<AdoptedSlot> kept;
  std::set<std::string, std::less<>> cursors;
  for (uint32_t i = 0; i < wait.max_readers(); ++i) {
    ReaderSlot& slot = wait.slot(i);
    // Relaxed: only the daemon claims slots, and no reader of ours holds one yet.
    bool in_use = slot.in_use.load(std::memory_order_relaxed) != 0;
    uint32_t pid = load_slot_pid(slot);
    bool live = in_use && this_boot && alive(pid);
    std::string cursor(cursor_name(slot));
    if (in_use && slot.cursor != 0 && validate_cursor_name(cursor).ok() &&
        cursors.insert(cursor).second) {
      hold_cursor(wait, i, live ? pid : 0);
      kept.push_back(AdoptedSlot{i, live ? pid : 0, slot.uid, std::move(cursor)});
    } else if (live && slot.cursor == 0) {
      kept.push_back(AdoptedSlot{i, pid, slot.uid, ""});
    } else {
      release_reader_slot(wait, i);
    }
  }
  return kept;
}

void release_reader_slot(const WaitFile& wait, uint32_t index) {
  if (index >= wait.max_readers()) return;
  // Release: pairs with the producer's acquire load; it stops counting this reader.
  wait.slot(index).in_use.store(0, std::memory_order_release);
  wait.slot(index).cursor = 0;  // daemon-only field; the slot is free now
  wake_space_waiter(wait.page());
}

}  // namespace shmstream::shm
