// daemon/registry.hpp — the daemon's table of streams.
//
// Each stream is one segment file in the segment directory. The registry creates them, hands
// out descriptors (read-write to the producer, read-only to readers), counts who holds each
// stream, ends streams whose producer went away, and unlinks removed streams, dropping them
// from the table once nobody holds them (the kernel frees the memory with the last mapping).
//
// Not thread-safe: used only from the daemon's event-loop thread.
#pragma once

#include <kj/io.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/access.hpp"
#include "daemon/persistent_dirs.hpp"
#include "shm/reader_table.hpp"
#include "shm/segment.hpp"
#include "shmstream/status.hpp"

namespace shmstream::daemon {

struct RegistryConfig {
  std::string segment_dir = "/dev/shm";
  // Where persistent streams live unless their creator names a directory; empty: only
  // streams that name one may be persistent. Created when first needed. Its file
  // "directories" lists the other directories holding this daemon's persistent streams.
  std::string persist_dir;
  std::string instance;     // see shm::instance_tag()
  std::string socket_path;  // the control socket, written into each segment (shmstream gc)
  shm::DaemonKey key;       // signs each segment's header: what a restart adopts
  uint64_t default_max_bytes = shm::kDefaultMaxDataSize;
  uint32_t default_max_readers = shm::kDefaultMaxReaders;
  // Live streams one user may have created (removed ones still held do not count).
  uint32_t max_streams_per_user = 4096;
  // Memory (in-memory streams' allocated bytes, removed-but-held ones included) one user's
  // streams may take; 0 = no limit. Root and the daemon's own user are not limited.
  uint64_t max_bytes_per_user = 0;
  // Free space on the segment file system that no limited user's new stream may take.
  uint64_t reserve_bytes = 0;
  // Rings are allocated whole at creation: the largest one a client may ask for.
  uint64_t max_ring_capacity = shm::kMaxRingCapacity;
};

// What a new stream is (see proto CreateOptions).
struct CreateParams {
  uint64_t max_bytes = 0;      // unbounded streams; 0 = the configured default
  uint64_t ring_capacity = 0;  // 0 = unbounded
  bool block_when_full = false;
  bool records = false;
  uint32_t max_readers = 0;  // 0 = the configured default
  bool persistent = false;   // in a directory on disk
  std::string directory;     // absolute; empty = persist_dir (if persistent)
  Mode mode = Mode::kOwner;
  uint32_t resume_grace_ms = 0;  // see proto CreateOptions.resumeGraceMs
  uint64_t origin = 0;           // see proto CreateOptions.origin
  uint32_t stall_limit_ms = 0;   // see proto CreateOptions.stallLimitMs
};

// Files a daemon would not adopt are renamed "<shm::kQuarantinePrefix><file>.<reason>" in their
// directory: never deleted on doubt, listed and removed on request by `shmstream gc`.
std::string quarantined_name(const std::string& file, const std::string& tag);

// Whether process `pid` runs (one we may not signal counts: it exists).
bool process_alive(pid_t pid);

// The longest resume grace a stream may ask for.
inline constexpr uint32_t kMaxResumeGraceMs = 24u * 3600 * 1000;

// A named cursor of a stream: its slot in the reader table stays claimed while no reader holds it.
struct Cursor {
  uint32_t slot = 0;
  pid_t reader_pid = 0;     // the reader holding it now; 0 if none
  uint64_t generation = 0;  // bumped each time a reader takes it
  uid_t uid = 0;            // the user that made it: only they (and root) may read as it
};

struct Stream {
  std::string name;
  uint64_t id = 0;
  int dir_fd = -1;  // the directory holding its files (the Registry's, or dir_holder's)
  std::shared_ptr<kj::AutoCloseFd> dir_holder;  // a persistent directory, open while used
  std::string directory;  // a persistent stream's directory; empty for shared memory
  std::string file_name;  // in that directory
  std::string table_file_name() const { return file_name + ".t"; }
  // The path of the segment file, as its producer names it to open reader pages beside it.
  std::string segment_path;
  // From the header (set at creation; bounded, should the file say more): 0 = the stream
  // aborts when its producer dies.
  uint32_t resume_grace_ms() const;
  // The daemon's read-write mapping of the segment's header page only. Its open file description
  // (nobody else's: producers and readers get descriptions of their own) holds a shared flock
  // while the daemon serves the stream: what tells `shmstream gc` (which takes it exclusive
  // before it removes anything) that a live daemon serves this file.
  shm::Segment segment;
  shm::ReaderTable table;                     // the daemon's read-write mapping of the reader table
  std::shared_ptr<kj::AutoCloseFd> table_fd;  // the reader table, read-only: for producers
  // The reader page of each slot whose reader has one: its number and the daemon's fd, for
  // pread/pwrite only (its reader may truncate it; the daemon never maps it).
  struct PageFile {
    uint64_t number = 0;
    kj::AutoCloseFd fd;
  };
  std::map<uint32_t, PageFile> pages;
  // Adopted from an earlier daemon, which may have left reader pages this one never knew: its
  // removal then looks for them in the directory. (A stream this daemon made has its pages
  // all in `pages`: removing it needs no scan of a directory of thousands of files.)
  bool stray_pages_possible = false;
  std::string damage_note;  // why it takes no new readers (an unusable reader table), if so
  Owner owner;  // the creator (from its socket): owner and group of the files, and its mode
  uint32_t readers = 0;  // live Reader capabilities
  bool producer_attached = false;
  // Adopted open, its producer's process alive but not reattached yet: it holds a removed stream
  // as an attached producer does, until it reattaches, ends the stream or exits.
  bool producer_unclaimed = false;
  // Bumped each time a producer takes the stream (create, reattach, resume): what a producer
  // capability or a timer saw, so that a predecessor's late news is told apart.
  uint64_t producer_epoch = 0;
  bool awaiting_producer = false;        // its producer's process exited; it may be resumed
  bool removed = false;                  // unlinked; kept only while held
  uint64_t removed_seq = 0;              // when removed (Registry::removals_): later is higher
  mutable bool damage_reported = false;  // its damage (damage_of()) was logged
  std::map<std::string, Cursor> cursors;
  // Reader slots an earlier daemon gave to readers still alive when this one adopted the
  // stream (slot -> reader pid): kept for them to reattach, freed when their process exits.
  std::map<uint32_t, pid_t> orphans;
  // Every reader slot claimed (anonymous readers' and named cursors'), by the user that claimed
  // it: what the per-user share of the slots counts (access.hpp slot_share()).
  std::map<uint32_t, uid_t> slot_users;
  uint32_t slots_held_by(uid_t uid) const;
  // How it is written, as the daemon sees it (Registry::sample_writes()); for stat only.
  struct Writes {
    uint64_t bytes = 0;           // the committed length last seen
    uint64_t changed_ns = 0;      // CLOCK_MONOTONIC when it last grew; 0: not seen to grow
    uint64_t window_ns = 0;       // the rate's window: since when
    uint64_t window_bytes = 0;    // and from what length
    double rate_bytes_per_s = 0;  // over the last full window (about a second)
  } writes;
};

struct CursorSnapshot {
  std::string name;
  uint64_t position;
  uint32_t reader_pid;
};

struct ReaderSnapshot {
  uint32_t pid;
  uint64_t position;
  std::string cursor;  // empty for an anonymous reader
};

struct StreamSnapshot {
  std::string name;
  shm::StreamState state;
  bool removing;
  uint64_t bytes;
  uint32_t readers;
  uint32_t producer_pid;
  uint32_t producer_uid;
  uint64_t max_bytes;
  uint64_t created_unix_ns;
  uint64_t stream_id;
  uint64_t ring_capacity;
  bool block_when_full;
  bool records;
  uint64_t oldest;
  uint32_t max_readers;
  uint64_t slowest_reader;  // lowest published reader position; `bytes` if none
  std::vector<CursorSnapshot> cursors;
  std::vector<ReaderSnapshot> attached;
  std::string directory;
  uint32_t owner_gid;
  Mode mode;
  uint64_t origin;
  uint32_t resume_grace_ms;
  bool awaiting_producer;
  std::string damage;  // empty, or what damage_of() found
  // A blocking ring's producer waiting for room: the offset it waits for readers to pass
  // (kNobody if it does not wait), and for how long it has waited.
  uint64_t producer_waits_for = shm::kNobody;
  uint64_t stalled_ms = 0;
  uint32_t stall_limit_ms = 0;
  AbortReason abort_reason;                 // an aborted stream's (shm::load_abort_reason)
  uint64_t record_count = 0;                // records streams: as its producer counts them
  double write_rate = 0;                    // bytes per second over about the last second
  uint64_t last_write_age_ms = UINT64_MAX;  // since the length last grew; UINT64_MAX: unseen
  uint64_t allocated_bytes = 0;  // what its files take (segment, reader table, reader pages)
};

// What is wrong with a stream's files, found without trusting them (a fault recovered in the
// daemon's mappings, sizes by fstat): empty when nothing is. Its readers get kCorrupt.
std::string damage_of(const Stream& stream);
// Milliseconds since `since_ns` (CLOCK_MONOTONIC, as a producer stores stalled_since_ns and
// the daemon Stream::Writes::changed_ns).
uint64_t stalled_ms_since(uint64_t since_ns);

// What a reader holds (see Registry::open).
struct ReaderGrant {
  uint32_t slot = 0;
  std::string cursor;       // empty for an anonymous reader
  uint64_t generation = 0;  // the cursor's, when taken
};

// A producer let in (create, resume): the stream, and a read-write segment fd for it.
struct ProducerAccess {
  std::shared_ptr<Stream> stream;
  kj::AutoCloseFd fd;
};

// A reader let in (open, reattach): the stream, its slot, and a read-only segment fd (none for
// a reattaching reader, which kept its mapping).
struct ReaderAccess {
  std::shared_ptr<Stream> stream;
  kj::AutoCloseFd fd;
  ReaderGrant grant;
  kj::AutoCloseFd page_fd;  // its reader page, read-write (none for a reattaching reader)
};

class Registry {
 public:
  explicit Registry(RegistryConfig config);
  ~Registry();

