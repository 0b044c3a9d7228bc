// shmstreamd — the shmstream daemon: names streams, hands out their segments, watches
// producers and readers. See `shmstreamd --help`.
#include <fcntl.h>
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "daemon/config_file.hpp"
#include "daemon/key_file.hpp"
#include "daemon/log_file.hpp"
#include "daemon/persistent_dirs.hpp"
#include "daemon/registry.hpp"
#include "daemon/server.hpp"
#include "shm/naming.hpp"

namespace {

constexpr const char* kSystemSocket = "/run/shmstream/control.sock";
constexpr const char* kSystemPersistDir = "/var/lib/shmstream";

[[noreturn]] void die(const std::string& message, int code = 1) {
  std::fprintf(stderr, "shmstreamd: %s\n", message.c_str());
  std::exit(code);
}

// The listening socket systemd passed (socket activation: LISTEN_PID is us, LISTEN_FDS >= 1,
// the socket is fd 3); -1 if none. Its path comes back in `path`.
int activated_socket(std::string* path) {
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  if (pid == nullptr || fds == nullptr || std::atol(pid) != getpid() || std::atoi(fds) < 1) {
    return -1;
  }
  unsetenv("LISTEN_PID");  // not for our children
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_FDNAMES");
  constexpr int kFirst = 3;  // SD_LISTEN_FDS_START
  sockaddr_un addr{};
  socklen_t len = sizeof(addr);
  int type = 0;
  socklen_t type_len = sizeof(type);
  if (getsockname(kFirst, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
      addr.sun_family != AF_UNIX || addr.sun_path[0] == '\0' ||
      getsockopt(kFirst, SOL_SOCKET, SO_TYPE, &type, &type_len) != 0 || type != SOCK_STREAM) {
    die("socket activation: fd 3 is not a listening Unix stream socket with a path");
  }
  *path = std::string(addr.sun_path, strnlen(addr.sun_path, sizeof(addr.sun_path)));
  fcntl(kFirst, F_SETFD, FD_CLOEXEC);
  fcntl(kFirst, F_SETFL, fcntl(kFirst, F_GETFL) | O_NONBLOCK);
  return kFirst;
}

// Listens on socket `name` in directory `dir_fd` (checked by open_socket_dir()), shown as
// `path`. Bound through /proc/self/fd, so that the checked directory is the one bound in even if
// a parent of it is renamed meanwhile; by `path` where /proc is not mounted.
int listen_on(int dir_fd, const std::string& name, const std::string& path, mode_t mode) {
  sockaddr_un addr{};
  std::string bound = "/proc/self/fd/" + std::to_string(dir_fd) + "/" + name;
  if (access("/proc/self/fd", F_OK) != 0) bound = path;
  if (path.size() >= sizeof(addr.sun_path) || bound.size() >= sizeof(addr.sun_path)) {
    die("socket path too long (" + std::to_string(path.size()) + " bytes, limit " +
        std::to_string(sizeof(addr.sun_path) - 1) + "): " + path);
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die(std::string("socket: ") + std::strerror(errno));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, bound.c_str(), bound.size());
  unlinkat(dir_fd, name.c_str(), 0);  // stale: we hold the lock, so no live daemon serves it
  // Connecting needs write permission on the socket: 0600 for a per-user daemon, 0666 for the
  // system-wide one (each stream's mode still decides who may read what). Set by the umask at
  // bind, not by a chmod of the path afterwards.
  mode_t old = umask(~mode & 0777);
  int rc = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  umask(old);
  if (rc != 0) die("bind " + path + ": " + std::strerror(errno));
  if (listen(fd, 512) != 0) die("listen " + path + ": " + std::strerror(errno));
  return fd;
}

// The file open_own_file() opens, or dies saying why.
int open_own_file_or_die(int dir_fd, const std::string& name, int flags, const std::string& shown) {
  auto fd = shmstream::daemon::open_own_file(dir_fd, name, flags, shown);
  if (!fd.ok()) die(fd.status().message());
  return fd->release();
}

// Keeps the background daemon's log: reopened on SIGHUP, capped (checked every second).
kj::Promise<void> reopen_on_hangup(kj::UnixEventPort& port, shmstream::daemon::LogFile& log) {
  return port.onSignal(SIGHUP).then([&port, &log](siginfo_t) {
    log.reopen();
    spdlog::info("SIGHUP: log reopened");
    return reopen_on_hangup(port, log);
  });
}
kj::Promise<void> cap_log(kj::Timer& timer, shmstream::daemon::LogFile& log) {
  return timer.afterDelay(1 * kj::SECONDS).then([&timer, &log] {
    log.check_size();
    return cap_log(timer, log);
  });
}
kj::Promise<void> ignore_hangups(kj::UnixEventPort& port) {
  return port.onSignal(SIGHUP).then([&port](siginfo_t) {
    spdlog::info("SIGHUP: logging to stderr, no log file to reopen");
    return ignore_hangups(port);
  });
}

void raise_fd_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "shmstreamd: the shmstream daemon. Serves the control socket through which\n"
      "streams are created, opened, listed and removed."};
  app.set_version_flag("--version", std::string("shmstreamd ") + SHMSTREAM_VERSION);
  // Read before anything else: which configuration file, checked and opened (config_file.hpp).
  auto config_file = shmstream::daemon::find_config(argc, argv);
  if (!config_file.ok()) die(config_file.status().message(), 2);
  app.set_config("--config", "",
                 "Read options from this file (key = value, the long option names), instead of "
                 "$XDG_CONFIG_HOME/shmstream/shmstreamd.conf or " +
                     std::string(shmstream::daemon::kSystemConfigFile) +
                     "; the command line wins over it")
      ->type_name("FILE");
  app.allow_config_extras(CLI::config_extras_mode::error);
  bool no_config = false;
  app.add_flag("--no-config", no_config, "Read no configuration file");
  std::string socket_path = shmstream::shm::default_socket_path();
  std::string segment_dir = shmstream::shm::kDefaultSegmentDir;
  std::string log_level = "info";
  bool foreground = false;
  bool ephemeral = false;
  int ready_fd = -1;
  uint64_t default_max_bytes = shmstream::shm::kDefaultMaxDataSize;
  app.add_option("--socket", socket_path, "Control socket path (env SHMSTREAM_SOCKET)")
      ->capture_default_str();
  app.add_flag("--foreground", foreground, "Stay in the foreground, log to stderr");
  app.add_flag("--ephemeral", ephemeral,
               "On SIGTERM/SIGINT, cancel and remove every stream in memory (persistent ones "
               "stay): for tests and benchmarks");
  app.add_option("--segment-dir", segment_dir, "Directory for segment files")
      ->capture_default_str();
  std::string persist_dir = shmstream::shm::default_persist_dir();
  app.add_option("--persist-dir", persist_dir,
                 "Directory for persistent streams (write --persistent); others named by "
                 "their creators (write --dir) are recorded in it")
      ->capture_default_str();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();
  app.add_option("--ready-fd", ready_fd, "Write one byte to this fd once serving, then close it");
  app.add_option("--default-max-bytes", default_max_bytes,
                 "Maximum length of a stream whose creator names none")
      ->capture_default_str();
  uint32_t default_max_readers = shmstream::shm::kDefaultMaxReaders;
  app.add_option("--default-max-readers", default_max_readers,
                 "Readers a stream allows at once when its creator names no limit")
      ->capture_default_str()
      ->check(CLI::Range(1u, shmstream::shm::kMaxReadersLimit));
  uint64_t max_ring_bytes = shmstream::shm::kMaxRingCapacity;
  app.add_option("--max-ring-bytes", max_ring_bytes,
                 "Largest ring a client may create (rings are allocated whole)")
      ->capture_default_str();
  uint32_t max_streams_per_user = 4096;
  app.add_option("--max-streams-per-user", max_streams_per_user,
                 "Live streams one user may have created")
      ->capture_default_str();
  std::string max_bytes_per_user_text = "50%";
  app.add_option("--max-bytes-per-user", max_bytes_per_user_text,
                 "Memory one user's in-memory streams may take: bytes, or a percentage of the "
                 "segment directory's file system; 0: no limit. Root and the daemon's own user "
                 "are not limited")
      ->capture_default_str();
  std::string reserve_text = "5%";
  app.add_option("--reserve-bytes", reserve_text,
                 "Free space on the segment file system that no limited user's new stream may "
                 "take, in bytes or a percentage of the file system")
      ->capture_default_str();
  shmstream::daemon::ServerLimits limits;
  app.add_option("--max-connections-per-user", limits.max_connections_per_user,
                 "Control connections one user may hold open at once")
      ->capture_default_str();
  bool system = false;
  app.add_flag("--system", system,
               "The system-wide daemon, one socket for all users (needs root, to give each "
               "stream's files to its creator): socket " +
                   std::string(kSystemSocket) + " (mode 0666), persistent streams in " +
                   kSystemPersistDir);
  std::string socket_mode_text;
  app.add_option("--socket-mode", socket_mode_text,
                 "Permission bits of the socket, octal (default 0600; 0666 with --system)");
  app.add_option("--max-connections", limits.max_connections,
                 "Control connections in all (each costs a descriptor)")
      ->capture_default_str();
  app.add_option("--stall-limit-ms", limits.stall_limit_ms,
                 "Drop a client that leaves a reply unread this long")
      ->capture_default_str();
  app.add_option("--reattach-grace-ms", limits.reattach_grace_ms,
                 "After a restart, how long the readers of the previous daemon have to come "
                 "back before their slots are freed (one back later has its reads fail, "
                 "saying so)")
      ->capture_default_str();
  uint64_t log_max_bytes = 10 << 20;
  app.add_option("--log-max-bytes", log_max_bytes,
                 "Without --foreground: past this size the log file becomes SOCKET.log.1 "
                 "(replacing the older one) and a new one starts; 0: no cap. SIGHUP reopens it")
      ->capture_default_str();
  try {
    std::vector<const char*> args;
    for (const auto& arg : config_file->argv) args.push_back(arg.c_str());
    app.parse(static_cast<int>(args.size()), args.data());
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    // A usage error: one line and where help is, exit 2 (as shmstream says them).
    std::fprintf(stderr, "shmstreamd: %s (see `shmstreamd --help`)\n",
                 shmstream::daemon::name_config_in(e.what(), *config_file).c_str());
    return 2;
  }
  if (system) {
    if (geteuid() != 0) die("--system needs root: it gives each stream's files to its creator");
    if (app.count("--socket") == 0) socket_path = kSystemSocket;
    if (app.count("--persist-dir") == 0) persist_dir = kSystemPersistDir;
  }
  mode_t socket_mode = system ? 0666 : 0600;
  if (!socket_mode_text.empty()) {
    char* end = nullptr;
    unsigned long bits = std::strtoul(socket_mode_text.c_str(), &end, 8);
    if (*end != '\0' || bits > 0777) die("--socket-mode " + socket_mode_text + ": not octal bits");
    socket_mode = static_cast<mode_t>(bits);
  }
  std::string activated_path;
  int activated_fd = activated_socket(&activated_path);
  if (activated_fd >= 0) socket_path = activated_path;

