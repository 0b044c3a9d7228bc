// shmstream/client.hpp — the shmstream client library: create, read, list and remove streams.
//
// A stream is an append-only byte sequence in shared memory. One Producer appends; any number
// of Readers, in any processes, read it zero-copy from a read-only mapping, each at its own
// offset, blocking until the bytes they want are committed. Streams are named and managed by
// the daemon shmstreamd (started for you if none answers); data never passes through it.
//
//   auto client = shmstream::Client::connect().value();
//   auto producer = client.create("cam0").value();
//   producer.append("hello");
//   producer.close();
//   auto reader = client.open("cam0").value();
//   char buf[64];
//   size_t n = reader.read(std::as_writable_bytes(std::span(buf))).value();  // 5
//
// Thread-safety: a Client is safe for concurrent use from many threads. A Producer or Reader is
// used by one thread at a time, except Reader::close(), which any thread may call to wake a read
// blocked in another. Producers and Readers keep their Client's connection alive.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmstream/abort_reason.hpp"
#include "shmstream/cancellation.hpp"
#include "shmstream/status.hpp"

namespace shmstream {

using Timeout = std::chrono::nanoseconds;
// Wait as long as it takes.
inline constexpr Timeout kForever = Timeout::max();

enum class StreamState {
  kOpen = 1,       // the producer may append
  kClosed = 2,     // ended cleanly: readers reach a clean end
  kAborted = 3,    // the producer died or gave up: readers get kProducerDied past the end
  kCancelled = 4,  // removed by force: every read fails with kCancelled
};
const char* to_string(StreamState state);  // "open", "closed", "aborted", "cancelled"

enum class Whence { kStart, kCurrent, kEnd };

// How a Reader waits for bytes not committed yet.
enum class WaitStrategy {
  kBlock,  // sleep in the kernel (futex) until the producer wakes it: no CPU while idle
  kSpin,   // busy-poll the committed length: lowest latency, burns a core while waiting
};

// How much of a stream is kept.
enum class Retention {
  kUnbounded,   // every byte, until the stream is removed (up to CreateOptions::max_bytes)
  kDropOldest,  // a ring of ring_capacity bytes: the producer never waits; a reader that falls
                // more than the capacity behind gets kOverrun, naming the oldest offset left
  kBlock,       // a ring of ring_capacity bytes: the producer waits for the slowest reader
};
const char* to_string(Retention retention);  // "unbounded", "drop-oldest", "block"
// The retention to_string() names; kInvalidArgument (listing the names) for anything else.
Result<Retention> parse_retention(std::string_view name);

// Who may open a stream for reading. Its owner (the creator's uid, as the daemon saw it on the
// socket) and root always may, and only they may remove it. The segment file carries the same
// permission bits, so the kernel refuses anyone else who goes around the daemon.
enum class StreamMode {
  kOwner = 0,     // the owner only (0600)
  kGroup = 1,     // and members of the owner's primary group (0640)
  kEveryone = 2,  // every local user (0644)
};
const char* to_string(StreamMode mode);  // "owner", "group", "everyone"
// The mode to_string() names; kInvalidArgument (listing the names) for anything else.
Result<StreamMode> parse_mode(std::string_view name);

// A named cursor of a stream (see OpenOptions::cursor).
struct CursorInfo {
  std::string name;
  uint64_t position = 0;    // committed; the lag is StreamInfo::bytes - position
  uint32_t reader_pid = 0;  // the reader holding it now; 0 if none
};

// A reader attached to a stream now (see StreamInfo::attached).
struct ReaderInfo {
  uint32_t pid = 0;
  uint64_t position = 0;  // as last published: exact for unbounded streams, rings every 1/16
                          // of the capacity; a cursor's reader: its committed position
  std::string cursor;     // the named cursor it reads as; empty if anonymous
};

struct StreamInfo {
  std::string name;
  StreamState state = StreamState::kOpen;
  bool removing = false;  // removed, but still held by its producer or readers
  uint64_t bytes = 0;     // committed length
  uint32_t readers = 0;
  uint32_t producer_pid = 0;
  uint32_t owner_uid = 0;  // the creator's uid, as the daemon saw it: owner of the files
  uint64_t max_bytes = 0;
  uint64_t created_unix_ns = 0;
  uint64_t stream_id = 0;  // unique per segment: a re-created name gets a new one
  Retention retention = Retention::kUnbounded;
  uint64_t ring_capacity = 0;  // rings: bytes kept
  uint64_t oldest = 0;         // the oldest offset still available
  bool records = false;        // carries framed records
  uint32_t max_readers = 0;
  uint64_t slowest_reader = 0;  // lowest position a reader published; `bytes` if none
  std::vector<CursorInfo> cursors;
  std::vector<ReaderInfo> attached;  // each reader attached now, by pid
  std::string directory;             // a persistent stream's directory; empty in shared memory
  uint32_t owner_gid = 0;            // the creator's primary group: group of the files
  StreamMode mode = StreamMode::kOwner;
  uint64_t origin = 0;                        // see CreateOptions::origin
  std::chrono::milliseconds resume_grace{0};  // see CreateOptions::resume_grace
  bool awaiting_producer = false;  // open, its producer died: Client::resume() may take it
  std::string damage;              // empty, or what the daemon found wrong with the stream's files
  std::chrono::milliseconds stall_limit{0};  // see CreateOptions::stall_limit
  // A kBlock ring's producer waiting for room: the offset it waits for its slowest reader to
  // pass (UINT64_MAX when it does not wait), and for how long so far.
  uint64_t producer_waits_for = UINT64_MAX;
  std::chrono::milliseconds stalled{0};
  std::optional<AbortReason> abort_reason;  // an aborted stream's: why (see abort_reason.hpp)
  uint64_t record_count = 0;          // a records stream's records committed so far (0 for bytes)
  double write_rate_bytes_per_s = 0;  // over about the last second, as the daemon samples it
  // Since the daemon last saw it grow (within 50 ms); none if it has not seen it grow.
  std::optional<std::chrono::milliseconds> last_write_age;
  uint64_t allocated_bytes = 0;  // memory (disk, for a persistent stream) its files take
};
// The state as `ls` shows it: "corrupt" for a stream whose files are damaged, "removing" for a
// removed stream still held, "orphaned" for an open one awaiting a successor, else
// to_string(info.state).
const char* state_label(const StreamInfo& info);
// The owner's user name and the group's name, as the system names them (getpwuid_r,
// getgrgid_r); the number when it has no name.
std::string owner_name(const StreamInfo& info);
std::string group_name(const StreamInfo& info);
// The stream as one JSON object: the keys and values of `shmstream ls --json` and
// `shmstream stat --json`, and of the Python module's info dicts (built from this). One name per
// quantity: "state" (state_label), "stream_state" (to_string(state)), "removing", "bytes",
// "readers", "producer_pid", "owner_uid", "owner" (its user name), "owner_gid", "group",
// "mode", "stream_id", "max_bytes", "created_unix_ns", "retention", "ring_capacity", "oldest",
// "records", "max_readers", "slowest_reader", "directory", "origin", "resume_grace_ms",
// "awaiting_producer", "damage", "stall_limit_ms", "producer_waits_for" (null unless it waits),
// "stalled_ms", "record_count", "write_rate_bytes_per_s", "last_write_age_ms" (null if none
// seen), "allocated_bytes", "held_by" [descriptions, as stall_holders()], "cursors" [{"name",
// "position", "lag", "reader_pid"}] and "attached"
// [{"pid", "position", "cursor"}].
std::string to_json(const StreamInfo& info);

// `s` as a JSON string literal, quotes included ("\"a\\nb\""): quotes, backslashes and control
// characters escaped. `s` must be UTF-8 for the result to be valid JSON.
std::string json_quote(std::string_view s);

// This library's release ("0.1.0").
const char* version();

// Who a daemon is and what it holds (Client::daemon_info(), `shmstream daemon status`).
struct DaemonInfo {
  std::string version;
  uint32_t pid = 0;
  uint32_t uid = 0;  // the user it runs as
  std::string socket;
  uint64_t started_unix_ns = 0;
  std::string config_file;  // the configuration file it read; empty if none
  std::string segment_dir;
  std::string persist_dir;    // empty: no persistent directory of its own
  uint32_t streams = 0;       // live
  uint32_t removing = 0;      // removed, still held
  uint64_t memory_bytes = 0;  // allocated by its in-memory streams
  uint64_t disk_bytes = 0;    // allocated by its persistent streams
  uint32_t connections = 0;
  // Its limits (shmstreamd --help says what each is); 0 bytes per user: none.
  uint32_t max_streams_per_user = 0;
  uint32_t max_connections_per_user = 0;
  uint32_t max_connections = 0;
  uint64_t max_bytes_per_user = 0;
  uint64_t reserve_bytes = 0;
  uint64_t default_max_bytes = 0;
  uint32_t default_max_readers = 0;
  uint64_t max_ring_bytes = 0;
  uint64_t stall_limit_ms = 0;
};
// The same as one JSON object (the keys of `shmstream daemon status --json`).
std::string to_json(const DaemonInfo& info);
// A kBlock ring's producer waiting for room: who holds it back, one description each ("reader
// pid 12", "cursor \"billing\" (no reader)"); empty when it does not wait.
std::vector<std::string> stall_holders(const StreamInfo& info);
// The same as one line for ls, stat and top ("producer waits 1200 ms for readers to pass offset
// N: reader pid 12 (stall limit 5000 ms)"); empty when it does not wait.
std::string stall_text(const StreamInfo& info);

struct CreateOptions {
  uint64_t max_bytes = 0;  // unbounded streams: longest it may grow; 0 = the daemon's default
  Retention retention = Retention::kUnbounded;
  uint64_t ring_capacity = 0;  // rings: bytes kept (rounded up to 4 KiB); required for rings
  bool records = false;        // a records stream: publish()/next_record() instead of bytes
  uint32_t max_readers = 0;    // readers allowed at once; 0 = the daemon's default (64)
  // Keep the stream in a file on disk, so that it outlives RAM, the daemon and a reboot: in
  // `directory` (absolute, existing) if given, else in the daemon's persistent directory.
  bool persistent = false;
  std::string directory;
  StreamMode mode = StreamMode::kOwner;
  // When the producer dies without closing, the stream stays open this long after its process
  // exited (readers wait on), for a successor to take it over with Client::resume(); zero
  // aborts it at once (readers get kProducerDied). At most 24 hours.
  std::chrono::milliseconds resume_grace{0};
  // For a stream that republishes another (`shmstream bridge in`): the other's offset of this
  // stream's offset 0. Kept with the stream and shown by stat; otherwise meaningless.
  uint64_t origin = 0;
  // kBlock rings: a reader (or a named cursor nobody holds) that keeps the producer waiting
  // for room longer than this is evicted: it stops holding the ring back, and its next read
  // fails with kOverrun saying so. Zero (the default): never.
  std::chrono::milliseconds stall_limit{0};
};

// When a named cursor's position is committed.
enum class CommitMode {
  kAuto,      // each read, next() or next_record() first commits what the previous one
              // delivered: after a crash, at most the last delivery comes again (at least once)
  kExplicit,  // only Reader::commit() does: commit after processing (exactly once when the
              // processing's effect and the commit's token go together)
};

struct OpenOptions {
  // Read as this named cursor (1 to 64 of A-Z a-z 0-9 . _ : @ -): start where it committed
  // (at the oldest offset if new); the daemon keeps it after the reader goes, across daemon
  // restarts, and for persistent streams across reboots. One reader at a time (kBusy).
  // In a kBlock ring, a cursor holds the producer back even while no reader holds it.
  // A cursor is its maker's: another user gets kPermissionDenied.
  std::string cursor;
  CommitMode commit = CommitMode::kAuto;
};

// One record of a records stream, seen zero-copy in the stream's mapping.
struct Record {
  std::span<const std::byte> data;
  uint64_t offset = 0;  // where its frame starts in the stream
};

struct ClientOptions {
  std::string socket_path;  // empty: $SHMSTREAM_SOCKET, else a per-user default
  bool autostart = true;    // start shmstreamd if none answers
  std::string daemon_path;  // empty: $SHMSTREAMD, beside this program, or on PATH
};

class Connection;  // internal

// Appends to one stream. Obtained from Client::create(). Move-only.
// Destroying an open Producer without close() aborts the stream (readers see producer_died,
// "its producer was dropped without close()").
class Producer {
 public:
  Producer(Producer&&) noexcept;
  Producer& operator=(Producer&&) noexcept;
  ~Producer();

