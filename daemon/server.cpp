#include "daemon/server.hpp"

#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.capnp.h>
#include <capnp/rpc.h>
#include <capnp/serialize-async.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <string>

#include "daemon/paced_stream.hpp"
#include "proto/control.capnp.h"

namespace shmstream::daemon {
namespace {

void set_status(proto::Status::Builder out, const Status& status) {
  out.setCode(static_cast<uint16_t>(status.code()));
  if (!status.ok()) out.setMessage(status.message());
}

proto::StreamState to_proto(shm::StreamState state) {
  switch (state) {
    case shm::StreamState::kOpen:
      return proto::StreamState::OPEN;
    case shm::StreamState::kClosed:
      return proto::StreamState::CLOSED;
    case shm::StreamState::kAborted:
      return proto::StreamState::ABORTED;
    case shm::StreamState::kCancelled:
      return proto::StreamState::CANCELLED;
  }
  return proto::StreamState::ABORTED;
}

void fill_info(proto::StreamInfo::Builder out, const StreamSnapshot& s) {
  out.setName(s.name);
  out.setState(to_proto(s.state));
  out.setRemoving(s.removing);
  out.setBytes(s.bytes);
  out.setReaders(s.readers);
  out.setProducerPid(s.producer_pid);
  out.setProducerUid(s.producer_uid);
  out.setMaxBytes(s.max_bytes);
  out.setCreatedUnixNs(s.created_unix_ns);
  out.setStreamId(s.stream_id);
  out.setRingCapacity(s.ring_capacity);
  out.setRetention(s.ring_capacity == 0 ? proto::Retention::UNBOUNDED
                   : s.block_when_full  ? proto::Retention::BLOCK
                                        : proto::Retention::DROP_OLDEST);
  out.setOldest(s.oldest);
  out.setRecords(s.records);
  out.setMaxReaders(s.max_readers);
  out.setSlowestReader(s.slowest_reader);
  auto cursors = out.initCursors(static_cast<unsigned>(s.cursors.size()));
  for (size_t i = 0; i < s.cursors.size(); ++i) {
    cursors[i].setName(s.cursors[i].name);
    cursors[i].setPosition(s.cursors[i].position);
    cursors[i].setReaderPid(s.cursors[i].reader_pid);
  }
  auto attached = out.initAttached(static_cast<unsigned>(s.attached.size()));
  for (size_t i = 0; i < s.attached.size(); ++i) {
    attached[i].setPid(s.attached[i].pid);
    attached[i].setPosition(s.attached[i].position);
    attached[i].setCursor(s.attached[i].cursor);
  }
  out.setDirectory(s.directory);
  out.setOwnerGid(s.owner_gid);
  out.setMode(static_cast<proto::Mode>(s.mode));
  out.setOrigin(s.origin);
  out.setResumeGraceMs(s.resume_grace_ms);
  out.setAwaitingProducer(s.awaiting_producer);
  out.setDamage(s.damage);
  out.setStallLimitMs(s.stall_limit_ms);
  out.setProducerWaitsFor(s.producer_waits_for);
  out.setStalledMs(s.stalled_ms);
  out.setAbortKind(static_cast<uint32_t>(s.abort_reason.kind));
  out.setAbortCode(s.abort_reason.code);
  out.setAbortMessage(s.abort_reason.message);
  out.setRecordCount(s.record_count);
  out.setWriteRateBytesPerS(s.write_rate);
  out.setLastWriteAgeMs(s.last_write_age_ms);
  out.setAllocatedBytes(s.allocated_bytes);
}

static_assert(static_cast<int>(Mode::kOwner) == static_cast<int>(proto::Mode::OWNER));
static_assert(static_cast<int>(Mode::kGroup) == static_cast<int>(proto::Mode::GROUP));
static_assert(static_cast<int>(Mode::kEveryone) == static_cast<int>(proto::Mode::EVERYONE));

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// Runs a request handler (returning a Status or a Result); an exception escaping it becomes an
// internal-error status, so no exception from our code crosses request handling.
template <typename Fn>
auto guarded(const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    spdlog::error("{}: {}", what, e.what());
    return Status(ErrorCode::kInternal, fmt::format("{}: internal error: {}", what, e.what()));
  }
}

// The fd a capability carries; none for a reattached producer or reader (it kept its mapping).
kj::Maybe<int> maybe_fd(const kj::AutoCloseFd& fd) {
  if (fd.get() < 0) return nullptr;
  return fd.get();
}

// A descriptor for a client the daemon let in: a producer's read-only reader table, or a
// reader's own page.
class SideFileImpl final : public proto::SideFile::Server {
 public:
  explicit SideFileImpl(std::shared_ptr<kj::AutoCloseFd> fd) : fd_(std::move(fd)) {}
  kj::Maybe<int> getFd() override { return fd_->get(); }