  // Creates the segment and its reader table (beside it, "<segment>.t"); returns the stream and
  // a read-write segment fd for its producer.
  Result<ProducerAccess> create(const std::string& name, const CreateParams& params,
                                const Peer& peer);
  // Opens for reading: a read-only segment fd and a reader slot; the reader is counted.
  // kTooManyReaders when every slot is taken. With a cursor name, the slot is that cursor's
  // (created if new); kBusy while a live reader holds it.
  Result<ReaderAccess> open(const std::string& name, const std::string& cursor, const Peer& peer);
  // Only the owner (or root, or the daemon's own user) may remove a stream. A named cursor is
  // its maker's: only they (or a privileged user) may read as it; they, the stream's owner and
  // privileged users may remove it. A user other than the owner holds at most slot_share()
  // of the slots.
  Status remove(const std::string& name, bool force, const Peer& peer);
  Status remove_cursor(const std::string& name, const std::string& cursor, const Peer& peer);
  std::vector<StreamSnapshot> list() const;
  Result<StreamSnapshot> stat(const std::string& name) const;

  // A client whose daemon restarted takes back what it held (it still has its mappings): the
  // producer of stream `stream_id` (only its own pid may), or reader slot `slot` (kept for
  // its pid since adoption). The stream id guards against a name re-created meanwhile.
  Result<std::shared_ptr<Stream>> reattach_producer(const std::string& name, uint64_t stream_id,
                                                    const Peer& peer);
  Result<ReaderAccess> reattach_reader(const std::string& name, uint64_t stream_id, uint32_t slot,
                                       const Peer& peer);
  // An adopted reader slot's process exited before reattaching: its slot is freed (a cursor's
  // is kept, unheld).
  void orphan_reader_exited(const std::shared_ptr<Stream>& stream, uint32_t slot, pid_t pid);
  struct Orphan {
    std::shared_ptr<Stream> stream;
    uint32_t slot;
    pid_t pid;
  };
  std::vector<Orphan> orphan_readers() const;
  // Frees the adopted slots not reattached yet (their process lives, but no longer holds the
  // reader: it let go while no daemon ran, or cannot reconnect).
  void expire_orphans();
  // Releases each removed stream held only by an unclaimed producer that has ended it (closed
  // or aborted through its mapping, without reattaching). Called periodically by the server.
  void release_ended_unclaimed();