  const std::string& name() const;
  // Copies `bytes` to the end of the stream and publishes them to readers. Only a kBlock ring
  // ever waits (for its slowest reader): until the timeout (kTimeout) or the Cancellation
  // (kInterrupted).
  Status append(std::span<const std::byte> bytes, Timeout timeout = kForever,
                const Cancellation* cancel = nullptr);
  Status append(std::string_view text) { return append(std::as_bytes(std::span(text))); }
  // Zero-copy: a writable span at the end of the stream. Fill it, then commit(n <= size).
  // In a ring, size is at most its capacity.
  Result<std::span<std::byte>> reserve(size_t size, Timeout timeout = kForever,
                                       const Cancellation* cancel = nullptr);
  Status commit(size_t size);

  // Records streams (CreateOptions::records): publishes one record, copied.
  Status publish(std::span<const std::byte> payload, Timeout timeout = kForever,
                 const Cancellation* cancel = nullptr);
  Status publish(std::string_view text) { return publish(std::as_bytes(std::span(text))); }
  // Zero-copy: room for a record of up to max_length bytes; fill it, then commit_record(n).
  Result<std::span<std::byte>> reserve_record(size_t max_length, Timeout timeout = kForever,
                                              const Cancellation* cancel = nullptr);
  Status commit_record(size_t length);
  // Ends the stream cleanly; readers reach its end.
  Status close();
  // Ends the stream as failed; readers get kProducerDied past the committed bytes, saying why
  // ("aborted by its producer: MESSAGE", or the reason's describe()), as do `ls`, `stat` and
  // StreamInfo::abort_reason.
  Status abort(std::string_view message = {});
  Status abort(const AbortReason& why);
  uint64_t committed() const;

