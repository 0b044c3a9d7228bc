// The C API (shmstream.h), exercised from a C program (c_api_check.c) against a live daemon,
// and C and C++ reading each other's streams.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include "support/harness.hpp"

namespace shmstream::test {
namespace {

TEST(CApi, EveryCallFromCAndStreamsCrossBetweenCAndCpp) {
  TestDaemon daemon;
  Client client = connect_to(daemon);
  constexpr size_t kBytes = 300000;
  {
    auto producer = client.create("from-cpp").value();
    std::vector<std::byte> data(kBytes);
    for (size_t i = 0; i < kBytes; ++i) data[i] = static_cast<std::byte>(i * 13);
    ASSERT_TRUE(producer.append(data).ok());
    ASSERT_TRUE(producer.close().ok());
  }
  Child check = Child::spawn({bin_dir() + "/c_api_check", "from-cpp", std::to_string(kBytes)},
                             false, true, daemon.env());
  std::string line = check.read_line(std::chrono::seconds(60));
  int status = check.wait(std::chrono::seconds(30));
  ASSERT_TRUE(WIFEXITED(status)) << "c_api_check did not exit: status " << status;
  EXPECT_EQ(WEXITSTATUS(status), 0) << line;
  EXPECT_NE(line.find(" 0 failed"), std::string::npos) << line;

  // What the C program wrote, read back in C++.
  auto reader = client.open("from-c").value();
  size_t got = 0;
  size_t wrong = 0;
  for (auto v = reader.next(65536, std::chrono::seconds(10)).value(); !v.empty();
       v = reader.next(65536, std::chrono::seconds(10)).value()) {
    for (std::byte b : v) wrong += b != static_cast<std::byte>(got++ * 17);
  }
  EXPECT_EQ(got, 100000u);
  EXPECT_EQ(wrong, 0u);
  // The C program removed its own test streams; only the two exchanged ones remain.
  auto streams = client.list().value();
  EXPECT_EQ(streams.size(), 2u);
  EXPECT_TRUE(client.remove("from-cpp").ok());
  EXPECT_TRUE(client.remove("from-c").ok());
}

}  // namespace
}  // namespace shmstream::test
