// tests/support/rpc_session.hpp — the raw bytes a client sends over the control socket: the
// Cap'n Proto RPC bootstrap, then calls on the bootstrap capability (the daemon's Control),
// for tests and fuzz seeds that talk to the daemon below the client library.
#pragma once

#include <capnp/message.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "proto/control.capnp.h"

namespace shmstream::test {

// One call: the Control method's number and a function filling its parameters.
struct RpcCall {
  uint16_t method;
  std::function<void(capnp::AnyPointer::Builder)> params;
};

inline std::string rpc_session(const std::vector<RpcCall>& calls) {
  std::string out;
  auto append = [&](capnp::MessageBuilder& message) {
    auto words = capnp::messageToFlatArray(message);
    auto bytes = words.asBytes();
    out.append(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  };
  {
    capnp::MallocMessageBuilder message;
    message.initRoot<capnp::rpc::Message>().initBootstrap().setQuestionId(0);
    append(message);
  }
  uint32_t question = 1;
  for (const auto& c : calls) {
    capnp::MallocMessageBuilder message;
    auto call = message.initRoot<capnp::rpc::Message>().initCall();
    call.setQuestionId(question++);
    call.initTarget().initPromisedAnswer().setQuestionId(0);
    call.setInterfaceId(capnp::typeId<proto::Control>());
    call.setMethodId(c.method);
    c.params(call.initParams().getContent());
    append(message);
  }
  return out;
}

}  // namespace shmstream::test