 private:
  friend class Client;
  struct Impl;
  explicit Producer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reads one stream from a read-only mapping, at its own position. Obtained from Client::open().
// Move-only. Views it returns stay valid until the Reader is closed or destroyed.
//
// A hostile or broken producer cannot crash a Reader: if the stream's owner truncates the
// segment file, the library catches the fault (it installs a SIGBUS handler that passes on
// every fault outside its own mappings), replaces the mapping with zero pages, and every call
// from then on fails with kCorrupt. A view you still hold then reads zeros: check intact(), or
// any later call, before you act on bytes a view gave you. Lengths, states and offsets read
// from the segment are checked against its geometry; an impossible one is kCorrupt.
class Reader {
 public:
  Reader(Reader&&) noexcept;
  Reader& operator=(Reader&&) noexcept;
  ~Reader();

  const std::string& name() const;
  // Whether the stream carries framed records (read them with next_record()).
  bool records() const;
  // Blocks until bytes at the position are committed, copies up to buf.size() of them and
  // advances. Returns 0 at the clean end of the stream. Errors: kTimeout, kInterrupted (the
  // Cancellation fired or the reader was closed), kProducerDied, kCancelled. The bytes came
  // from position() - n: a new reader of a block ring that has read nothing and sought nowhere
  // starts at the oldest offset kept, which may have moved on since it opened.
  Result<size_t> read(std::span<std::byte> buf, Timeout timeout = kForever,
                      const Cancellation* cancel = nullptr);
  // As read(), at `offset`, leaving the position alone.
  Result<size_t> read_at(uint64_t offset, std::span<std::byte> buf, Timeout timeout = kForever,
                         const Cancellation* cancel = nullptr);
  // Zero-copy read: a view of up to `max` bytes at the position, which then advances past them.
  // Empty at the clean end of the stream.
  Result<std::span<const std::byte>> next(size_t max, Timeout timeout = kForever,
                                          const Cancellation* cancel = nullptr);
  // Zero-copy view of committed bytes [offset, offset + length); never blocks.
  Result<std::span<const std::byte>> view(uint64_t offset, size_t length);
  // Records streams: the next record, whole, as a zero-copy view; the position moves past it.
  // nullopt when the stream ended cleanly ("done"; an empty record is a Record with no data).
  // Errors as read(), plus kOverrun in a drop-oldest ring.
  Result<std::optional<Record>> next_record(Timeout timeout = kForever,
                                            const Cancellation* cancel = nullptr);
  // Rings: whether what was read from `offset` on is still intact. A drop-oldest ring may
  // overwrite bytes while you read a view of them: check after reading, and if false, discard
  // what you read (then seek to oldest()). Always true for unbounded streams.
  bool intact(uint64_t offset) const;
  bool intact(const Record& record) const { return intact(record.offset); }
  // The oldest offset still available (0 unless a ring wrapped).
  uint64_t oldest() const;
  // Blocks until the stream's committed length reaches `length`; kEndOfStream if it closed
  // shorter.
  Status wait_for(uint64_t length, Timeout timeout = kForever,
                  const Cancellation* cancel = nullptr);

