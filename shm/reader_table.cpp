#include "shm/reader_table.hpp"

#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <new>

#include "shm/futex.hpp"
#include "shm/posix_error.hpp"

namespace shmstream::shm {
namespace {

// After the daemon changed slots: release fetch_add, pairing with load_generation().
void bump_generation(const ReaderTable& table) {
  table.mutable_page().generation.fetch_add(1, std::memory_order_release);
}

// pwrite/pread of a whole buffer at `offset`.
Status write_at(int fd, const void* data, size_t length, uint64_t offset, const char* what) {
  ssize_t n = pwrite(fd, data, length, static_cast<off_t>(offset));
  if (n < 0) return from_errno(errno, what);
  if (static_cast<size_t>(n) != length)
    return Status(ErrorCode::kIo, std::string(what) + ": short write");
  return Status();
}

}  // namespace

Status format_reader_table(int fd, uint64_t stream_id, uint32_t max_readers) {
  if (max_readers == 0 || max_readers > kMaxReadersLimit) {
    return Status(
        ErrorCode::kInvalidArgument,
        fmt::format("maximum readers {} is out of range (1 to {})", max_readers, kMaxReadersLimit));
  }
  const uint64_t size = table_file_size(max_readers);
  // Every page allocated first: a full file system is kNoSpace here, not a SIGBUS when the
  // first reader comes.
  if (Status s = reserve_file(fd, 0, size); !s.ok()) return s.with_context("the reader table");
  // New and not handed out yet; the slots are zero (free), as a new file's pages are. The
  // first page is built in private memory and written with one pwrite (no mapping of a file
  // that could shrink under us, no mmap/munmap pair); the fd's hand-over publishes it.
  alignas(TablePage) std::byte raw[kTablePageSize];
  std::memset(raw, 0, sizeof(raw));
  auto* page = new (raw) TablePage{};
  page->magic = kTableMagic;
  page->layout_version = kLayoutVersion;
  page->max_readers = max_readers;
  page->stream_id = stream_id;
  return write_at(fd, raw, sizeof(raw), 0, "writing the reader table");
}

Result<ReaderTable> ReaderTable::map(int fd, uint64_t stream_id, Access access,
                                     std::string_view what) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return from_errno(errno, fmt::format("{}: the reader table", what));
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < kTablePageSize) {
    return Status(ErrorCode::kCorrupt, fmt::format("{}: truncated reader table", what));
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  const int prot = access == Access::kReadWrite ? PROT_READ | PROT_WRITE : PROT_READ;
  void* base = mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED)
    return from_errno(errno, fmt::format("{}: mapping the reader table", what));
  ReaderTable out;
  out.page_ = static_cast<TablePage*>(base);
  out.length_ = size;
  out.guard_ = FaultGuard(base, size, prot);
  const TablePage& page = out.page();
  const uint32_t max_readers = page.max_readers;
  if (page.magic != kTableMagic || page.layout_version != kLayoutVersion ||
      page.stream_id != stream_id) {
    return Status(ErrorCode::kCorrupt,
                  fmt::format("{}: reader table does not belong to this segment (magic {:#x}, "
                              "version {}, stream id {:#x})",
                              what, page.magic, page.layout_version, page.stream_id));
  }
  if (max_readers == 0 || max_readers > kMaxReadersLimit || table_file_size(max_readers) != size) {
    return Status(ErrorCode::kCorrupt, fmt::format("{}: reader table of {} bytes for {} readers",
                                                   what, size, max_readers));
  }
  out.max_readers_ = max_readers;
  return out;
}

