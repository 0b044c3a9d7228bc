#include "support/harness.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "shm/naming.hpp"
#include "shmstream/client.hpp"

extern char** environ;

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

int poll_one(int fd, short events, std::chrono::milliseconds timeout) {
  pollfd p{fd, events, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (rc < 0 && errno == EINTR);
  return rc;
}

}  // namespace

std::string bin_dir() { return SHMSTREAM_TEST_BIN_DIR; }

// ---------------------------------------------------------------------------------------------
// Child

Child::Child(Child&& other) noexcept { *this = std::move(other); }

Child& Child::operator=(Child&& other) noexcept {
  std::swap(pid_, other.pid_);
  std::swap(pidfd_, other.pidfd_);
  std::swap(stdin_fd_, other.stdin_fd_);
  std::swap(stdout_fd_, other.stdout_fd_);
  std::swap(pending_, other.pending_);
  return *this;
}

Child::~Child() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

Child Child::spawn(const std::vector<std::string>& argv, bool pipe_stdin, bool pipe_stdout,
                   const std::vector<std::string>& extra_env, int fd3) {
  int in[2] = {-1, -1};
  int out[2] = {-1, -1};
  if (pipe_stdin && pipe2(in, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  if (pipe_stdout && pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const auto& e : extra_env) env_strings.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> args_p;
  for (auto& a : args) args_p.push_back(a.data());
  args_p.push_back(nullptr);
  pid_t parent = getpid();

  Child child;
  child.pid_ = fork();
  if (child.pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (child.pid_ == 0) {
    // Dies with the test process, so a crashed or timed-out test leaves no daemon behind.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    signal(SIGPIPE, SIG_DFL);  // run_cli ignores it in the test; programs get the default
    int null_fd = open("/dev/null", O_RDWR);
    dup2(pipe_stdin ? in[0] : null_fd, STDIN_FILENO);
    dup2(pipe_stdout ? out[1] : null_fd, STDOUT_FILENO);
    if (fd3 == 3) fcntl(3, F_SETFD, 0);      // dup2 onto itself would keep close-on-exec
    if (fd3 >= 0 && fd3 != 3) dup2(fd3, 3);  // dup2 clears close-on-exec on the copy
    execve(args_p[0], args_p.data(), envp.data());
    _exit(127);
  }
  if (pipe_stdin) ::close(in[0]);
  if (pipe_stdout) ::close(out[1]);
  child.stdin_fd_ = pipe_stdin ? in[1] : -1;
  child.stdout_fd_ = pipe_stdout ? out[0] : -1;
  child.pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, child.pid_, 0));
  return child;
}

void Child::close_stdin() {
  if (stdin_fd_ >= 0) ::close(stdin_fd_);
  stdin_fd_ = -1;
}

std::string Child::read_line(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (auto nl = pending_.find('\n'); nl != std::string::npos) {
      std::string line = pending_.substr(0, nl);
      pending_.erase(0, nl + 1);
      return line;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || poll_one(stdout_fd_, POLLIN, left) <= 0) return "";
    char buf[4096];
    ssize_t n = ::read(stdout_fd_, buf, sizeof(buf));
    if (n <= 0) return "";
    pending_.append(buf, static_cast<size_t>(n));
  }
}

bool Child::wait_for_line(const std::string& want, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    std::string line = read_line(left);
    if (line == want) return true;
    if (line.empty()) return false;
  }
}

int Child::wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  if (pidfd_ >= 0 && poll_one(pidfd_, POLLIN, timeout) <= 0) return -1;
  int status = 0;
  if (waitpid(pid_, &status, 0) != pid_) return -1;
  pid_ = -1;
  return status;
}

void Child::kill(int signo) {
  if (pid_ > 0) ::kill(pid_, signo);
}

// ---------------------------------------------------------------------------------------------
// TestDaemon

TestDaemon::TestDaemon() : TestDaemon(std::vector<std::string>{}) {}

TestDaemon::TestDaemon(std::vector<std::string> extra_args) : extra_args_(std::move(extra_args)) {
  char tmpl[] = "/tmp/shmstream-test-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
  dir_ = tmpl;
  socket_path_ = dir_ + "/ctl.sock";
  start();
}