  Status seek(int64_t offset, Whence whence = Whence::kStart);
  // kBlock by default. Timeouts, cancellation, close() and the stream's end work with both.
  void set_wait_strategy(WaitStrategy strategy);
  uint64_t position() const;
  uint64_t committed() const;
  StreamState state() const;
  // Named cursors: commits `offset` (default: the position) with an opaque `token` of yours,
  // stored atomically with it (e.g. how much output you had produced by then).
  Status commit();
  Status commit(uint64_t offset, uint64_t token = 0);
  // The cursor's committed position and token (at open: where this reader started).
  uint64_t cursor_position() const;
  uint64_t cursor_token() const;

  // Event loops (epoll, poll, io_uring, Boost.Asio, KJ...): a file descriptor that polls
  // readable (POLLIN) once a read at the position need not wait: bytes are committed there,
  // the stream ended, or the reader was closed. When it does, read with a zero timeout until a
  // read returns kTimeout: that read clears the descriptor and watches the new position. It
  // stays readable while bytes remain (a loop may read a little at a time); a rare spurious
  // wake-up only costs a read that returns kTimeout (and re-arms).
  // Edge-triggered loops (EPOLLET, Asio, KJ) work the same way: each wake-up is a new write to
  // the descriptor. Reading its 8-byte counter yourself only clears it (Asio's async_read_some
  // does, which makes a wake-up that came before the wait impossible to miss).
  // The Reader owns the descriptor (valid until the Reader is destroyed; do not close it).
  // It is an eventfd. Where the kernel has io_uring futex waits (Linux >= 6.7), the wait sleeps
  // in the kernel and the producer's wake-up signals it: one wake-up per message, as for a
  // blocking read. The completion is posted by task work in the thread that last read (re-armed)
  // the reader, which interrupts an epoll_wait of that thread once (EINTR, as a signal would:
  // retry, as every event loop does; poll() and select() restart by themselves). Elsewhere, or
  // with SHMSTREAM_EVENT_FD=relay in the environment, the first call starts a thread that sleeps
  // in the futex for the loop: a thread hand-off more per message (measured in the README).
  Result<int> event_fd();