 private:
  std::shared_ptr<kj::AutoCloseFd> fd_;
};

class ProducerImpl final : public proto::Producer::Server {
 public:
  // Takes the stream's current producer epoch: its own.
  ProducerImpl(Registry& registry, std::shared_ptr<Stream> stream, kj::AutoCloseFd fd)
      : registry_(registry),
        stream_(std::move(stream)),
        fd_(kj::mv(fd)),
        epoch_(stream_->producer_epoch) {}
  ~ProducerImpl() noexcept(false) { registry_.producer_detached(stream_, closed_, epoch_); }

  kj::Maybe<int> getFd() override { return maybe_fd(fd_); }

  kj::Promise<void> close(CloseContext context) override { return end(context, true); }
  kj::Promise<void> abort(AbortContext context) override { return end(context, false); }

 private:
  template <typename Context>
  kj::Promise<void> end(Context& context, bool clean) {
    auto& header = stream_->segment.mutable_header();
    // (Our library's producer ended the stream itself, with its reason, before asking.)
    if (clean) {
      shm::end_stream(header, shm::StreamState::kClosed);
    } else {
      shm::abort_stream(header, AbortReason{AbortKind::kExplicit, 0, ""}, shm::Claimant::kDaemon);
    }
    shm::StreamState state = shm::load_state(header);
    registry_.flush(*stream_);
    closed_ = true;  // either way the producer said goodbye: dropping it later is no death
    Status status;
    if (clean && state != shm::StreamState::kClosed) {
      status = Status(
          state == shm::StreamState::kCancelled ? ErrorCode::kCancelled : ErrorCode::kStreamClosed,
          fmt::format("stream \"{}\": cannot close, it is {}", stream_->name,
                      shm::state_name(state)));
    }
    spdlog::info("stream \"{}\": {} by its producer", stream_->name, clean ? "closed" : "aborted");
    set_status(context.getResults().initStatus(), status);
    return kj::READY_NOW;
  }

  Registry& registry_;
  std::shared_ptr<Stream> stream_;
  kj::AutoCloseFd fd_;
  uint64_t epoch_;
  bool closed_ = false;
};

class ReaderImpl final : public proto::Reader::Server {
 public:
  ReaderImpl(Registry& registry, ReaderAccess access)
      : registry_(registry),
        stream_(std::move(access.stream)),
        fd_(kj::mv(access.fd)),
        grant_(std::move(access.grant)) {}
  ~ReaderImpl() noexcept(false) { registry_.reader_detached(stream_, grant_); }

  kj::Maybe<int> getFd() override { return maybe_fd(fd_); }

 private:
  Registry& registry_;
  std::shared_ptr<Stream> stream_;
  kj::AutoCloseFd fd_;
  ReaderGrant grant_;
};

// A refused connection, from its refusal to its close.
struct Refused {
  kj::Own<kj::AsyncCapabilityStream> stream;
  capnp::MallocMessageBuilder message{64};
  char discard[4096];
};

// Reads and drops what the client of `refused` sends, until it closes its end.
kj::Promise<void> drain(Refused& refused) {
  return refused.stream->tryRead(refused.discard, 1, sizeof(refused.discard))
      .then([&refused](size_t n) -> kj::Promise<void> {
        if (n == 0) return kj::READY_NOW;
        return drain(refused);
      });
}

}  // namespace