ReaderTable& ReaderTable::operator=(ReaderTable&& other) noexcept {
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

ReaderTable::~ReaderTable() {
  guard_.reset();
  if (page_ != nullptr) munmap(page_, length_);
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

std::string_view cursor_name(const TableSlot& slot) {
  return std::string_view(slot.name, std::min<size_t>(slot.name_length, kMaxCursorNameLength));
}

Result<uint32_t> claim_slot(const ReaderTable& table, const SlotClaim& claim) {
  if (!claim.cursor.empty()) {
    if (Status s = validate_cursor_name(claim.cursor); !s.ok()) return s;
  }
  TablePage& page = table.mutable_page();
  for (uint32_t i = 0; i < table.max_readers(); ++i) {
    TableSlot& slot = table.slot(i);
    // Relaxed: only the daemon (one thread) writes the table.
    if (slot.in_use.load(std::memory_order_relaxed) != 0) continue;
    // Relaxed: published by the release store of in_use below.
    slot.flags.store(claim.cursor.empty() ? 0 : kSlotCursor, std::memory_order_relaxed);
    slot.pid.store(claim.pid, std::memory_order_relaxed);
    slot.uid.store(claim.uid, std::memory_order_relaxed);
    slot.page.store(claim.page, std::memory_order_relaxed);
    slot.hold.store(claim.hold, std::memory_order_relaxed);
    slot.token.store(claim.token, std::memory_order_relaxed);
    slot.name_length = static_cast<uint8_t>(claim.cursor.size());
    std::memset(slot.name, 0, sizeof(slot.name));
    if (!claim.cursor.empty()) std::memcpy(slot.name, claim.cursor.data(), claim.cursor.size());
    // Release: pairs with slot_in_use(); the fields above come with the slot.
    slot.in_use.store(1, std::memory_order_release);
    // Relaxed: a scan bound; the generation bump below publishes it.
    if (page.slots_bound.load(std::memory_order_relaxed) <= i) {
      page.slots_bound.store(i + 1, std::memory_order_relaxed);
    }
    bump_generation(table);
    return i;
  }
  return Status(ErrorCode::kTooManyReaders,
                fmt::format("all {} reader slots are taken", table.max_readers()));
}

void wake_space_waiter(SegmentHeader& header) {
  // seq_cst fence: Dekker with the producer's space_wanted store and re-scan: either it sees
  // the slot's new value, or we see it waiting and wake it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (header.space_wanted.load(std::memory_order_relaxed) == kNobody) return;
  // Release: pairs with the producer's acquire load of space_word before it scans again.
  header.space_word.fetch_add(1, std::memory_order_release);
  futex_wake_all(&header.space_word, /*shared=*/true);
}

void set_slot_reader(const ReaderTable& table, SegmentHeader& header, uint32_t index, uint32_t pid,
                     uint64_t page, uint64_t hold, uint64_t token) {
  if (index >= table.max_readers()) return;
  TableSlot& slot = table.slot(index);
  // Relaxed: published by the generation bump.
  slot.pid.store(pid, std::memory_order_relaxed);
  slot.hold.store(hold, std::memory_order_relaxed);
  slot.token.store(token, std::memory_order_relaxed);
  slot.page.store(page, std::memory_order_relaxed);
  bump_generation(table);
  wake_space_waiter(header);
}

void release_slot(const ReaderTable& table, SegmentHeader& header, uint32_t index) {
  if (index >= table.max_readers()) return;
  // Release: pairs with slot_in_use(); the producer stops counting this reader.
  table.slot(index).in_use.store(0, std::memory_order_release);
  bump_generation(table);
  wake_space_waiter(header);
}

void evict_slot(const ReaderTable& table, SegmentHeader& header, uint32_t index) {
  if (index >= table.max_readers()) return;
  // Relaxed: published by the generation bump.
  table.slot(index).flags.fetch_or(kSlotEvicted, std::memory_order_relaxed);
  bump_generation(table);
  wake_space_waiter(header);
}

std::vector<SlotInfo> slots_in_use(const ReaderTable& table) {
  std::vector<SlotInfo> out;
  for (uint32_t i = 0; i < table.max_readers(); ++i) {
    const TableSlot& slot = table.slot(i);
    if (!slot_in_use(slot)) continue;
    // Relaxed: the daemon reads its own writes; the producer reads after load_generation().
    const uint32_t flags = slot.flags.load(std::memory_order_relaxed);
    out.push_back(SlotInfo{
        i, slot.pid.load(std::memory_order_relaxed), slot.uid.load(std::memory_order_relaxed),
        slot.page.load(std::memory_order_relaxed), slot.hold.load(std::memory_order_relaxed),
        slot.token.load(std::memory_order_relaxed), (flags & kSlotCursor) != 0,
        (flags & kSlotEvicted) != 0, std::string(cursor_name(slot))});
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

std::string reader_page_file(std::string_view segment_file, uint64_t page) {
  return fmt::format("{}.r{:016x}", segment_file, page);
}

Status format_reader_page(int fd, uint64_t stream_id, uint32_t slot, uint64_t page, uint64_t start,
                          uint64_t token) {
  if (Status s = reserve_file(fd, 0, kReaderPageSize); !s.ok()) {
    return s.with_context("a reader page");
  }
  // Built in private memory, written in one pwrite: the daemon never maps a page.
  auto built = std::make_unique<ReaderPage>();
  built->magic = kPageMagic;
  built->layout_version = kLayoutVersion;
  built->slot = slot;
  built->stream_id = stream_id;
  built->page = page;
  // Relaxed: private memory, published by the fd's hand-over.
  for (WakeRequest& request : built->wake) request.wanted.store(kNobody, std::memory_order_relaxed);
  built->position.store(start, std::memory_order_relaxed);
  built->committed[0].position.store(start, std::memory_order_relaxed);
  built->committed[0].token.store(token, std::memory_order_relaxed);
  return write_at(fd, built.get(), sizeof(ReaderPage), 0, "writing a reader page");
}

Result<PageState> read_reader_page(int fd, uint64_t stream_id, uint32_t slot, uint64_t page) {
  // Read into private memory, then judged: the page's reader may write anything there.
  auto copy = std::make_unique<ReaderPage>();
  ssize_t n = pread(fd, copy.get(), kReaderPageSize, 0);
  if (n < 0) return from_errno(errno, "reading a reader page");
  if (n != static_cast<ssize_t>(kReaderPageSize)) {
    return Status(ErrorCode::kCorrupt, fmt::format("reader page of {} bytes (truncated)", n));
  }
  const ReaderPage* p = copy.get();
  if (p->magic != kPageMagic || p->layout_version != kLayoutVersion || p->stream_id != stream_id ||
      p->slot != slot || p->page != page) {
    return Status(ErrorCode::kCorrupt, "reader page of another slot or stream");
  }
  PageState out;
  out.position = load_page_position(*p);
  out.committed = page_committed(*p);
  out.evicted = p->evicted.load(std::memory_order_relaxed) != 0;  // private copy
  return out;
}

Status mark_page_evicted(int fd, uint32_t why) {
  return write_at(fd, &why, sizeof(why), offsetof(ReaderPage, evicted), "evicting a reader");
}

Result<ReaderPageMap> ReaderPageMap::map(int fd, Access access, uint64_t stream_id, uint32_t slot,
                                         uint64_t page, std::string_view what) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return from_errno(errno, fmt::format("{}: a reader page", what));
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < kReaderPageSize) {
    return Status(ErrorCode::kCorrupt, fmt::format("{}: truncated reader page", what));
  }
  const int prot = access == Access::kReadWrite ? PROT_READ | PROT_WRITE : PROT_READ;
  void* base = mmap(nullptr, kReaderPageSize, prot, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return from_errno(errno, fmt::format("{}: mapping a reader page", what));
  ReaderPageMap out;
  out.page_ = static_cast<ReaderPage*>(base);
  out.guard_ = FaultGuard(base, kReaderPageSize, prot);
  const ReaderPage& p = out.page();
  if (p.magic != kPageMagic || p.layout_version != kLayoutVersion || p.stream_id != stream_id ||
      p.slot != slot || (page != 0 && p.page != page) || out.faulted()) {
    return Status(
        ErrorCode::kCorrupt,
        fmt::format("{}: reader page {:x} is not slot {}'s of this stream", what, page, slot));
  }
  return out;
}

ReaderPageMap& ReaderPageMap::operator=(ReaderPageMap&& other) noexcept {
  if (this != &other) {
    guard_.reset();
    if (page_ != nullptr) munmap(page_, kReaderPageSize);
    page_ = std::exchange(other.page_, nullptr);
    guard_ = std::move(other.guard_);
  }
  return *this;
}

ReaderPageMap::~ReaderPageMap() {
  guard_.reset();
  if (page_ != nullptr) munmap(page_, kReaderPageSize);
}

CursorPosition page_committed(const ReaderPage& page) {
  // Acquire: pairs with ReaderCore::write_commit()'s release store; the entry it names is whole.
  uint32_t seq = page.commit_seq.load(std::memory_order_acquire);
  const CursorCommit& entry = page.committed[seq & 1];
  // Relaxed: ordered by the acquire above; the writer only rewrites the other entry next.
  return {entry.position.load(std::memory_order_relaxed),
          entry.token.load(std::memory_order_relaxed)};
}

}  // namespace shmstream::shm
