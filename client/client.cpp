#include "shmstream/client.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <kj/io.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstring>
#include <vector>

#include "client/connection.hpp"
#include "client/testing.hpp"
#include "client/watcher.hpp"
#include "shm/naming.hpp"
#include "shm/producer_core.hpp"
#include "shm/reader_core.hpp"

namespace shmstream {
namespace {

Status from_proto(proto::Status::Reader status) {
  if (status.getCode() == 0) return Status();
  return Status(static_cast<ErrorCode>(status.getCode()),
                std::string(status.getMessage().cStr(), status.getMessage().size()));
}

// A missing stream (or cursor) is missing from one daemon: the message names its socket.
Status naming_daemon(Status status, const Connection& connection) {
  if (status.code() != ErrorCode::kNotFound) return status;
  return Status(ErrorCode::kNotFound,
                status.message() + " (daemon at " + connection.socket_path() + ")");
}

// The public StreamState mirrors the segment's values one to one.
static_assert(static_cast<int>(StreamState::kOpen) == static_cast<int>(shm::StreamState::kOpen));
static_assert(static_cast<int>(StreamState::kClosed) ==
              static_cast<int>(shm::StreamState::kClosed));
static_assert(static_cast<int>(StreamState::kAborted) ==
              static_cast<int>(shm::StreamState::kAborted));
static_assert(static_cast<int>(StreamState::kCancelled) ==
              static_cast<int>(shm::StreamState::kCancelled));
StreamState from_shm(shm::StreamState state) { return static_cast<StreamState>(state); }
// So does StreamMode the schema's Mode.
static_assert(static_cast<int>(StreamMode::kOwner) == static_cast<int>(proto::Mode::OWNER));
static_assert(static_cast<int>(StreamMode::kGroup) == static_cast<int>(proto::Mode::GROUP));
static_assert(static_cast<int>(StreamMode::kEveryone) == static_cast<int>(proto::Mode::EVERYONE));

StreamInfo from_proto(proto::StreamInfo::Reader in) {
  StreamInfo out;
  out.name = std::string(in.getName().cStr(), in.getName().size());
  switch (in.getState()) {
    case proto::StreamState::OPEN:
      out.state = StreamState::kOpen;
      break;
    case proto::StreamState::CLOSED:
      out.state = StreamState::kClosed;
      break;
    case proto::StreamState::ABORTED:
      out.state = StreamState::kAborted;
      break;
    case proto::StreamState::CANCELLED:
      out.state = StreamState::kCancelled;
      break;
  }
  out.removing = in.getRemoving();
  out.bytes = in.getBytes();
  out.readers = in.getReaders();
  out.producer_pid = in.getProducerPid();
  out.owner_uid = in.getProducerUid();
  out.max_bytes = in.getMaxBytes();
  out.created_unix_ns = in.getCreatedUnixNs();
  out.stream_id = in.getStreamId();
  switch (in.getRetention()) {
    case proto::Retention::UNBOUNDED:
      out.retention = Retention::kUnbounded;
      break;
    case proto::Retention::DROP_OLDEST:
      out.retention = Retention::kDropOldest;
      break;
    case proto::Retention::BLOCK:
      out.retention = Retention::kBlock;
      break;
  }
  out.ring_capacity = in.getRingCapacity();
  out.oldest = in.getOldest();
  out.records = in.getRecords();
  out.max_readers = in.getMaxReaders();
  out.slowest_reader = in.getSlowestReader();
  for (auto c : in.getCursors()) {
    out.cursors.push_back(CursorInfo{std::string(c.getName().cStr(), c.getName().size()),
                                     c.getPosition(), c.getReaderPid()});
  }
  for (auto r : in.getAttached()) {
    out.attached.push_back(ReaderInfo{r.getPid(), r.getPosition(),
                                      std::string(r.getCursor().cStr(), r.getCursor().size())});
  }
  out.directory = std::string(in.getDirectory().cStr(), in.getDirectory().size());
  out.owner_gid = in.getOwnerGid();
  // The daemon sends owner, group or everyone (proto::Mode numbers them as StreamMode does).
  out.mode = in.getMode() <= proto::Mode::EVERYONE ? static_cast<StreamMode>(in.getMode())
                                                   : StreamMode::kOwner;
  out.origin = in.getOrigin();
  out.resume_grace = std::chrono::milliseconds(in.getResumeGraceMs());
  out.awaiting_producer = in.getAwaitingProducer();
  out.damage = std::string(in.getDamage().cStr(), in.getDamage().size());
  out.stall_limit = std::chrono::milliseconds(in.getStallLimitMs());
  out.producer_waits_for = in.getProducerWaitsFor();
  out.stalled = std::chrono::milliseconds(in.getStalledMs());
  out.record_count = in.getRecordCount();
  // A daemon's figure: anything not a finite rate reads as none.
  const double rate = in.getWriteRateBytesPerS();
  out.write_rate_bytes_per_s = std::isfinite(rate) && rate > 0 ? rate : 0;
  if (in.getLastWriteAgeMs() != UINT64_MAX) {
    out.last_write_age = std::chrono::milliseconds(in.getLastWriteAgeMs());
  }
  out.allocated_bytes = in.getAllocatedBytes();
  if (out.state == StreamState::kAborted) {
    AbortReason why;
    why.kind = abort_kind_of(in.getAbortKind());
    why.code = in.getAbortCode();
    why.message = std::string(in.getAbortMessage().cStr(), in.getAbortMessage().size());
    out.abort_reason = std::move(why);
  }
  return out;
}

shm::Clock::time_point deadline_after(Timeout timeout) {
  if (timeout == kForever) return shm::kNoDeadline;
  auto now = shm::Clock::now();
  if (timeout > shm::kNoDeadline - now) return shm::kNoDeadline;
  return now + std::chrono::duration_cast<shm::Clock::duration>(timeout);
}

// A daemon's answer that is only a status (Result<Status> would be ambiguous).
struct Answer {
  Status status;
};

// Sends the request `build` makes and returns the status in its reply (a missing stream named
// with the daemon's socket), or the call's failure.
template <typename Build>
Status status_call(Connection& connection, const char* what, Build build) {
  auto reply = connection.run<Answer>(what, [&](LoopState& loop) {
    return build(loop).send().then(
        [](auto response) { return Answer{from_proto(response.getStatus())}; });
  });
  return reply.ok() ? naming_daemon(reply->status, connection) : reply.status();
}

// A capability granted with a segment fd, and its side file: a producer's reader table, a
// reader's own page.
struct Grant {
  Status status;
  uint64_t handle = 0;
  int fd = -1;
  int side_fd = -1;
  uint32_t slot = 0;              // readers: their slot in the reader table
  std::string segment_path = {};  // producers: where their readers' pages lie (beside it)
  uint64_t session = 0;           // LoopState::session the reply came in
};

// The fd that rode along with `cap`, duplicated: the received one is owned by the capability's
// import and closes with it, so `cap` stays alive until the dup. -1 if none came.
kj::Promise<int> take_fd(capnp::Capability::Client cap) {
  auto fd = cap.getFd();
  return fd.then([cap = kj::mv(cap)](kj::Maybe<int> fd) {
    KJ_IF_MAYBE (received, fd) {
      return fcntl(*received, F_DUPFD_CLOEXEC, 0);
    }
    return -1;
  });
}

// Completes a create/open reply: keeps the capability, takes the segment's fd and its side
// file's.
kj::Promise<Grant> take_grant(LoopState& loop, Status status, capnp::Capability::Client cap,
                              capnp::Capability::Client side_file, uint32_t slot = 0,
                              std::string segment_path = {}) {
  if (!status.ok()) return Grant{status};
  // The reply came over this session (before any disconnection that follows it).
  const uint64_t session = loop.session;
  auto fds = kj::heapArrayBuilder<kj::Promise<int>>(2);
  fds.add(take_fd(cap));
  fds.add(take_fd(kj::mv(side_file)));
  return kj::joinPromises(fds.finish())
      .then([&loop, cap = kj::mv(cap), slot, session,
             path = std::move(segment_path)](kj::Array<int> got) mutable -> Grant {
        if (got[0] >= 0 && got[1] >= 0) {
          return Grant{
              Status(), loop.hold(kj::mv(cap), session), got[0], got[1], slot, std::move(path),
              session};
        }
        for (int fd : got) {
          if (fd >= 0) ::close(fd);
        }
        return Grant{Status(ErrorCode::kProtocol,
                            "the daemon's reply lacked the segment's or its side file's fd")};
      });
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Producer

struct Producer::Impl {
  Impl(std::shared_ptr<Connection> c, uint64_t h, std::string n, shm::Segment segment,
       shm::ReaderSet readers)
      : connection(std::move(c)),
        handle(h),
        name(std::move(n)),
        core(std::move(segment), std::move(readers)) {}
  ~Impl() {
    // A producer that never said close() did not finish; a destructor has nobody to tell.
    if (!ended) (void)core.abort(AbortReason{AbortKind::kNotClosed, 0, ""});
    if (!released) connection->release(handle);
  }
  // Closes (no reason) or aborts (`why`).
  Status end(const std::optional<AbortReason>& why) {
    const bool clean = !why.has_value();
    Status local = clean ? core.close() : core.abort(*why);
    ended = true;
    if (released) return local;                  // ended before: the daemon was told then
    connection->remember(handle, std::nullopt);  // a restarted daemon finds it ended
    // Tell the daemon too, so that dropping the capability later is not taken for a death.
    auto remote =
        connection->run<Answer>(clean ? "close" : "abort", [this, clean](LoopState& loop) {
          auto cap = loop.capabilities.at(handle).cap.castAs<proto::Producer>();
          auto finish = [](auto response) { return Answer{from_proto(response.getStatus())}; };
          if (clean) return cap.closeRequest().send().then(kj::mv(finish));
          return cap.abortRequest().send().then(kj::mv(finish));
        });
    (void)remote;  // best effort: see below
    // Ended, it holds its stream no longer: a removed stream goes now, not when this object
    // is destroyed. (Its mapping stays until then, so that committed() still answers.)
    released = true;
    connection->release(handle);
    if (!local.ok()) return local;
    // The segment already says the stream ended; a lost daemon only loses the bookkeeping.
    return Status();
  }

  std::shared_ptr<Connection> connection;
  uint64_t handle;
  std::string name;
  shm::ProducerCore core;
  bool ended = false;
  bool released = false;  // the daemon's capability let go of (by end() or the destructor)
};

Producer::Producer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Producer::Producer(Producer&&) noexcept = default;
Producer& Producer::operator=(Producer&&) noexcept = default;
Producer::~Producer() = default;

const std::string& Producer::name() const { return impl_->name; }
Status Producer::append(std::span<const std::byte> bytes, Timeout timeout,
                        const Cancellation* cancel) {
  return impl_->core.append(bytes, deadline_after(timeout), cancel);
}
Result<std::span<std::byte>> Producer::reserve(size_t size, Timeout timeout,
                                               const Cancellation* cancel) {
  if (impl_->core.segment().records()) {
    return Status(
        ErrorCode::kInvalidArgument,
        fmt::format("stream \"{}\": a records stream: use reserve_record()", impl_->name));
  }
  return impl_->core.reserve(size, deadline_after(timeout), cancel);
}
Status Producer::commit(size_t size) { return impl_->core.commit(size); }
Status Producer::publish(std::span<const std::byte> payload, Timeout timeout,
                         const Cancellation* cancel) {
  return impl_->core.publish(payload, deadline_after(timeout), cancel);
}
Result<std::span<std::byte>> Producer::reserve_record(size_t max_length, Timeout timeout,
                                                      const Cancellation* cancel) {
  return impl_->core.reserve_record(max_length, deadline_after(timeout), cancel);
}
Status Producer::commit_record(size_t length) { return impl_->core.commit_record(length); }
Status Producer::close() { return impl_->end(std::nullopt); }
Status Producer::abort(const AbortReason& why) { return impl_->end(why); }
Status Producer::abort(std::string_view message) {
  return impl_->end(AbortReason::because(std::string(message)));
}
uint64_t Producer::committed() const { return impl_->core.committed(); }

// ---------------------------------------------------------------------------------------------
// Reader

struct Reader::Impl {
  Impl(std::shared_ptr<Connection> c, uint64_t h, std::string n, shm::Segment segment,
       shm::ReaderPageMap page, bool cursor, bool auto_commit_in)
      : connection(std::move(c)),
        handle(h),
        name(std::move(n)),
        core(std::move(segment), std::move(page), cursor) {
    core.set_auto_commit(auto_commit_in);
  }
  ~Impl() { close(); }
  void close() {
    core.close();
    // Only the first close() releases the capability (close may race the destructor's).
    if (!released.exchange(true, std::memory_order_acq_rel)) connection->release(handle);
  }
  // After a read that found nothing at the position: an event loop's descriptor watches it.
  template <typename T>
  Result<T> rearm_if_empty(Result<T> result) {
    if (watcher && !result.ok() && result.status().code() == ErrorCode::kTimeout) {
      watcher->rearm(core.position());
    }
    return result;
  }

  std::shared_ptr<Connection> connection;
  uint64_t handle;
  std::string name;
  shm::ReaderCore core;
  std::atomic<bool> released{false};
  std::unique_ptr<ReadyWatcher> watcher;  // destroyed first: it watches `core`
};

Reader::Reader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Reader::Reader(Reader&&) noexcept = default;
Reader& Reader::operator=(Reader&&) noexcept = default;
Reader::~Reader() = default;

const std::string& Reader::name() const { return impl_->name; }

bool Reader::records() const { return impl_->core.segment().records(); }

Result<size_t> Reader::read(std::span<std::byte> buf, Timeout timeout, const Cancellation* cancel) {
  return impl_->rearm_if_empty(impl_->core.read(buf, deadline_after(timeout), cancel));
}

Result<size_t> Reader::read_at(uint64_t offset, std::span<std::byte> buf, Timeout timeout,
                               const Cancellation* cancel) {
  return impl_->core.read_at(offset, buf, deadline_after(timeout), cancel);
}

Result<std::span<const std::byte>> Reader::next(size_t max, Timeout timeout,
                                                const Cancellation* cancel) {
  return impl_->rearm_if_empty(impl_->core.next(max, deadline_after(timeout), cancel));
}

Result<std::span<const std::byte>> Reader::view(uint64_t offset, size_t length) {
  return impl_->core.view(offset, length);
}

Result<std::optional<Record>> Reader::next_record(Timeout timeout, const Cancellation* cancel) {
  auto record = impl_->rearm_if_empty(impl_->core.next_record(deadline_after(timeout), cancel));
  if (!record.ok()) return record.status();
  if (!record->has_value()) return std::optional<Record>();
  return std::optional<Record>(Record{(*record)->data, (*record)->offset});
}

bool Reader::intact(uint64_t offset) const { return impl_->core.intact(offset); }
uint64_t Reader::oldest() const { return impl_->core.oldest(); }

Status Reader::wait_for(uint64_t length, Timeout timeout, const Cancellation* cancel) {
  return impl_->core.wait_until(length, deadline_after(timeout), cancel);
}

Status Reader::seek(int64_t offset, Whence whence) {
  shm::Whence w;
  switch (whence) {
    case Whence::kStart:
      w = shm::Whence::kStart;
      break;
    case Whence::kCurrent:
      w = shm::Whence::kCurrent;
      break;
    case Whence::kEnd:
      w = shm::Whence::kEnd;
      break;
    default:  // a value cast from an integer: refused, as the C API refuses it
      return Status(ErrorCode::kInvalidArgument,
                    fmt::format("stream \"{}\": seek: invalid whence {}", impl_->name,
                                static_cast<int>(whence)));
  }
  return impl_->core.seek(offset, w);
}

void Reader::set_wait_strategy(WaitStrategy strategy) {
  impl_->core.set_spin(strategy == WaitStrategy::kSpin);
}
uint64_t Reader::position() const { return impl_->core.position(); }
uint64_t Reader::committed() const { return impl_->core.committed(); }
StreamState Reader::state() const { return from_shm(impl_->core.state()); }
void Reader::close() { impl_->close(); }

Result<int> Reader::event_fd() {
  if (!impl_->watcher) {
    auto watcher = ReadyWatcher::start(impl_->core, impl_->core.position());
    if (!watcher.ok()) return watcher.status();
    impl_->watcher = std::move(watcher.value());
  }
  return impl_->watcher->fd();
}
Status Reader::commit() { return impl_->core.commit(position(), impl_->core.cursor_token()); }
Status Reader::commit(uint64_t offset, uint64_t token) { return impl_->core.commit(offset, token); }
uint64_t Reader::cursor_position() const { return impl_->core.cursor_position(); }
uint64_t Reader::cursor_token() const { return impl_->core.cursor_token(); }

// ---------------------------------------------------------------------------------------------
// Client

Client::Client(std::shared_ptr<Connection> connection) : connection_(std::move(connection)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

std::string Client::default_socket_path() { return shm::default_socket_path(); }
const std::string& Client::socket_path() const { return connection_->socket_path(); }

Result<Client> Client::connect(const ClientOptions& options) {
  std::string path = options.socket_path.empty() ? default_socket_path() : options.socket_path;
  auto fd = connect_socket(path, options.autostart, options.daemon_path);
  if (!fd.ok()) return fd.status();
  auto connection = Connection::start(*fd, path, options.autostart, options.daemon_path);
  if (!connection.ok()) return connection.status();
  return Client(std::move(connection.value()));
}

namespace {

// A stream granted by the daemon: the capability's handle and our validated mappings.
struct Granted {
  uint64_t handle;
  shm::Segment segment;
  shm::ReaderSet readers;   // a producer's
  shm::ReaderPageMap page;  // a reader's
  uint32_t slot;
  uint64_t session;  // LoopState::session it was granted in
};

// The owner of a file the daemon sent as `what`, checked: a regular file, owned by one of
// `owners` (by anyone if `owners` is empty, or for root). The daemon is trusted (Connection
// checked who it runs as); this catches a daemon mistaken or replaced under it handing out a
// file that is not the stream's.
Result<uid_t> received_file_owner(int fd, const std::string& described, const char* what,
                                  const std::vector<uid_t>& owners) {
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return Status(
        ErrorCode::kProtocol,
        fmt::format("{}: the daemon sent a {} that is not a regular file", described, what));
  }
  if (owners.empty() || geteuid() == 0 ||
      std::find(owners.begin(), owners.end(), st.st_uid) != owners.end()) {
    return st.st_uid;
  }
  return Status(ErrorCode::kProtocol,
                fmt::format("{}: the daemon sent a {} owned by uid {}, not by the stream's owner",
                            described, what, st.st_uid));
}

std::function<void()>& after_grant_hook() {
  static std::function<void()> hook;
  return hook;
}

// Sends a create or open request (built by `send`), keeps the capability of the reply and maps
// the segment fd that came with it, and its side file: a producer's reader table (read-only),
// a reader's own page (read-write).
template <typename Send>
Result<Granted> acquire(Connection& connection, const char* what, const std::string& name,
                        shm::Access access, Send send) {
  auto grant = connection.run<Grant>(what, [&](LoopState& loop) { return send(loop); });
  if (!grant.ok()) return grant.status();
  if (!grant->status.ok()) return grant->status;
  std::string described = fmt::format("stream \"{}\"", name);
  // A producer's segment is its own, or root's (the system daemon keeps in-memory streams'
  // files); a reader's page is the segment's owner's; the reader table is the daemon's (root,
  // or us for a daemon of our own).
  const bool producer = access == shm::Access::kReadWrite;
  auto owner = received_file_owner(
      grant->fd, described, "segment",
      producer ? std::vector<uid_t>{geteuid(), getuid(), 0} : std::vector<uid_t>{});
  Status received = owner.status();
  if (owner.ok()) {
    received = received_file_owner(
                   grant->side_fd, described, producer ? "reader table" : "reader page",
                   producer ? std::vector<uid_t>{0, geteuid()} : std::vector<uid_t>{*owner})
                   .status();
  }
  auto segment = received.ok()
                     ? shm::Segment::map(grant->fd, access, shm::MapExtent::kWhole, described)
                     : Result<shm::Segment>(received);
  Status side = segment.status();
  Granted out{grant->handle,        shm::Segment(), shm::ReaderSet(),
              shm::ReaderPageMap(), grant->slot,    grant->session};
  if (segment.ok()) {
    const uint64_t id = segment->header().stream_id;
    if (access == shm::Access::kReadWrite) {
      auto table = shm::ReaderTable::map(grant->side_fd, id, shm::Access::kReadOnly, described);
      side = table.status();
      if (table.ok()) {
        out.readers = shm::ReaderSet(std::move(table).value(),
                                     shm::open_reader_page_by_path(grant->segment_path), id);
      }
    } else {
      auto page = shm::ReaderPageMap::map(grant->side_fd, shm::Access::kReadWrite, id, grant->slot,
                                          /*page=*/0, described);
      side = page.status();
      if (page.ok()) out.page = std::move(page).value();
    }
  }
  ::close(grant->fd);
  ::close(grant->side_fd);
  if (!side.ok()) {
    connection.release(grant->handle);
    return side;
  }
  out.segment = std::move(segment).value();
  if (after_grant_hook()) after_grant_hook()();
  return out;
}

}  // namespace

void testing::set_after_grant(std::function<void()> hook) { after_grant_hook() = std::move(hook); }

Result<Producer> Client::create(std::string_view name, const CreateOptions& options) {
  return acquire_producer(name, &options);
}

Result<Producer> Client::resume(std::string_view name) { return acquire_producer(name, nullptr); }

Result<Producer> Client::acquire_producer(std::string_view name, const CreateOptions* create) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  std::string owned(name);
  auto send = [&](LoopState& loop) -> kj::Promise<Grant> {
    auto reply = [&loop](auto response) {
      return take_grant(
          loop, from_proto(response.getStatus()), response.getProducer(), response.getReaderTable(),
          0, std::string(response.getSegmentPath().cStr(), response.getSegmentPath().size()));
    };
    if (create == nullptr) {
      auto request = loop.control.resumeRequest();
      request.setName(owned);
      return request.send().then(kj::mv(reply));
    }
    auto request = loop.control.createRequest();
    request.setName(owned);
    auto out = request.initOptions();
    out.setMaxBytes(create->max_bytes);
    out.setRingCapacity(create->ring_capacity);
    out.setRecords(create->records);
    out.setMaxReaders(create->max_readers);
    out.setPersistent(create->persistent);
    out.setDirectory(create->directory);
    out.setMode(static_cast<proto::Mode>(create->mode));
    out.setResumeGraceMs(static_cast<uint32_t>(
        std::clamp<int64_t>(create->resume_grace.count(), 0, int64_t{UINT32_MAX})));
    out.setOrigin(create->origin);
    out.setStallLimitMs(static_cast<uint32_t>(
        std::clamp<int64_t>(create->stall_limit.count(), 0, int64_t{UINT32_MAX})));
    switch (create->retention) {
      case Retention::kUnbounded:
        out.setRetention(proto::Retention::UNBOUNDED);
        break;
      case Retention::kDropOldest:
        out.setRetention(proto::Retention::DROP_OLDEST);
        break;
      case Retention::kBlock:
        out.setRetention(proto::Retention::BLOCK);
        break;
    }
    return request.send().then(kj::mv(reply));
  };
  auto granted = acquire(*connection_, create != nullptr ? "create" : "resume", owned,
                         shm::Access::kReadWrite, send);
  if (!granted.ok()) return naming_daemon(granted.status(), *connection_);
  connection_->remember(granted->handle,
                        Reattach{true, owned, granted->segment.header().stream_id, 0},
                        granted->session);
  return Producer(std::make_unique<Producer::Impl>(connection_, granted->handle, owned,
                                                   std::move(granted->segment),
                                                   std::move(granted->readers)));
}

Result<Reader> Client::open(std::string_view name, const OpenOptions& options) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  if (!options.cursor.empty()) {
    if (Status s = shm::validate_cursor_name(options.cursor); !s.ok()) return s;
  }
  std::string owned(name);
  // Read-only: the daemon opened the fd O_RDONLY, so this mapping cannot be made writable.
  auto granted = acquire(*connection_, "open", owned, shm::Access::kReadOnly, [&](LoopState& loop) {
    auto request = loop.control.openRequest();
    request.setName(owned);
    request.initOptions().setCursor(options.cursor);
    return request.send().then([&loop](auto response) {
      return take_grant(loop, from_proto(response.getStatus()), response.getReader(),
                        response.getPage(), response.getSlot());
    });
  });
  if (!granted.ok()) return naming_daemon(granted.status(), *connection_);
  connection_->remember(granted->handle,
                        Reattach{false, owned, granted->segment.header().stream_id, granted->slot},
                        granted->session);
  return Reader(std::make_unique<Reader::Impl>(
      connection_, granted->handle, owned, std::move(granted->segment), std::move(granted->page),
      !options.cursor.empty(), options.commit == CommitMode::kAuto));
}

Result<std::vector<StreamInfo>> Client::list() {
  return connection_->run<std::vector<StreamInfo>>("list", [](LoopState& loop) {
    return loop.control.listRequest().send().then([](auto response) {
      std::vector<StreamInfo> out;
      for (auto info : response.getStreams()) out.push_back(from_proto(info));
      return out;
    });
  });
}

Result<StreamInfo> Client::stat(std::string_view name) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  std::string owned(name);
  struct Reply {
    Status status;
    StreamInfo info;
  };
  auto reply = connection_->run<Reply>("stat", [&](LoopState& loop) {
    auto request = loop.control.statRequest();
    request.setName(owned);
    return request.send().then([](auto response) {
      Status status = from_proto(response.getStatus());
      return Reply{status, status.ok() ? from_proto(response.getInfo()) : StreamInfo{}};
    });
  });
  if (!reply.ok()) return reply.status();
  if (!reply->status.ok()) return naming_daemon(reply->status, *connection_);
  return reply->info;
}