  spdlog::set_default_logger(spdlog::stderr_color_mt("shmstreamd"));
  spdlog::set_level(spdlog::level::from_str(log_level));
  signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();

  std::filesystem::path socket_fs(socket_path);
  socket_path = std::filesystem::absolute(socket_fs).lexically_normal().string();
  std::error_code ec;
  // The socket's directory: others must be able to reach a system-wide socket in it.
  mode_t old_umask = umask(system ? 022 : 077);
  std::filesystem::create_directories(std::filesystem::path(socket_path).parent_path(), ec);
  umask(old_umask);
  if (ec)
    die("creating " + std::filesystem::path(socket_path).parent_path().string() + ": " +
        ec.message());

  // The directory is checked on the descriptor, and the lock, log and socket are made in it by
  // that descriptor: nothing in it is followed, and nobody but us (or root) may write it.
  auto socket_dir = shmstream::shm::open_socket_dir(socket_path, geteuid());
  if (!socket_dir.ok()) die(socket_dir.status().message());
  const std::string socket_name = std::filesystem::path(socket_path).filename().string();

  // One daemon per socket: the lock is held for the daemon's whole life.
  std::string lock_path = socket_path + ".lock";
  int lock_fd = open_own_file_or_die(*socket_dir, socket_name + ".lock", O_RDWR, lock_path);
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    die("another shmstreamd already serves " + socket_path, 3);
  }
  // The daemon's configuration: symlinks in it are resolved once, now.
  persist_dir = shmstream::daemon::canonical_own_directory(persist_dir);
  // The secret that signs every segment this daemon makes (what a restart adopts): with the
  // persistent streams, which outlive a reboot, else beside the socket.
  shmstream::shm::DaemonKey key;
  {
    auto key_dir = persist_dir.empty()
                       ? shmstream::Result<kj::AutoCloseFd>(kj::AutoCloseFd())
                       : shmstream::daemon::open_directory_no_follow(persist_dir, /*create=*/true);
    if (!key_dir.ok()) {
      // Persistent streams will fail with the same reason when asked for; the rest works.
      spdlog::warn("persistent directory {}: {}; the key is kept beside the socket", persist_dir,
                   key_dir.status().message());
      key_dir = kj::AutoCloseFd();
    }
    const bool beside_socket = key_dir->get() < 0;
    std::string key_name = beside_socket ? socket_name + ".key" : "daemon.key";
    auto loaded = shmstream::daemon::load_or_make_key(
        beside_socket ? *socket_dir : key_dir->get(), key_name,
        beside_socket ? socket_path + ".key" : persist_dir + "/daemon.key");
    if (!loaded.ok()) die(loaded.status().message());
    key = *loaded;
  }
  // Opened before the fork (and the socket), so that a refused log is an error its starter sees.
  const int log_fd = foreground ? -1
                                : open_own_file_or_die(*socket_dir, socket_name + ".log",
                                                       O_WRONLY | O_APPEND, socket_path + ".log");
  int listen_fd = activated_fd >= 0 ? activated_fd
                                    : listen_on(*socket_dir, socket_name, socket_path, socket_mode);

  if (!foreground) {
    pid_t pid = fork();
    if (pid < 0) die(std::string("fork: ") + std::strerror(errno));
    if (pid > 0) _exit(0);  // the socket already listens: clients may connect now
    setsid();
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    close(log_fd);
  }
  std::optional<shmstream::daemon::LogFile> log;
  if (!foreground)
    log.emplace(*socket_dir, socket_name + ".log", socket_path + ".log", log_max_bytes);
  close(*socket_dir);

  // The lock file names the daemon that holds it (for operators and tests).
  std::string pid_text = std::to_string(getpid()) + "\n";
  if (ftruncate(lock_fd, 0) != 0 || pwrite(lock_fd, pid_text.data(), pid_text.size(), 0) !=
                                        static_cast<ssize_t>(pid_text.size())) {
    spdlog::warn("writing pid to {}: {}", lock_path, std::strerror(errno));
  }

  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGHUP);
  auto io = kj::setupAsyncIo();
  kj::Promise<void> log_upkeep = log ? reopen_on_hangup(io.unixEventPort, *log)
                                           .exclusiveJoin(cap_log(io.provider->getTimer(), *log))
                                     : ignore_hangups(io.unixEventPort);
  shmstream::daemon::RegistryConfig config;
  config.segment_dir = segment_dir;
  config.persist_dir = persist_dir;
  config.instance = shmstream::shm::instance_tag(socket_path);
  config.socket_path = socket_path;
  config.key = key;
  config.default_max_bytes = default_max_bytes;
  config.default_max_readers = default_max_readers;
  config.max_ring_capacity = max_ring_bytes;
  config.max_streams_per_user = max_streams_per_user;
  {
    // Shares of the segment file system, as it is now.
    struct statvfs fs {};
    const uint64_t total = statvfs(segment_dir.c_str(), &fs) == 0
                               ? static_cast<uint64_t>(fs.f_blocks) * fs.f_frsize
                               : 0;
    auto parse = [&](const std::string& text, const char* option) -> uint64_t {
      char* end = nullptr;
      unsigned long long value = std::strtoull(text.c_str(), &end, 10);
      if (end == text.c_str() || (*end != '\0' && std::strcmp(end, "%") != 0) ||
          (*end == '%' && value > 100)) {
        die(std::string(option) + ": \"" + text +
            "\" is neither a number of bytes nor a percentage");
      }
      return *end == '%' ? total / 100 * value : value;
    };
    config.max_bytes_per_user = parse(max_bytes_per_user_text, "--max-bytes-per-user");
    config.reserve_bytes = parse(reserve_text, "--reserve-bytes");
  }
  try {
    shmstream::daemon::Registry registry(config);
    {
      shmstream::daemon::Server server(io, registry, listen_fd, limits);
      server.set_about(shmstream::daemon::About{
          config_file->path,
          static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count())});
      spdlog::info(
          "serving {} (pid {}{}, segments in {} as {}*; {} bytes per user, {} in "
          "reserve)",
          socket_path, getpid(), activated_fd >= 0 ? ", socket from systemd" : "", segment_dir,
          shmstream::shm::segment_file_prefix(config.instance), config.max_bytes_per_user,
          config.reserve_bytes);
      if (ready_fd >= 0) {
        char byte = 1;
        if (write(ready_fd, &byte, 1) != 1) spdlog::warn("--ready-fd: {}", std::strerror(errno));
        close(ready_fd);
      }
      // Why it stops: a signal, or `shmstream daemon stop` (Control.stop).
      auto stop = io.unixEventPort.onSignal(SIGTERM)
                      .exclusiveJoin(io.unixEventPort.onSignal(SIGINT))
                      .then([](siginfo_t info) { return fmt::format("signal {}", info.si_signo); })
                      .exclusiveJoin(server.stop_asked().then(
                          [](uid_t uid) { return fmt::format("stop asked by uid {}", uid); }));
      std::string why = server.run()
                            .then([]() { return std::string("no more connections"); })
                            .exclusiveJoin(kj::mv(stop))
                            .wait(io.waitScope);
      if (ephemeral) {
        size_t removed = registry.remove_memory_streams_for_exit();
        spdlog::info("{}: shutting down; --ephemeral: {} streams in memory removed", why, removed);
      } else {
        spdlog::info("{}: shutting down; streams stay for the next daemon", why);
      }
      registry.set_shutting_down();
      if (activated_fd < 0) unlink(socket_path.c_str());  // systemd's socket stays, for the next
    }
  } catch (const std::exception& e) {
    die(e.what());
  }
  close(listen_fd);
  return 0;
}