class ControlImpl final : public proto::Control::Server {
 public:
  ControlImpl(daemon::Server& server, Registry& registry, Peer peer)
      : server_(server), registry_(registry), peer_(peer) {}

  kj::Promise<void> create(CreateContext context) override {
    auto params = context.getParams();
    std::string name = text(params.getName());
    auto granted = guarded("create", [&]() -> Result<ProducerAccess> {
      auto options = params.getOptions();
      daemon::CreateParams create;
      create.max_bytes = options.getMaxBytes();
      create.records = options.getRecords();
      create.max_readers = options.getMaxReaders();
      create.persistent = options.getPersistent();
      create.directory = text(options.getDirectory());
      // proto::Mode and daemon::Mode number owner, group, everyone alike.
      if (options.getMode() > proto::Mode::EVERYONE) {
        return Status(ErrorCode::kInvalidArgument,
                      fmt::format("stream \"{}\": unknown mode {}", name,
                                  static_cast<int>(options.getMode())));
      }
      create.mode = static_cast<Mode>(options.getMode());
      create.resume_grace_ms = options.getResumeGraceMs();
      create.stall_limit_ms = options.getStallLimitMs();
      create.origin = options.getOrigin();
      switch (options.getRetention()) {
        case proto::Retention::UNBOUNDED:
          if (options.getRingCapacity() != 0) {
            return Status(
                ErrorCode::kInvalidArgument,
                fmt::format("stream \"{}\": a ring capacity needs a ring retention", name));
          }
          break;
        case proto::Retention::BLOCK:
          create.block_when_full = true;
          [[fallthrough]];
        case proto::Retention::DROP_OLDEST:
          if (options.getRingCapacity() == 0) {
            return Status(ErrorCode::kInvalidArgument,
                          fmt::format("stream \"{}\": a ring needs a capacity", name));
          }
          create.ring_capacity = options.getRingCapacity();
          break;
        default:
          return Status(ErrorCode::kInvalidArgument,
                        fmt::format("stream \"{}\": unknown retention {}", name,
                                    static_cast<int>(options.getRetention())));
      }
      return registry_.create(name, create, peer_);
    });
    grant_producer(context.getResults(), std::move(granted));
    return kj::READY_NOW;
  }