Result<DaemonInfo> Client::daemon_info() {
  return connection_->run<DaemonInfo>("info", [](LoopState& loop) {
    return loop.control.infoRequest().send().then([](auto response) {
      auto in = response.getInfo();
      auto text = [](capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); };
      DaemonInfo out;
      out.version = text(in.getVersion());
      out.pid = in.getPid();
      out.uid = in.getUid();
      out.socket = text(in.getSocket());
      out.started_unix_ns = in.getStartedUnixNs();
      out.config_file = text(in.getConfigFile());
      out.segment_dir = text(in.getSegmentDir());
      out.persist_dir = text(in.getPersistDir());
      out.streams = in.getStreams();
      out.removing = in.getRemoving();
      out.memory_bytes = in.getMemoryBytes();
      out.disk_bytes = in.getDiskBytes();
      out.connections = in.getConnections();
      out.max_streams_per_user = in.getMaxStreamsPerUser();
      out.max_connections_per_user = in.getMaxConnectionsPerUser();
      out.max_connections = in.getMaxConnections();
      out.max_bytes_per_user = in.getMaxBytesPerUser();
      out.reserve_bytes = in.getReserveBytes();
      out.default_max_bytes = in.getDefaultMaxBytes();
      out.default_max_readers = in.getDefaultMaxReaders();
      out.max_ring_bytes = in.getMaxRingBytes();
      out.stall_limit_ms = in.getStallLimitMs();
      return out;
    });
  });
}

