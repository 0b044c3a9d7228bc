// Hostile processes against the daemon and against honest readers: every attack a process can
// make through the files and descriptors it holds, and what each victim sees. The owner's
// attacks need no second user (an owner may always write its own segment file).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "shm/naming.hpp"
#include "shmstream/client.hpp"
#include "support/harness.hpp"
#include "support/status_matchers.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;

bool exited_with(int status, int code) { return WIFEXITED(status) && WEXITSTATUS(status) == code; }

// The path of stream `name`'s segment file in /dev/shm.
std::string segment_of(const TestDaemon& daemon, Client& client, const std::string& name) {
  auto info = client.stat(name);
  if (!info.ok()) return {};
  return std::string(shm::kDefaultSegmentDir) + "/" +
         shm::segment_file_name(shm::instance_tag(daemon.socket_path()), info->stream_id);
}

// After an attack: the daemon lives and serves someone else (a new stream, written and read).
void expect_daemon_serves(TestDaemon& daemon) {
  ASSERT_TRUE(daemon.alive());
  auto [status, out] = run_cli(daemon, {"write", "bystander"}, "still here\n");
  EXPECT_TRUE(exited_with(status, 0)) << status;
  auto [cat_status, text] = run_cli(daemon, {"cat", "bystander"});
  EXPECT_TRUE(exited_with(cat_status, 0)) << cat_status;
  EXPECT_EQ(text, "still here\n");
}

TEST(HostileOwner, ShrinkingTheSegmentBelowItsHeaderUnderAReadingCatIsAnErrorNotASignal) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  Child writer =
      Child::spawn({bin_dir() + "/shmstream", "write", "victim"}, true, false, daemon.env());
  ASSERT_TRUE(eventually([&] { return client.stat("victim").ok(); }));
  Child cat = Child::spawn({bin_dir() + "/shmstream", "cat", "victim"}, false, true, daemon.env());
  ASSERT_EQ(::write(writer.stdin_fd(), "first\n", 6), 6);
  ASSERT_TRUE(cat.wait_for_line("first", 10s));
  const std::string file = segment_of(daemon, client, "victim");
  ASSERT_FALSE(file.empty());
  ASSERT_EQ(truncate(file.c_str(), 100), 0);  // the owner's attack
  // The owner's own writer fails (its own doing), as an error: the stream ends, the cat wakes.
  (void)::write(writer.stdin_fd(), "second\n", 7);
  writer.close_stdin();
  int writer_status = writer.wait(10s);
  EXPECT_TRUE(WIFEXITED(writer_status)) << writer_status;
  int cat_status = cat.wait(10s);
  EXPECT_TRUE(exited_with(cat_status, 1)) << cat_status;  // not SIGBUS, not a hang, not 0
  // `ls` reads the damaged header: the daemon survives it, and says what it found.
  auto listed = client.list();
  ASSERT_THAT(listed, IsOk());
  bool found = false;
  for (const StreamInfo& info : *listed) {
    if (info.name != "victim") continue;
    found = true;
    EXPECT_EQ(std::string(state_label(info)), "corrupt");
    EXPECT_NE(info.damage.find("shorter than the 4096-byte header"), std::string::npos)
        << info.damage;
  }
  EXPECT_TRUE(found);
  expect_daemon_serves(daemon);
}

TEST(HostileOwner, TruncatingTheSegmentToNothingIsCorruptForAReaderAndHarmlessToTheDaemon) {
  TestDaemon daemon;
  auto client = connect_to(daemon);
  auto producer = client.create("victim");
  ASSERT_THAT(producer, IsOk());
  const std::string data(1 << 20, 'd');
  ASSERT_THAT(producer->append(std::as_bytes(std::span(data))), IsOk());
  auto reader = client.open("victim");
  ASSERT_THAT(reader, IsOk());
  auto view = reader->next(4096, 10s);
  ASSERT_THAT(view, IsOk());
  const std::string file = segment_of(daemon, client, "victim");
  ASSERT_FALSE(file.empty());
  ASSERT_EQ(truncate(file.c_str(), 0), 0);
  EXPECT_THAT(reader->next(1 << 20, 1s), StatusIs(ErrorCode::kCorrupt));
  EXPECT_EQ((*view)[100], std::byte{0});  // a view held across the attack reads zeros
  auto info = client.stat("victim");
  ASSERT_THAT(info, IsOk());
  EXPECT_FALSE(info->damage.empty());
  expect_daemon_serves(daemon);
  // The owner's producer is told, and removing the stream cleans up all the same.
  EXPECT_THAT(producer->append(std::as_bytes(std::span(data))), StatusIs(ErrorCode::kCorrupt));
  EXPECT_THAT(client.remove("victim", /*force=*/true), IsOk());
}

}  // namespace
}  // namespace shmstream::test