void TestDaemon::restart() {
  int status = stop();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "shmstreamd exit " << status;
  start();
}

void TestDaemon::start() {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  std::vector<std::string> argv = {
      bin_dir() + "/shmstreamd", "--foreground", "--socket", socket_path_,  "--persist-dir",
      dir_ + "/persist",         "--ready-fd",   "3",        "--log-level", "warn"};
  argv.insert(argv.end(), extra_args_.begin(), extra_args_.end());
  // Hermetic: no configuration file of the machine or the user, unless the test names one.
  if (std::find(extra_args_.begin(), extra_args_.end(), "--config") == extra_args_.end()) {
    argv.push_back("--no-config");
  }
  child_ = Child::spawn(argv, false, false, {}, ready[1]);
  ::close(ready[1]);
  char byte = 0;
  bool ok = poll_one(ready[0], POLLIN, 10s) > 0 && ::read(ready[0], &byte, 1) == 1;
  ::close(ready[0]);
  if (!ok) throw std::runtime_error("shmstreamd did not become ready on " + socket_path_);
}

TestDaemon::~TestDaemon() {
  if (alive()) {
    // Force-remove whatever the test left, then check the memory really went away.
    ClientOptions options;
    options.socket_path = socket_path_;
    options.autostart = false;
    // Until the daemon serves us: a test's connections over a limit may still count a moment.
    (void)eventually([&] {
      auto client = Client::connect(options);
      auto streams =
          client.ok() ? client->list() : Result<std::vector<StreamInfo>>(client.status());
      if (!streams.ok()) return false;
      for (const auto& s : *streams) {
        if (!s.removing) (void)client->remove(s.name, /*force=*/true);
      }
      return true;
    });
    bool released = eventually([&] { return segment_files().empty(); });
    EXPECT_TRUE(released) << "segment files left in /dev/shm after the test";
    // A clean exit: no crash, and (in sanitizer builds) no leak or error report.
    int status = stop();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "shmstreamd exit status " << status;
  }
  for (const auto& f : segment_files()) {
    ADD_FAILURE() << "leftover segment " << f;
    std::filesystem::remove(std::string(shm::kDefaultSegmentDir) + "/" + f);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

void TestDaemon::crash_and_restart() {
  kill_without_restart();
  start();
}

void TestDaemon::kill_without_restart() {
  child_.kill(SIGKILL);
  int status = child_.wait(10s);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "shmstreamd exit " << status;
}

bool TestDaemon::alive() { return child_.pid() > 0 && ::kill(child_.pid(), 0) == 0; }

int TestDaemon::stop() {
  child_.kill(SIGTERM);
  int status = child_.wait(10s);
  if (status == -1) {
    child_.kill(SIGKILL);
    status = child_.wait(10s);
  }
  return status;
}

bool is_segment_file(const std::string& name) {
  std::string base = name.substr(name.rfind('/') + 1);
  std::string last = base.substr(base.rfind('.') + 1);
  return last != "t" && !(last.size() == 17 && last[0] == 'r');
}

std::vector<std::string> TestDaemon::segment_files() const {
  std::vector<std::string> out;
  std::string prefix = shm::segment_file_prefix(shm::instance_tag(socket_path_));
  if (DIR* d = opendir(shm::kDefaultSegmentDir)) {
    while (dirent* e = readdir(d)) {
      if (std::string(e->d_name).rfind(prefix, 0) == 0) out.emplace_back(e->d_name);
    }
    closedir(d);
  }
  return out;
}

std::vector<std::string> TestDaemon::env() const { return {"SHMSTREAM_SOCKET=" + socket_path_}; }

// ---------------------------------------------------------------------------------------------
// Data

void fill_random(uint64_t seed, uint64_t offset, std::byte* out, size_t length) {
  uint64_t word_index = offset / 8;
  size_t skip = offset % 8;
  size_t done = 0;
  while (done < length) {
    uint64_t w = splitmix(seed ^ (word_index * 0xd1b54a32d192ed03ULL));
    unsigned char bytes[8];
    std::memcpy(bytes, &w, 8);
    size_t take = std::min<size_t>(8 - skip, length - done);
    std::memcpy(out + done, bytes + skip, take);
    done += take;
    skip = 0;
    ++word_index;
  }
}

void Digest::update(const void* data, size_t length) {
  const auto* p = static_cast<const unsigned char*>(data);
  bytes_ += length;
  while (length > 0 && tail_len_ > 0) {
    tail_[tail_len_++] = *p++;
    --length;
    if (tail_len_ == 8) {
      uint64_t w;
      std::memcpy(&w, tail_, 8);
      state_ = (std::rotl(state_ ^ w, 29)) * 0xbf58476d1ce4e5b9ULL;
      tail_len_ = 0;
    }
  }
  while (length >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    state_ = (std::rotl(state_ ^ w, 29)) * 0xbf58476d1ce4e5b9ULL;
    p += 8;
    length -= 8;
  }
  while (length > 0) {
    tail_[tail_len_++] = *p++;
    --length;
  }
}

uint64_t Digest::value() const {
  uint64_t s = state_;
  for (size_t i = 0; i < tail_len_; ++i) s = (s ^ tail_[i]) * 0x100000001b3ULL;
  return splitmix(s ^ bytes_);
}

uint64_t digest_of_random(uint64_t seed, uint64_t length) {
  Digest d;
  std::vector<std::byte> buf(1 << 20);
  for (uint64_t off = 0; off < length; off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), length - off));
    fill_random(seed, off, buf.data(), n);
    d.update(buf.data(), n);
  }
  return d.value();
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto pause = 100us;; pause = std::min<std::chrono::microseconds>(pause * 2, 20ms)) {
    if (condition()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(pause);
  }
}