  // Another process takes over stream `name`, open and awaiting a producer (its producer
  // died; it has a resume grace): a read-write segment fd for it. Owner or root only.
  Result<ProducerAccess> resume(const std::string& name, const Peer& peer);
  // A producer's capability (taken at `epoch`) went away: closed_cleanly false ends the
  // stream as aborted, unless it has a resume grace (then its process's exit starts the grace).
  void producer_detached(const std::shared_ptr<Stream>& stream, bool closed_cleanly,
                         uint64_t epoch);
  // A reader's capability went away: its slot is freed (a blocked producer may go on); a
  // cursor's slot is kept, committed where its reader left it.
  void reader_detached(const std::shared_ptr<Stream>& stream, const ReaderGrant& grant);
  // A persistent stream ended: start writing its files back to disk.
  void flush(const Stream& stream) const;
  // Producer process `pid` exited (seen through its pidfd): an open stream it produced is
  // aborted, or, with a resume grace, awaits a successor: then true, and the caller calls
  // successor_overdue() with the stream's producer_epoch after resume_grace_ms.
  bool producer_exited(const std::shared_ptr<Stream>& stream, pid_t pid);
  // The grace ran out: aborted if nobody resumed it since `epoch`.
  void successor_overdue(const std::shared_ptr<Stream>& stream, uint64_t epoch);
  // Open streams awaiting a successor since adoption (their producer died while no daemon
  // ran): the server gives each its grace.
  std::vector<std::shared_ptr<Stream>> awaiting_streams() const;
  // Open streams whose producer runs but is not connected to this daemon (adopted after a
  // restart): the server watches their pids.
  std::vector<std::shared_ptr<Stream>> unattached_open_streams() const;
  // Blocking rings with a stall limit whose producer has waited for room longer than it: each
  // reader (or cursor nobody holds) still below what it waits for is evicted: its slot holds
  // nothing from now on, and its next read (a cursor: its next open) fails saying so. Called
  // periodically by the server.
  void enforce_stall_limits();
  // Notes, for each live stream, whether its committed length grew and its rate over about the
  // last second (StreamSnapshot::write_rate, last_write_age_ms). Called periodically.
  void sample_writes();
  // Every user over --max-bytes-per-user (a producer that grew past it since its stream was
  // made) has its growing in-memory streams aborted. Returns how many.
  size_t enforce_byte_quotas();
  // The memory user `uid`'s in-memory streams take now (allocated blocks), held ones included.
  uint64_t memory_held_by(uid_t uid) const;
  // While shutting down, detached producers do not abort their streams (they keep writing).
  void set_shutting_down() { shutting_down_ = true; }
  // Once set, a released stream's mappings and descriptors are let go of only when the server
  // calls bury_released(), which `schedule` (called as the first of them is released) arranges:
  // after the reply that released it is written. Unset, at once.
  void defer_releases(std::function<void()> schedule) { schedule_burial_ = std::move(schedule); }
  void bury_released() { released_.clear(); }
  // `shmstreamd --ephemeral` exiting: every stream in shared memory is cancelled (its readers
  // and producer wake and stop) and its files unlinked. Persistent streams stay: they are on
  // disk because their creator asked for it. Returns how many were removed.
  size_t remove_memory_streams_for_exit();