Status Client::stop_daemon(Timeout timeout) {
  auto info = daemon_info();
  if (!info.ok()) return info.status();
  // Watched from before the request, so that a pid reused after the exit is not waited for.
  kj::AutoCloseFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, info->pid, 0)));
  Status asked =
      status_call(*connection_, "stop", [](LoopState& loop) { return loop.control.stopRequest(); });
  // The daemon may close the connection before its reply reaches us: its exit decides.
  if (!asked.ok() && asked.code() != ErrorCode::kUnavailable) return asked;
  if (pidfd.get() < 0) return asked;  // another pid namespace: the reply is all we know
  pollfd watch{pidfd.get(), POLLIN, 0};
  const int ms = timeout == kForever
                     ? -1
                     : static_cast<int>(std::min<int64_t>(timeout.count() / 1000000, INT32_MAX));
  int ready;
  while ((ready = ::poll(&watch, 1, ms)) < 0 && errno == EINTR) {
  }
  if (ready == 0) {
    return Status(ErrorCode::kTimeout,
                  fmt::format("shmstreamd (pid {}) at {} still runs {} ms after it was asked to "
                              "stop",
                              info->pid, info->socket, ms));
  }
  return Status();
}

const char* version() { return SHMSTREAM_VERSION; }

Status Client::remove(std::string_view name, bool force) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  std::string owned(name);
  return status_call(*connection_, "remove", [&](LoopState& loop) {
    auto request = loop.control.removeRequest();
    request.setName(owned);
    request.setForce(force);
    return request;
  });
}

Status Client::remove_cursor(std::string_view name, std::string_view cursor) {
  if (Status s = shm::validate_stream_name(name); !s.ok()) return s;
  if (Status s = shm::validate_cursor_name(cursor); !s.ok()) return s;
  std::string owned(name);
  std::string owned_cursor(cursor);
  return status_call(*connection_, "removeCursor", [&](LoopState& loop) {
    auto request = loop.control.removeCursorRequest();
    request.setName(owned);
    request.setCursor(owned_cursor);
    return request;
  });
}

}  // namespace shmstream
