// What a restarted daemon finds, treated as hostile input (issue 19): a forged segment, a
// genuine header copied into another user's file, a fifo, a segment of another layout, a
// truncated file, recorded directories swapped for symlinks, two spellings of one directory, a
// newline in a directory's name. Nothing is adopted that this daemon did not make, nothing is
// deleted on doubt (it is moved aside, whole), and a truncated stream keeps its intact start.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "shm/authenticator.hpp"
#include "shm/layout.hpp"
#include "shm/naming.hpp"
#include "shm/segment.hpp"
#include "shmstream/client.hpp"
#include "support/harness.hpp"

namespace shmstream::test {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

std::string temp_dir(const char* tag) {
  std::string tmpl = std::string("/tmp/shmstream-") + tag + "-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp");
  return tmpl;
}

// The files in `dir` whose names start with `prefix`.
std::vector<std::string> files_in(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string f = e.path().filename().string();
    if (f.rfind(prefix, 0) == 0) out.push_back(f);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Every byte of stream `name` from offset 0, and how the reading ended.
std::pair<std::string, ErrorCode> read_everything(Client& client, const std::string& name) {
  auto reader = client.open(name);
  if (!reader.ok()) return {"", reader.status().code()};
  std::string out;
  char buf[65536];
  for (;;) {
    auto n = reader->read(std::as_writable_bytes(std::span(buf)), 5s);
    if (!n.ok()) return {out, n.status().code()};
    if (*n == 0) return {out, ErrorCode::kOk};
    out.append(buf, *n);
  }
}

class Adoption : public ::testing::Test {
 protected:
  void SetUp() override {
    segments_ = temp_dir("segments");
    daemon_ = std::make_unique<TestDaemon>(std::vector<std::string>{"--segment-dir", segments_});
    client_ = std::make_unique<Client>(connect_to(*daemon_));
    instance_ = shm::instance_tag(daemon_->socket_path());
  }
  void TearDown() override {
    client_.reset();
    daemon_.reset();
    for (const auto& dir : dirs_) fs::remove_all(dir);
    fs::remove_all(segments_);
  }

  void restart() {
    client_.reset();
    daemon_->restart();
    client_ = std::make_unique<Client>(connect_to(*daemon_));
  }
  std::string own_dir(const char* tag) {
    dirs_.push_back(temp_dir(tag));
    return dirs_.back();
  }
  std::string prefix() const { return shm::segment_file_prefix(instance_); }
  // The only segment file (not a side file) in `dir`.
  std::string only_segment(const std::string& dir) const {
    std::string found;
    for (const auto& f : files_in(dir, prefix())) {
      if (f.find('.', prefix().size()) == std::string::npos) {
        EXPECT_TRUE(found.empty()) << "two segments in " << dir;
        found = f;
      }
    }
    return dir + "/" + found;
  }
  void write_stream(const std::string& name, std::string_view data, CreateOptions options = {}) {
    auto producer = client_->create(name, options);
    ASSERT_TRUE(producer.ok()) << producer.status().to_string();
    ASSERT_TRUE(producer->append(data).ok());
    ASSERT_TRUE(producer->close().ok());
  }
  // Runs `edit` on the header of segment file `path`, then seals it again (checksum).
  static void edit_header(const std::string& path,
                          const std::function<void(shm::SegmentHeader&)>& edit) {
    int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0) << path;
    auto* h = static_cast<shm::SegmentHeader*>(
        mmap(nullptr, shm::kHeaderSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    ASSERT_NE(h, MAP_FAILED);
    edit(*h);
    h->header_checksum = shm::header_checksum(*h);
    munmap(h, shm::kHeaderSize);
    ::close(fd);
  }
  std::string gc_dry_run(const std::string& dir) {
    auto [status, out] = run_cli(*daemon_, {"gc", "--dry-run", "--dir", dir});
    EXPECT_EQ(status, 0) << out;
    return out;
  }

  std::string segments_;
  std::string instance_;
  std::vector<std::string> dirs_;
  std::unique_ptr<TestDaemon> daemon_;
  std::unique_ptr<Client> client_;
};

TEST_F(Adoption, AForgedSegmentDoesNotTakeOverAStreamNameAndIsMovedAsideWhole) {
  write_stream("victim", "genuine bytes");
  // The forgery: a well-formed segment of the same name (valid checksum, the daemon's own
  // user, a plausible id and socket), signed with a key that is not the daemon's.
  const uint64_t forged_id = 0x0123456789abcdefULL;
  std::string forged = segments_ + "/" + shm::segment_file_name(instance_, forged_id);
  {
    int fd = ::open(forged.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    shm::DaemonKey wrong;
    wrong.bytes.fill(0x42);
    shm::SegmentParams params;
    params.name = "victim";
    params.stream_id = forged_id;
    params.daemon_socket = daemon_->socket_path();
    params.key = &wrong;
    ASSERT_TRUE(shm::format_segment(fd, params).ok());
    ::close(fd);
  }
  const auto forged_size = fs::file_size(forged);
  restart();
  auto [data, end] = read_everything(*client_, "victim");
  EXPECT_EQ(data, "genuine bytes");
  EXPECT_EQ(end, ErrorCode::kOk);
  EXPECT_FALSE(fs::exists(forged));
  std::string aside = segments_ + "/" + shm::kQuarantinePrefix +
                      shm::segment_file_name(instance_, forged_id) + ".unsigned";
  ASSERT_TRUE(fs::exists(aside));
  EXPECT_EQ(fs::file_size(aside), forged_size);  // moved, whole
  EXPECT_THAT(gc_dry_run(segments_), HasSubstr("kept         quarantined"));
  // And again after one more restart: the genuine one stays, the forgery stays aside.
  restart();
  EXPECT_EQ(read_everything(*client_, "victim").first, "genuine bytes");
}

TEST_F(Adoption, AGenuineHeaderCopiedIntoAnotherUsersFileIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root: it gives the copy to another uid";
  write_stream("victim", "genuine bytes");
  std::string original = only_segment(segments_);
  std::string elsewhere = own_dir("copy");
  CreateOptions in_dir;
  in_dir.directory = elsewhere;
  write_stream("other", "other bytes", in_dir);  // makes `elsewhere` a recorded directory
  daemon_->stop();
  std::string copy = elsewhere + "/" + fs::path(original).filename().string();
  fs::copy_file(original, copy);
  ASSERT_EQ(chown(copy.c_str(), 54321, 54321), 0);  // the attacker's, made up
  daemon_->start_again();
  client_ = std::make_unique<Client>(connect_to(*daemon_));
  EXPECT_EQ(read_everything(*client_, "victim").first, "genuine bytes");
  EXPECT_EQ(read_everything(*client_, "other").first, "other bytes");
  EXPECT_TRUE(fs::exists(elsewhere + "/" + shm::kQuarantinePrefix +
                         fs::path(original).filename().string() + ".owner"));
}

TEST_F(Adoption, AFifoInPlaceOfASegmentNeitherHangsNorStopsTheDaemon) {
  write_stream("kept", "still here");
  std::string fifo = segments_ + "/" + shm::segment_file_name(instance_, 0xfeedULL);
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  restart();  // TestDaemon waits 10 s at most for it to be ready
  EXPECT_EQ(read_everything(*client_, "kept").first, "still here");
  std::string aside = segments_ + "/" + shm::kQuarantinePrefix +
                      shm::segment_file_name(instance_, 0xfeedULL) + ".not-regular";
  struct stat st {};
  ASSERT_EQ(lstat(aside.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST_F(Adoption, ASegmentSwappedForAFifoWhileServedIsStillReadThroughTheDaemonsDescriptor) {
  std::string dir = own_dir("swap");
  CreateOptions options;
  options.directory = dir;
  write_stream("p", "persistent bytes", options);
  std::string segment = only_segment(dir);
  ASSERT_EQ(rename(segment.c_str(), (segment + ".moved").c_str()), 0);
  ASSERT_EQ(mkfifo(segment.c_str(), 0600), 0);
  // The daemon opens a new reader's descriptor from its own, never by name: no hang, the data.
  EXPECT_EQ(read_everything(*client_, "p").first, "persistent bytes");
}

TEST_F(Adoption, ASegmentOfAnotherLayoutVersionIsMovedAsideNotDeleted) {
  std::string big(1 << 20, 'x');
  write_stream("old", big);
  std::string segment = only_segment(segments_);
  const auto size = fs::file_size(segment);
  daemon_->stop();
  edit_header(segment, [](shm::SegmentHeader& h) { h.layout_version = shm::kLayoutVersion - 1; });
  daemon_->start_again();
  client_ = std::make_unique<Client>(connect_to(*daemon_));
  EXPECT_EQ(client_->stat("old").status().code(), ErrorCode::kNotFound);
  std::string aside = segments_ + "/" + shm::kQuarantinePrefix +
                      fs::path(segment).filename().string() + ".version" +
                      std::to_string(shm::kLayoutVersion - 1);
  ASSERT_TRUE(fs::exists(aside));
  EXPECT_EQ(fs::file_size(aside), size);  // 1 MiB of data: all there
  // Its reader table went aside with it, and gc lists both with their size.
  EXPECT_TRUE(fs::exists(segments_ + "/" + shm::kQuarantinePrefix +
                         fs::path(segment).filename().string() + ".t.orphan"));
  std::string listed = gc_dry_run(segments_);
  EXPECT_THAT(listed, HasSubstr(aside));
  EXPECT_THAT(listed, HasSubstr("MiB"));
}

TEST_F(Adoption, ATruncatedPersistentStreamKeepsItsIntactStart) {
  CreateOptions options;
  options.persistent = true;
  std::string data(1 << 20, '\0');
  fill_random(3, 0, reinterpret_cast<std::byte*>(data.data()), data.size());
  write_stream("bytes", data, options);
  std::string segment = only_segment(daemon_->persist_dir());
  daemon_->stop();
  ASSERT_EQ(truncate(segment.c_str(), shm::kHeaderSize + 300000), 0);
  daemon_->start_again();
  client_ = std::make_unique<Client>(connect_to(*daemon_));
  auto info = client_->stat("bytes");
  ASSERT_TRUE(info.ok()) << info.status().to_string();
  EXPECT_EQ(info->state, StreamState::kAborted);
  EXPECT_EQ(info->bytes, 300000u);
  auto [kept, end] = read_everything(*client_, "bytes");
  EXPECT_EQ(kept, data.substr(0, 300000));
  EXPECT_EQ(end, ErrorCode::kProducerDied);  // the end says the stream did not end cleanly
}

TEST_F(Adoption, ATruncatedRecordsStreamKeepsOnlyWholeRecords) {
  CreateOptions options;
  options.persistent = true;
  options.records = true;
  {
    auto producer = client_->create("records", options).value();
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(producer.publish(std::string(1000, static_cast<char>('a' + i % 26))).ok());
    }
    ASSERT_TRUE(producer.close().ok());
  }
  std::string segment = only_segment(daemon_->persist_dir());
  daemon_->stop();
  const uint64_t frame = shm::record_frame_size(1000);
  ASSERT_EQ(truncate(segment.c_str(), shm::kHeaderSize + 40 * frame + 500), 0);  // mid-record
  daemon_->start_again();
  client_ = std::make_unique<Client>(connect_to(*daemon_));
  auto reader = client_->open("records").value();
  int records = 0;
  for (;;) {
    auto record = reader.next_record(5s);
    if (!record.ok()) {
      EXPECT_EQ(record.status().code(), ErrorCode::kProducerDied) << record.status().to_string();
      break;
    }
    ASSERT_TRUE(record->has_value());
    EXPECT_EQ((*record)->data.size(), 1000u);
    EXPECT_EQ(static_cast<char>((*record)->data[0]), static_cast<char>('a' + records % 26));
    ++records;
  }
  EXPECT_EQ(records, 40);
}

TEST_F(Adoption, ARecordedDirectorySwappedForASymlinkAdoptsNothingAndChangesNothing) {
  std::string first = own_dir("first");
  std::string second = own_dir("second");
  CreateOptions in_first;
  in_first.directory = first;
  CreateOptions in_second;
  in_second.directory = second;
  write_stream("in-first", "first bytes", in_first);
  write_stream("in-second", "second bytes", in_second);
  write_stream("in-memory", "memory bytes");
  auto listing = [](const std::string& dir) {
    std::vector<std::pair<std::string, uintmax_t>> out;
    for (const auto& f : files_in(dir, "")) out.emplace_back(f, fs::file_size(dir + "/" + f));
    return out;
  };
  const auto second_before = listing(second);
  const auto memory_before = listing(segments_);
  // The owner of `first` swaps it for a symlink: to another user's directory, then to the
  // segment directory. Each restart adopts nothing through it and changes nothing there.
  daemon_->stop();
  ASSERT_EQ(rename(first.c_str(), (first + ".real").c_str()), 0);
  for (const std::string& target : {second, segments_}) {
    ASSERT_EQ(symlink(target.c_str(), first.c_str()), 0);
    daemon_->start_again();
    client_ = std::make_unique<Client>(connect_to(*daemon_));
    EXPECT_EQ(client_->stat("in-first").status().code(), ErrorCode::kNotFound);
    EXPECT_EQ(read_everything(*client_, "in-second").first, "second bytes");
    EXPECT_EQ(read_everything(*client_, "in-memory").first, "memory bytes");
    client_.reset();
    daemon_->stop();
    EXPECT_EQ(listing(second), second_before);
    EXPECT_EQ(listing(segments_), memory_before);
    ASSERT_EQ(unlink(first.c_str()), 0);
  }
  // The real directory back in place: it is the one recorded, and its stream comes back.
  ASSERT_EQ(rename((first + ".real").c_str(), first.c_str()), 0);
  daemon_->start_again();
  client_ = std::make_unique<Client>(connect_to(*daemon_));
  EXPECT_EQ(read_everything(*client_, "in-first").first, "first bytes");
}

TEST_F(Adoption, TwoSpellingsOfOneDirectoryAndANewlineInItsNameBreakNothing) {
  std::string base = own_dir("spell");
  std::string odd = base + "/line\nbreak";
  ASSERT_EQ(mkdir(odd.c_str(), 0700), 0);
  std::string alias = base + "/alias";
  ASSERT_EQ(symlink(odd.c_str(), alias.c_str()), 0);
  CreateOptions direct;
  direct.directory = odd;
  CreateOptions through_alias;
  through_alias.directory = alias + "/.";
  write_stream("direct", "direct bytes", direct);
  write_stream("aliased", "aliased bytes", through_alias);
  EXPECT_EQ(files_in(odd, prefix()).size(), 4u);  // both streams' files are in the one directory
  // One record, on one line, whatever the name holds.
  std::ifstream list(daemon_->persist_dir() + "/directories");
  std::string line;
  int lines = 0;
  while (std::getline(list, line)) ++lines;
  EXPECT_EQ(lines, 1);
  restart();
  restart();
  EXPECT_EQ(read_everything(*client_, "direct").first, "direct bytes");
  EXPECT_EQ(read_everything(*client_, "aliased").first, "aliased bytes");
  EXPECT_TRUE(files_in(odd, shm::kQuarantinePrefix).empty());  // no duplicate, nothing aside
}

}  // namespace
}  // namespace shmstream::test