  size_t live_count() const { return live_.size(); }
  // What the daemon holds, for `shmstream daemon status`.
  struct Holdings {
    size_t streams = 0;         // live
    size_t removing = 0;        // removed, still held
    uint64_t memory_bytes = 0;  // allocated by in-memory streams' segments
    uint64_t disk_bytes = 0;    // allocated by persistent streams' segments
  };
  Holdings holdings() const;
  const RegistryConfig& config() const { return config_; }

 private:
  void release_if_unheld(const std::shared_ptr<Stream>& stream);
  // A reader no longer holds `slot`: a cursor's stays claimed, unheld, its hold settled; any
  // other slot is freed (a blocked producer may go on).
  void let_go(Stream& stream, uint32_t slot, Cursor* cursor);
  // Lets go of adopted slot `slot` if it is still kept for `pid`; false if it was reattached.
  // With `tell` (its process lives), marks its page so that its reader's reads fail saying so,
  // and wakes it.
  bool forget_orphan(Stream& stream, uint32_t slot, pid_t pid, bool tell);
  // The live stream of that name; kNotFound if there is none (or it was removed).
  Result<std::shared_ptr<Stream>> find_live(const std::string& name) const;
  // remove() of a name with no live stream: `not_found`, unless streams of that name are being
  // removed (still held); then a forced removal cancels their readers and producer.
  Status remove_removing(const std::string& name, bool force, const Peer& peer, Status not_found);
  // Removes `stream` (already out of live_): cancelled if `cancel`, its files unlinked, kept in
  // removing_ while held.
  void retire(const std::shared_ptr<Stream>& stream, bool cancel);
  // The streams of that name being removed (still held).
  std::vector<std::shared_ptr<Stream>> removing_named(const std::string& name) const;
  Result<std::shared_ptr<Stream>> find_reattachable(const std::string& name,
                                                    uint64_t stream_id) const;
  // Gives a new file to the stream's owner with its mode (the daemon may run as root).
  Status give_to_owner(int fd, const Stream& stream, mode_t bits, const std::string& what) const;
  // Whether the byte quota and the reserve apply to `uid`: not to root nor the daemon's user.
  static bool memory_limited(uid_t uid) { return uid != 0 && uid != geteuid(); }
  // Every stream the daemon serves: live ones, then removed ones still held (whose producer
  // may still write, and whose readers may still hold it back).
  template <typename F>
  void each_stream(F&& f) const {
    for (const auto& [name, stream] : live_) f(stream);
    for (const auto& stream : removing_) f(stream);
  }
  // Whether user `uid` may make stream `name` in memory (its quota, the reserve); lowers
  // *max_bytes to the quota.
  Status may_take_memory(const std::string& name, const CreateParams& create, uid_t uid,
                         uint64_t* max_bytes) const;
  // Adopts the streams whose files lie in `dir_fd` (held open by `holder`, if not ours);
  // quarantines the files it does not adopt (registry_adopt.cpp).
  void adopt_existing_segments(int dir_fd, const std::shared_ptr<kj::AutoCloseFd>& holder,
                               const std::string& directory);
  // Moves `file` of `dir_fd` aside as quarantined_name(file, tag), logging `why`; where it
  // cannot be moved, it stays (never deleted on doubt).
  void quarantine(int dir_fd, const std::string& directory, const std::string& file,
                  const std::string& tag, const std::string& why);
  // Creates (or, with reuse, validates and keeps) the reader table of `stream`, and maps it.
  Status ensure_reader_table(Stream& stream, bool reuse, uint32_t max_readers);
  // Adoption: keeps the slots of readers still alive and the cursors, frees the rest.
  void adopt_reader_slots(Stream& stream);
  // A new reader page for `slot`, its reader starting at `start` (a cursor: committed there
  // with `token`): created, given to the stream's owner read-only, kept in stream.pages.
  Result<uint64_t> make_page(Stream& stream, uint32_t slot, uint64_t start, uint64_t token);
  // Forgets slot `slot`'s page (unlinked; its reader's mapping lives on, counting for nothing).
  void drop_page(Stream& stream, uint32_t slot);
  void unlink_page(const Stream& stream, uint64_t page);
  // A cursor slot's committed position: its page's last commit, else the table's record.
  shm::CursorPosition cursor_position(const Stream& stream, uint32_t slot) const;
  void unlink_files(const Stream& stream);
  StreamSnapshot snapshot(const Stream& stream) const;

  RegistryConfig config_;
  kj::AutoCloseFd dir_fd_;  // segment_dir
  PersistentDirectories persistent_;
  bool shutting_down_ = false;
  std::map<std::string, std::shared_ptr<Stream>> live_;  // by name
  std::set<std::shared_ptr<Stream>> removing_;           // removed, still held
  // Streams per owner, live and removing (what --max-streams-per-user counts): kept as they
  // come (into live_) and go (out of removing_), so that a create does not walk every stream.
  std::map<uid_t, size_t> streams_of_;
  std::function<void()> schedule_burial_;
  std::vector<std::shared_ptr<Stream>> released_;  // to be let go of (defer_releases())
  uint64_t removals_ = 0;                          // streams removed so far
  uint64_t quarantined_ = 0;                       // files moved aside at adoption
};

}  // namespace shmstream::daemon