  // Any thread: wakes reads blocked in other threads (they return kInterrupted), then
  // releases the mapping and stops counting as a reader.
  void close();

 private:
  friend class Client;
  struct Impl;
  explicit Reader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// A connection to shmstreamd. Cheap to share; thread-safe.
class Client {
 public:
  static Result<Client> connect(const ClientOptions& options = {});
  // The socket used when none is named: $SHMSTREAM_SOCKET, $XDG_RUNTIME_DIR/shmstream/...,
  // or /tmp/shmstream-<uid>/control.sock.
  static std::string default_socket_path();

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

  // Creates a new, empty stream; the caller becomes its producer. kAlreadyExists if taken.
  Result<Producer> create(std::string_view name, const CreateOptions& options = {});
  // Takes over an open stream created with a resume grace whose producer died: the caller
  // (its owner, or root) becomes its producer, appending at its committed length (whatever
  // the dead producer had reserved but not committed is gone). kBusy while the producer's
  // process still runs, kStreamClosed once the grace ran out, kInvalidArgument without a grace.
  Result<Producer> resume(std::string_view name);
  // Opens a stream for reading from offset 0. kNotFound if there is none (or it was removed).
  Result<Reader> open(std::string_view name, const OpenOptions& options = {});
  Result<std::vector<StreamInfo>> list();
  Result<StreamInfo> stat(std::string_view name);
  // The daemon's identity, configuration, limits and holdings.
  Result<DaemonInfo> daemon_info();
  // Stops the daemon (only its own user or root may) and waits until its process has exited,
  // up to `timeout` (kTimeout past it). Streams in memory stay for the next daemon. This
  // client is disconnected afterwards.
  Status stop_daemon(Timeout timeout = std::chrono::seconds(30));
  // Removes a stream. Without force, current readers may finish; with force, everyone using it
  // fails at once with kCancelled.
  Status remove(std::string_view name, bool force = false);
  // Forgets a named cursor no reader holds. kBusy if one does; kPermissionDenied unless you
  // made it, own the stream, or are root.
  Status remove_cursor(std::string_view name, std::string_view cursor);
  const std::string& socket_path() const;

 private:
  explicit Client(std::shared_ptr<Connection> connection);
  // create() (with its options) or resume() (options null).
  Result<Producer> acquire_producer(std::string_view name, const CreateOptions* create);
  std::shared_ptr<Connection> connection_;
};

}  // namespace shmstream
