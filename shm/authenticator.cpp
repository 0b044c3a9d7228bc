#include "shm/authenticator.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace shmstream::shm {

namespace {

uint64_t load_le64(const uint8_t* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, 8);  // x86-64 and arm64 Linux: little-endian, as SipHash reads its words
  return v;
}

struct SipState {
  uint64_t v0, v1, v2, v3;
  void round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }
  void absorb(uint64_t m) {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
};

}  // namespace

static_assert(std::endian::native == std::endian::little, "SipHash words are read little-endian");

uint64_t siphash24(const uint8_t* key, const void* data, size_t length) {
  const uint64_t k0 = load_le64(key);
  const uint64_t k1 = load_le64(key + 8);
  SipState s{k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL, k0 ^ 0x6c7967656e657261ULL,
             k1 ^ 0x7465646279746573ULL};
  const auto* in = static_cast<const uint8_t*>(data);
  const size_t whole = length - length % 8;
  for (size_t i = 0; i < whole; i += 8) s.absorb(load_le64(in + i));
  uint8_t tail[8] = {};
  std::memcpy(tail, in + whole, length % 8);
  s.absorb(load_le64(tail) | (static_cast<uint64_t>(length & 0xff) << 56));
  s.v2 ^= 0xff;
  for (int i = 0; i < 4; ++i) s.round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

std::array<std::byte, kAuthenticatorSize> header_authenticator(const SegmentHeader& header,
                                                               const DaemonKey& key) {
  constexpr size_t kIdentity = offsetof(SegmentHeader, authenticator);
  uint8_t message[kIdentity + kMaxNameLength + sizeof(header.daemon_socket)];
  size_t length = 0;
  auto append = [&](const void* bytes, size_t n) {
    std::memcpy(message + length, bytes, n);
    length += n;
  };
  append(&header, kIdentity);
  append(header.name, std::min<size_t>(header.name_length, kMaxNameLength));
  append(header.daemon_socket, sizeof(header.daemon_socket));
  const uint64_t halves[2] = {siphash24(key.bytes.data(), message, length),
                              siphash24(key.bytes.data() + 16, message, length)};
  std::array<std::byte, kAuthenticatorSize> out{};
  std::memcpy(out.data(), halves, sizeof(halves));
  return out;
}

bool header_authentic(const SegmentHeader& header, const DaemonKey& key) {
  const auto expected = header_authenticator(header, key);
  unsigned char differ = 0;
  for (size_t i = 0; i < kAuthenticatorSize; ++i) {
    differ |= static_cast<unsigned char>(expected[i] ^ header.authenticator[i]);
  }
  return differ == 0;
}

}  // namespace shmstream::shm
