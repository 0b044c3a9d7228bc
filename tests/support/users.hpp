// tests/support/users.hpp — throwaway users for tests that need more than one (root only).
#pragma once

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace shmstream::test {

// Runs a useradd/userdel command, one at a time across test processes (they lock
// /etc/passwd and fail, not wait, when another holds it).
inline int run_locked(const std::string& command) {
  int lock = ::open("/tmp/shmstream-test-useradd.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock >= 0) flock(lock, LOCK_EX);
  int rc = std::system(command.c_str());
  if (lock >= 0) ::close(lock);
  return rc;
}

// A throwaway user (with its own group), deleted on destruction.
class TempUser {
 public:
  // `extra_group`: a group it also belongs to (supplementary), or "".
  explicit TempUser(const std::string& tag, const std::string& extra_group = "") {
    name_ = "shmst" + tag + std::to_string(getpid());
    std::string command = "useradd --system --no-create-home --user-group --shell /bin/false " +
                          (extra_group.empty() ? "" : "-G " + extra_group + " ") + name_;
    ok_ = run_locked(command) == 0;
    if (const passwd* pw = ok_ ? getpwnam(name_.c_str()) : nullptr; pw != nullptr) {
      uid_ = pw->pw_uid;
      gid_ = pw->pw_gid;
    } else {
      ok_ = false;
    }
  }
  ~TempUser() {
    if (ok_) (void)run_locked("userdel " + name_ + " 2>/dev/null");
  }
  bool ok() const { return ok_; }
  const std::string& name() const { return name_; }
  uid_t uid() const { return uid_; }
  gid_t gid() const { return gid_; }

 private:
  std::string name_;
  bool ok_ = false;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

}  // namespace shmstream::test