  kj::Promise<void> open(OpenContext context) override {
    auto params = context.getParams();
    std::string name = text(params.getName());
    std::string cursor = text(params.getOptions().getCursor());
    auto granted = guarded("open", [&] { return registry_.open(name, cursor, peer_); });
    auto results = context.getResults();
    set_status(results.initStatus(), granted.status());
    if (granted.ok()) {
      results.setSlot(granted->grant.slot);
      results.setPage(
          kj::heap<SideFileImpl>(std::make_shared<kj::AutoCloseFd>(kj::mv(granted->page_fd))));
      results.setReader(kj::heap<ReaderImpl>(registry_, std::move(granted).value()));
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> list(ListContext context) override {
    auto streams = registry_.list();
    auto out = context.getResults().initStreams(static_cast<unsigned>(streams.size()));
    for (size_t i = 0; i < streams.size(); ++i) fill_info(out[i], streams[i]);
    return kj::READY_NOW;
  }

  kj::Promise<void> info(InfoContext context) override {
    auto out = context.getResults().initInfo();
    const RegistryConfig& config = registry_.config();
    const Registry::Holdings held = registry_.holdings();
    out.setVersion(SHMSTREAM_VERSION);
    out.setPid(static_cast<uint32_t>(getpid()));
    out.setUid(static_cast<uint32_t>(geteuid()));
    out.setSocket(config.socket_path);
    out.setStartedUnixNs(server_.about().started_unix_ns);
    out.setConfigFile(server_.about().config_file);
    out.setSegmentDir(config.segment_dir);
    out.setPersistDir(config.persist_dir);
    out.setStreams(static_cast<uint32_t>(held.streams));
    out.setRemoving(static_cast<uint32_t>(held.removing));
    out.setMemoryBytes(held.memory_bytes);
    out.setDiskBytes(held.disk_bytes);
    out.setConnections(static_cast<uint32_t>(server_.connection_count()));
    out.setMaxStreamsPerUser(config.max_streams_per_user);
    out.setMaxConnectionsPerUser(server_.limits().max_connections_per_user);
    out.setMaxConnections(server_.limits().max_connections);
    out.setMaxBytesPerUser(config.max_bytes_per_user);
    out.setReserveBytes(config.reserve_bytes);
    out.setDefaultMaxBytes(config.default_max_bytes);
    out.setDefaultMaxReaders(config.default_max_readers);
    out.setMaxRingBytes(config.max_ring_capacity);
    out.setStallLimitMs(server_.limits().stall_limit_ms);
    return kj::READY_NOW;
  }

  kj::Promise<void> stop(StopContext context) override {
    Status status;
    if (peer_.uid != geteuid() && peer_.uid != 0) {
      status = Status(
          ErrorCode::kPermissionDenied,
          fmt::format("only uid {} (the daemon's user) or root may stop the daemon", geteuid()));
    } else {
      spdlog::info("stop asked by pid {} (uid {})", peer_.pid, peer_.uid);
      server_.ask_stop(peer_.uid);
    }
    set_status(context.getResults().initStatus(), status);
    return kj::READY_NOW;
  }

  kj::Promise<void> stat(StatContext context) override {
    std::string name = text(context.getParams().getName());
    auto snapshot = guarded("stat", [&] { return registry_.stat(name); });
    auto results = context.getResults();
    set_status(results.initStatus(), snapshot.status());
    if (snapshot.ok()) fill_info(results.initInfo(), *snapshot);
    return kj::READY_NOW;
  }

  kj::Promise<void> remove(RemoveContext context) override {
    auto params = context.getParams();
    std::string name = text(params.getName());
    Status status =
        guarded("remove", [&] { return registry_.remove(name, params.getForce(), peer_); });
    set_status(context.getResults().initStatus(), status);
    return kj::READY_NOW;
  }

  kj::Promise<void> removeCursor(RemoveCursorContext context) override {
    auto params = context.getParams();
    std::string name = text(params.getName());
    std::string cursor = text(params.getCursor());
    Status status =
        guarded("removeCursor", [&] { return registry_.remove_cursor(name, cursor, peer_); });
    set_status(context.getResults().initStatus(), status);
    return kj::READY_NOW;
  }

  kj::Promise<void> reattachProducer(ReattachProducerContext context) override {
    auto params = context.getParams();
    std::string name = text(params.getName());
    auto stream = guarded("reattachProducer", [&] {
      return registry_.reattach_producer(name, params.getStreamId(), peer_);
    });
    auto results = context.getResults();
    set_status(results.initStatus(), stream.status());
    if (stream.ok()) {
      server_.watch_producer(*stream, peer_.pid);
      results.setProducer(
          kj::heap<ProducerImpl>(registry_, std::move(stream).value(), kj::AutoCloseFd()));
    }
    return kj::READY_NOW;
  }

  kj::Promise<void> resume(ResumeContext context) override {
    std::string name = text(context.getParams().getName());
    auto granted = guarded("resume", [&] { return registry_.resume(name, peer_); });
    grant_producer(context.getResults(), std::move(granted));
    return kj::READY_NOW;
  }

  kj::Promise<void> reattachReader(ReattachReaderContext context) override {
    auto params = context.getParams();
    std::string name = text(params.getName());
    auto granted = guarded("reattachReader", [&] {
      return registry_.reattach_reader(name, params.getStreamId(), params.getSlot(), peer_);
    });
    auto results = context.getResults();
    set_status(results.initStatus(), granted.status());
    if (granted.ok())
      results.setReader(kj::heap<ReaderImpl>(registry_, std::move(granted).value()));
    return kj::READY_NOW;
  }

 private:
  // The reply to create or resume: the status, and if it is ok the caller's Producer, the
  // stream's reader table and the segment's path (the caller's process is watched, so that
  // its death is seen).
  template <typename Results>
  void grant_producer(Results results, Result<ProducerAccess> granted) {
    set_status(results.initStatus(), granted.status());
    if (!granted.ok()) return;
    ProducerAccess access = std::move(granted).value();
    server_.watch_producer(access.stream, peer_.pid);
    results.setReaderTable(kj::heap<SideFileImpl>(access.stream->table_fd));
    results.setSegmentPath(access.stream->segment_path);
    results.setProducer(
        kj::heap<ProducerImpl>(registry_, std::move(access.stream), kj::mv(access.fd)));
  }

  daemon::Server& server_;
  Registry& registry_;
  Peer peer_;
};

struct Server::Connection {
  Connection(kj::Own<kj::AsyncCapabilityStream> stream_in, Server& server, Registry& registry,
             Peer peer, capnp::ReaderOptions options)
      : stream(kj::mv(stream_in)),
        // One fd per message is enough: clients never need to send us more.
        network(*stream, 1, capnp::rpc::twoparty::Side::SERVER, options),
        rpc(capnp::makeRpcServer(network, kj::heap<ControlImpl>(server, registry, peer))) {}

  kj::Own<kj::AsyncCapabilityStream> stream;
  capnp::TwoPartyVatNetwork network;
  capnp::RpcSystem<capnp::rpc::twoparty::VatId> rpc;
};

Server::Server(kj::AsyncIoContext& io, Registry& registry, int listen_fd, ServerLimits limits)
    : io_(io),
      registry_(registry),
      listen_fd_(listen_fd),
      limits_(limits),
      listen_observer_(io.unixEventPort, listen_fd, kj::UnixEventPort::FdObserver::OBSERVE_READ),
      tasks_(*this) {
  // A released stream's munmap and last close (which frees its tmpfs pages) wait until the reply
  // is written: remove p50 180 -> 150 us in the control bench (4 alternating pairs).
  registry_.defer_releases(
      [this]() { tasks_.add(kj::evalLast([this]() { registry_.bury_released(); })); });
  for (const auto& stream : registry_.unattached_open_streams()) {
    watch_producer(stream, static_cast<pid_t>(shm::producer_pid_now(stream->segment.header())));
  }
  for (const auto& stream : registry_.awaiting_streams()) start_grace(stream);
  tasks_.add(watch_stalls());
  auto orphans = registry_.orphan_readers();
  if (!orphans.empty()) {
    tasks_.add(io_.provider->getTimer()
                   .afterDelay(limits_.reattach_grace_ms * kj::MILLISECONDS)
                   .then([this]() { registry_.expire_orphans(); }));
  }
  for (const auto& orphan : orphans) {
    bool gone = false;
    if (auto* watch = watch_process(orphan.pid, &gone)) {
      watch->slots.emplace_back(orphan.stream, orphan.slot);
    } else if (gone) {
      registry_.orphan_reader_exited(orphan.stream, orphan.slot, orphan.pid);
    }
  }
}

kj::Promise<void> Server::watch_stalls() {
  // Every 50 ms: a stall limit is kept to within that, and a removed stream that only an
  // unclaimed producer held is released that soon after the producer ended it.
  return io_.provider->getTimer().afterDelay(50 * kj::MILLISECONDS).then([this]() {
    registry_.enforce_stall_limits();
    registry_.release_ended_unclaimed();
    registry_.sample_writes();
    if (++stall_ticks_ % 20 == 0) registry_.enforce_byte_quotas();  // every second
    return watch_stalls();
  });
}

void Server::watch_producer(const std::shared_ptr<Stream>& stream, pid_t pid) {
  bool gone = false;
  if (auto* watch = watch_process(pid, &gone)) {
    std::erase_if(watch->streams, [](const auto& w) { return w.expired(); });
    watch->streams.push_back(stream);
  } else if (gone) {
    producer_exited(stream, pid);  // no live producer
  }
}

void Server::producer_exited(const std::shared_ptr<Stream>& stream, pid_t pid) {
  if (registry_.producer_exited(stream, pid)) start_grace(stream);
}

void Server::start_grace(const std::shared_ptr<Stream>& stream) {
  std::weak_ptr<Stream> weak = stream;
  uint64_t epoch = stream->producer_epoch;
  tasks_.add(io_.provider->getTimer()
                 .afterDelay(stream->resume_grace_ms() * kj::MILLISECONDS)
                 .then([this, weak, epoch]() {
                   if (auto s = weak.lock()) registry_.successor_overdue(s, epoch);
                 }));
}

Server::ProcessWatch* Server::watch_process(pid_t pid, bool* gone) {
  if (auto it = watches_.find(pid); it != watches_.end()) {
    pollfd p{it->second->pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) == 0) return it->second.get();  // the same live process: one pidfd
    // That process exited and its pid was reused before we handled the exit: handle it now.
    process_exited(pid, it->second);
  }
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    *gone = errno == ESRCH;
    if (!*gone) spdlog::warn("pidfd_open({}): {}; not watching it", pid, std::strerror(errno));
    return nullptr;
  }
  auto watch = std::make_shared<ProcessWatch>();
  watch->pidfd = kj::AutoCloseFd(pidfd);
  watch->observer = kj::heap<kj::UnixEventPort::FdObserver>(
      io_.unixEventPort, pidfd, kj::UnixEventPort::FdObserver::OBSERVE_READ);
  watches_[pid] = watch;
  tasks_.add(watch->observer->whenBecomesReadable().then(
      [this, pid, watch]() { process_exited(pid, watch); }));
  return watch.get();
}

