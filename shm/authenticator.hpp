// shm/authenticator.hpp — the proof that a segment is a daemon's own.
//
// Segment files live where users can plant files (/dev/shm, directories users name for
// persistent streams), and a restarted daemon adopts what it finds there. A checksum tells a
// corrupt header from a good one, not a forged one from a genuine one: anybody can compute it.
// So the daemon that creates a segment writes into its header a MAC under a secret key only it
// can read (daemon/key_file.hpp), and a restarted daemon adopts only the segments whose MAC it
// can recompute. SipHash-2-4 is a keyed pseudo-random function designed for short inputs (the
// Linux kernel's and most hash tables' MAC); two independent 64-bit halves under two keys make
// the 128-bit tag. Written here rather than taken from a library: 40 lines, checked against the
// reference vectors in tests/shm/authenticator_test.cpp.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "shm/layout.hpp"

namespace shmstream::shm {

// A daemon's secret: two 128-bit SipHash keys.
struct DaemonKey {
  std::array<uint8_t, 32> bytes{};
};

// SipHash-2-4 of `data` under the 16-byte `key` (the reference algorithm, 64-bit output).
uint64_t siphash24(const uint8_t* key, const void* data, size_t length);

// The authenticator of a header: of its identity before the authenticator ([0, 96)), its name
// and its daemon socket. Pure: safe on any bytes.
std::array<std::byte, kAuthenticatorSize> header_authenticator(const SegmentHeader& header,
                                                               const DaemonKey& key);
// Whether the header carries the authenticator `key` gives it (compared in constant time).
bool header_authentic(const SegmentHeader& header, const DaemonKey& key);

}  // namespace shmstream::shm
