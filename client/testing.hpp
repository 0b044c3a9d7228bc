// client/testing.hpp — a seam for tests of a race no outside action can time. Internal: not
// installed, not exported from libshmstream.so.
#pragma once

#include <functional>

namespace shmstream::testing {

// Runs `hook` on the caller's thread each time a create, resume or open was granted and its
// files mapped, just before the grant is remembered for reattachment after a daemon restart
// (tests kill the daemon there). An empty function: nothing (the default).
void set_after_grant(std::function<void()> hook);

}  // namespace shmstream::testing