bool write_faults(const std::byte* address) {
  pid_t child = fork();
  if (child == 0) {
    signal(SIGSEGV, SIG_DFL);  // the kernel's verdict, not a sanitizer's handler
    *const_cast<volatile std::byte*>(address) = std::byte{'X'};
    _exit(0);
  }
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child) return false;
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

std::thread blocked_thread(std::function<void()> fn) {
  // Shared, so that the thread may outlive this call even if the wait below gives up.
  auto tid = std::make_shared<std::atomic<pid_t>>(0);
  std::thread t([tid, fn = std::move(fn)] {
    tid->store(static_cast<pid_t>(syscall(SYS_gettid)));
    fn();
  });
  EXPECT_TRUE(eventually([&] { return *tid != 0 && thread_sleeps_in_futex(*tid); }));
  return t;
}

bool thread_sleeps_in_futex(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long number = -1;
  in >> number;
  return number == SYS_futex_waitv;
}

Client connect_to(const TestDaemon& daemon) {
  ClientOptions options;
  options.socket_path = daemon.socket_path();
  options.autostart = false;
  return Client::connect(options).value();
}

TempDir::TempDir(const std::string& tag) {
  std::string pattern = "/tmp/shmstream-" + tag + "-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp " + pattern);
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string read_all(int fd) {
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

std::pair<int, std::string> run_cli(const TestDaemon& daemon, const std::vector<std::string>& args,
                                    const std::string& input, std::chrono::milliseconds timeout,
                                    bool with_stderr) {
  std::vector<std::string> argv = {bin_dir() + "/shmstream"};
  if (with_stderr) argv = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1", bin_dir() + "/shmstream"};
  argv.insert(argv.end(), args.begin(), args.end());
  signal(SIGPIPE, SIG_IGN);  // a CLI that fails stops reading its input: EPIPE, not death
  Child child = Child::spawn(argv, !input.empty(), true, daemon.env());
  std::thread feed;
  if (!input.empty()) {
    feed = std::thread([&] {
      size_t off = 0;
      while (off < input.size()) {
        ssize_t n = ::write(child.stdin_fd(), input.data() + off, input.size() - off);
        if (n <= 0) break;  // the CLI stopped reading (it failed): its status tells
        off += static_cast<size_t>(n);
      }
      child.close_stdin();
    });
  }
  std::string out = read_all(child.stdout_fd());
  if (feed.joinable()) feed.join();
  return {child.wait(timeout), out};
}

}  // namespace shmstream::test