void Server::process_exited(pid_t pid, std::shared_ptr<ProcessWatch> watch) {
  if (auto it = watches_.find(pid); it != watches_.end() && it->second == watch) {
    watches_.erase(it);
  }
  for (const auto& weak : watch->streams) {
    if (auto stream = weak.lock()) producer_exited(stream, pid);
  }
  for (const auto& [weak, slot] : watch->slots) {
    if (auto stream = weak.lock()) registry_.orphan_reader_exited(stream, slot, pid);
  }
  watch->streams.clear();
  watch->slots.clear();
}

Server::~Server() noexcept(false) {}

void Server::ask_stop(uid_t uid) {
  // After every event queued now (the reply among them), so the caller hears that it was taken.
  tasks_.add(kj::evalLast([this, uid] {
    if (stop_.fulfiller->isWaiting()) stop_.fulfiller->fulfill(kj::cp(uid));
  }));
}

kj::Promise<void> Server::run() {
  return listen_observer_.whenBecomesReadable().then([this]() -> kj::Promise<void> {
    for (;;) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          spdlog::warn("accept: {}", std::strerror(errno));
        }
        break;
      }
      serve(fd);
    }
    return run();
  });
}

void Server::serve(int fd) {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    spdlog::warn("SO_PEERCRED: {}; dropping connection", std::strerror(errno));
    ::close(fd);
    return;
  }
  Peer peer{cred.pid, cred.uid, cred.gid, {}};
  // Supplementary groups, for streams readable by a group (Linux 4.13+; without it, only the
  // primary group counts).
  gid_t groups[256];
  socklen_t groups_len = sizeof(groups);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &groups_len) == 0) {
    peer.groups.assign(groups, groups + groups_len / sizeof(gid_t));
  }
  capnp::ReaderOptions options;
  options.traversalLimitInWords = limits_.max_message_words;
  options.nestingLimit = 16;
  uint64_t id = next_connection_id_++;
  kj::Own<kj::AsyncCapabilityStream> stream = kj::heap<PacedStream>(
      io_.lowLevelProvider->wrapUnixSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                                                     kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                                                     kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK),
      io_.provider->getTimer(), limits_.reply_backlog_bytes,
      limits_.stall_limit_ms * kj::MILLISECONDS, [id, peer, this]() {
        spdlog::warn(
            "connection {} (pid {} uid {}): stalled, its replies unread for {} ms; "
            "dropping it",
            id, peer.pid, peer.uid, limits_.stall_limit_ms);
      });
  std::string refusal;
  auto by_uid = connections_by_uid_.find(peer.uid);
  const uint32_t mine = by_uid == connections_by_uid_.end() ? 0 : by_uid->second;
  if (connections_ >= limits_.max_connections) {
    refusal = fmt::format(
        "too many connections: the daemon serves {}, the most it allows "
        "(shmstreamd --max-connections)",
        connections_);
  } else if (mine >= limits_.max_connections_per_user) {
    refusal = fmt::format(
        "too many connections: uid {} holds {}, the most this daemon allows "
        "(shmstreamd --max-connections-per-user)",
        peer.uid, mine);
  }
  if (!refusal.empty()) {
    // Counting toward no limit, and closed as soon as its client has heard why: the refusal goes
    // out as the RPC protocol's own Abort message (the client's calls fail with it, type
    // OVERLOADED: limit_exceeded), the daemon's side is shut, and the descriptor closes when the
    // client closes its end (its request, written meanwhile, is read and dropped) or after 1 s.
    // Past kMaxRefusedOpen of them at once (a flood), the next are closed unanswered.
    if (refused_open_ >= kMaxRefusedOpen) {
      spdlog::debug("connection from pid {} closed unanswered: {}", peer.pid, refusal);
      return;  // `stream` closes the descriptor
    }
    spdlog::warn("connection from pid {} refused: {}", peer.pid, refusal);
    auto refused = kj::heap<Refused>();
    refused->stream = kj::mv(stream);
    auto abort = refused->message.initRoot<capnp::rpc::Message>().initAbort();
    abort.setType(capnp::rpc::Exception::Type::OVERLOADED);
    // The client reads the code from the reason (the protocol passes the type on as
    // DISCONNECTED): client/connection.cpp, exception_status().
    abort.setReason(kj::str("limit_exceeded: ", refusal));
    ++refused_open_;
    Refused& r = *refused;
    auto heard = capnp::writeMessage(*r.stream, r.message)
                     .then([&r]() {
                       r.stream->shutdownWrite();
                       return drain(r);
                     })
                     .exclusiveJoin(io_.provider->getTimer().afterDelay(1 * kj::SECONDS));
    tasks_.add(
        heard.attach(kj::mv(refused))
            .then([this]() { --refused_open_; }, [this](kj::Exception&&) { --refused_open_; }));
    return;
  }
  ++connections_by_uid_[peer.uid];
  auto connection = kj::heap<Connection>(kj::mv(stream), *this, registry_, peer, options);
  ++connections_;
  spdlog::debug("connection {} from pid {} uid {}", id, peer.pid, peer.uid);
  auto done = connection->network.onDisconnect();
  tasks_.add(done.then(
      [this, id, peer, connection = kj::mv(connection)]() mutable {
        // Dropping the connection drops its capabilities: producers detach, readers uncount.
        connection = nullptr;
        --connections_;
        release_uid(peer.uid);
        spdlog::debug("connection {} (pid {}) closed", id, peer.pid);
      },
      [this, id, peer](kj::Exception&& e) {
        --connections_;
        release_uid(peer.uid);
        spdlog::warn("connection {} (pid {}) dropped: {}", id, peer.pid, e.getDescription().cStr());
      }));
}

void Server::release_uid(uid_t uid) {
  if (auto it = connections_by_uid_.find(uid);
      it != connections_by_uid_.end() && --it->second == 0) {
    connections_by_uid_.erase(it);
  }
}

void Server::taskFailed(kj::Exception&& exception) {
  spdlog::warn("connection task failed: {}", exception.getDescription().cStr());
}

}  // namespace shmstream::daemon
