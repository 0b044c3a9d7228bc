#include "daemon/config_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace shmstream::daemon {
namespace {

// The per-user file, whether or not it exists.
std::string user_config_path() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  if (xdg != nullptr && xdg[0] == '/') return std::string(xdg) + "/shmstream/shmstreamd.conf";
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] == '/') {
    return std::string(home) + "/.config/shmstream/shmstreamd.conf";
  }
  return {};
}

// Opens `path` for reading as configuration (see find_config()).
Result<kj::AutoCloseFd> open_config(const std::string& path) {
  auto refuse = [&](const std::string& why) {
    return Status(ErrorCode::kPermissionDenied, "configuration file " + path + ": " + why);
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0 && errno == ELOOP) return refuse("a symlink (refused, never followed)");
  if (fd < 0 && (errno == ENOENT || errno == ENOTDIR)) {
    return Status(ErrorCode::kNotFound, "configuration file " + path + ": no such file");
  }
  if (fd < 0 && errno == EACCES) {
    return Status(ErrorCode::kUnavailable,
                  "configuration file " + path + ": " + std::strerror(errno) + " (its directory)");
  }
  if (fd < 0) return refuse(std::strerror(errno));
  kj::AutoCloseFd owned(fd);
  struct stat st {};
  if (fstat(fd, &st) != 0) return refuse(std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return refuse("not a regular file");
  if (st.st_uid != geteuid() && st.st_uid != 0) {
    return refuse("owned by uid " + std::to_string(st.st_uid) + ", neither uid " +
                  std::to_string(geteuid()) + " nor root");
  }
  if ((st.st_mode & 022) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
    return refuse(std::string("writable by its group or others (mode ") + mode +
                  "); chmod go-w it");
  }
  return owned;
}

}  // namespace

Result<ConfigFile> find_config(int argc, char** argv) {
  ConfigFile config;
  std::string named;  // --config's
  bool none = false;
  bool system = false;
  size_t value_at = 0;  // where --config's value is in config.argv (0: nowhere)
  int i = 0;
  for (; i < argc; ++i) {
    std::string_view arg = argv[i];
    config.argv.emplace_back(arg);
    if (i == 0) continue;
    if (arg == "--") break;
    if (arg == "--no-config") none = true;
    if (arg == "--system") system = true;
    const bool joined = arg.starts_with("--config=");
    if (arg != "--config" && !joined) continue;
    if (value_at != 0) return Status(ErrorCode::kInvalidArgument, "--config given twice");
    if (joined) {
      named = arg.substr(9);
      config.argv.back() = "--config";
    } else if (i + 1 < argc) {
      named = argv[++i];
    } else {
      return config;  // CLI11 says what is missing
    }
    config.argv.emplace_back(named);
    value_at = config.argv.size() - 1;
    if (named.empty()) return Status(ErrorCode::kInvalidArgument, "--config: an empty path");
  }
  for (++i; i < argc; ++i) config.argv.emplace_back(argv[i]);
  if (none && !named.empty()) {
    return Status(ErrorCode::kInvalidArgument, "--config and --no-config exclude each other");
  }
  if (none) return config;
  if (!named.empty()) {
    auto fd = open_config(named);
    if (!fd.ok()) return fd.status();
    config.path = named;
    config.fd = kj::mv(*fd);
  } else {
    std::vector<std::string> candidates;
    if (!system) candidates.push_back(user_config_path());
    candidates.emplace_back(kSystemConfigFile);
    for (const auto& path : candidates) {
      if (path.empty()) continue;
      auto fd = open_config(path);
      if (!fd.ok() && fd.status().code() == ErrorCode::kNotFound) continue;
      // A default place this user cannot reach ($HOME another user's): as good as absent.
      if (!fd.ok() && fd.status().code() == ErrorCode::kUnavailable) {
        std::fprintf(stderr, "shmstreamd: not reading %s\n", fd.status().message().c_str());
        continue;
      }
      if (!fd.ok()) return fd.status();
      config.path = path;
      config.fd = kj::mv(*fd);
      break;
    }
    if (config.path.empty()) return config;
    config.argv.insert(config.argv.begin() + 1, {"--config", ""});
    value_at = 2;
  }
  config.argv[value_at] = "/proc/self/fd/" + std::to_string(config.fd.get());
  return config;
}

std::string name_config_in(std::string message, const ConfigFile& config) {
  if (config.path.empty()) return message;
  const std::string shown = "/proc/self/fd/" + std::to_string(config.fd.get());
  for (size_t at = message.find(shown); at != std::string::npos;
       at = message.find(shown, at + config.path.size())) {
    message.replace(at, shown.size(), config.path);
  }
  return message;
}

}  // namespace shmstream::daemon
