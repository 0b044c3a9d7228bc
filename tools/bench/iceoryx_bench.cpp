// Scenario: shmstream against iceoryx 2.0.3 (Debian's), message by message: 64 B, 4 KiB and
// 1 MiB messages, one-way latency of a blocked subscriber (ping-pong) and messages/s with a
// subscriber that reads every byte. Both sides do the same work: the publisher writes the
// whole message into shared memory (shmstream: reserve_record; iceoryx: loan), the subscriber
// reads it in place. shmstream uses a records stream on a blocking ring, iceoryx a publisher
// that waits for its subscriber (WAIT_FOR_CONSUMER / BLOCK_PRODUCER): neither loses messages.
// The benchmark starts its own RouDi (iox-roudi) with a config sized for the three messages.
#include "bench/harness.hpp"

#ifdef SHMSTREAM_HAVE_ICEORYX

#include <filesystem>
#include <fstream>
#include <thread>

#include "iceoryx_hoofs/log/logmanager.hpp"
#include "iceoryx_posh/popo/untyped_publisher.hpp"
#include "iceoryx_posh/popo/untyped_subscriber.hpp"
#include "iceoryx_posh/popo/wait_set.hpp"
#include "iceoryx_posh/runtime/posh_runtime.hpp"

namespace shmstream::bench {
namespace {

constexpr auto kPingGap = 100us;  // as in the blocked-latency scenario: subscribers sleep

struct MessageSize {
  size_t bytes;
  const char* label;
  uint64_t throughput_messages;  // per throughput run (full); --quick divides by 10
  uint64_t queue;                // iceoryx subscriber queue capacity
};
constexpr MessageSize kSizes[] = {
    {64, "64B", 2'000'000, 256},
    {4096, "4KiB", 500'000, 256},
    {1 << 20, "1MiB", 4'000, 16},
};

// ---- iceoryx side -------------------------------------------------------------------------

// RouDi's shared-memory pools: room for every message size, queue and in-flight loan.
constexpr const char* kRoudiConfig = R"([general]
version = 1

[[segment]]

[[segment.mempool]]
size = 128
count = 4096

[[segment.mempool]]
size = 8192
count = 2048

[[segment.mempool]]
size = 1049600
count = 96
)";

class Roudi {
 public:
  explicit Roudi(const std::string& dir) {
    std::string config = dir + "/roudi.toml";
    std::ofstream(config) << kRoudiConfig;
    pid_ = fork();
    if (pid_ < 0) die("fork");
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);  // RouDi prints a banner on stdout: keep --json output clean
      execlp("iox-roudi", "iox-roudi", "-c", config.c_str(), "-l", "error", nullptr);
      _exit(127);
    }
  }
  ~Roudi() {
    kill(pid_, SIGINT);  // RouDi's clean shutdown: it removes its shared memory
    waitpid(pid_, nullptr, 0);
  }
  // Whether RouDi is still running (it exits at once if it cannot start).
  bool alive() const { return waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_ = -1;
};

void init_runtime(const char* role) {
  exit_cleanly = true;  // the runtime deregisters at exit; RouDi then has no dead process to kill
  iox::log::LogManager::GetLogManager().SetDefaultLogLevel(iox::log::LogLevel::kWarn,
                                                           iox::log::LogLevelOutput::kHideLogLevel);
  std::string name = std::string("shmbench_") + role + "_" + std::to_string(getpid());
  iox::runtime::PoshRuntime::initRuntime(iox::RuntimeName_t(iox::cxx::TruncateToCapacity, name));
}

iox::capro::ServiceDescription service(const std::string& topic, int run) {
  auto id = [](const std::string& s) {
    return iox::capro::IdString_t(iox::cxx::TruncateToCapacity, s);
  };
  return {id("shmbench"), id(topic), id(std::to_string(run))};
}

iox::popo::UntypedPublisher make_publisher(const iox::capro::ServiceDescription& s) {
  iox::popo::PublisherOptions options;
  options.subscriberTooSlowPolicy = iox::popo::ConsumerTooSlowPolicy::WAIT_FOR_CONSUMER;
  return iox::popo::UntypedPublisher(s, options);
}

iox::popo::UntypedSubscriber make_subscriber(const iox::capro::ServiceDescription& s,
                                             uint64_t queue) {
  iox::popo::SubscriberOptions options;
  options.queueCapacity = queue;
  options.queueFullPolicy = iox::popo::QueueFullPolicy::BLOCK_PRODUCER;
  return iox::popo::UntypedSubscriber(s, options);
}

void await_subscribed(const iox::popo::UntypedSubscriber& sub) {
  while (sub.getSubscriptionState() != iox::SubscribeState::SUBSCRIBED) {
    std::this_thread::sleep_for(1ms);  // discovery runs in RouDi's loop; no event to wait on
  }
}

void await_subscriber(const iox::popo::UntypedPublisher& pub) {
  while (!pub.hasSubscribers()) std::this_thread::sleep_for(1ms);
}

// Attaches `sub` to `waitset`, then waits until both ends of a ping-pong side are connected.
void connect_pair(const iox::popo::UntypedPublisher& pub, iox::popo::UntypedSubscriber& sub,
                  iox::popo::WaitSet<>& waitset) {
  if (waitset.attachState(sub, iox::popo::SubscriberState::HAS_DATA).has_error()) die("waitset");
  await_subscribed(sub);
  await_subscriber(pub);
}

// Loans a message, fills it from the source (the message's first 8 bytes: `seq`), publishes.
void iox_send(iox::popo::UntypedPublisher& pub, size_t size, uint64_t seq) {
  for (;;) {
    auto loan = pub.loan(static_cast<uint32_t>(size));
    if (!loan.has_error()) {
      void* p = loan.value();
      std::memcpy(p, chunk_at(seq * 64, size).data(), size);
      std::memcpy(p, &seq, sizeof(seq));
      pub.publish(p);
      return;
    }
    // Every chunk is in flight (WAIT_FOR_CONSUMER blocks in publish, not in loan): retry.
    std::this_thread::yield();
  }
}

// Waits (blocked in the WaitSet) for the next message; returns its payload, to be released.
const void* iox_receive(iox::popo::UntypedSubscriber& sub, iox::popo::WaitSet<>& waitset) {
  for (;;) {
    auto taken = sub.take();
    if (!taken.has_error()) return taken.value();
    waitset.wait();
  }
}

std::vector<double> iox_pingpong(const Options& o, const MessageSize& m, int run) {
  const int n = o.latency_samples / (m.bytes >= (1 << 20) ? 10 : 1);
  SharedSamples samples(n);
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    init_runtime("ping");
    auto pub = make_publisher(service("ping", run));
    auto sub = make_subscriber(service("pong", run), m.queue);
    iox::popo::WaitSet<> waitset;
    connect_pair(pub, sub, waitset);
    ready_and_wait(go_fd);
    for (int i = 0; i < n; ++i) {
      std::this_thread::sleep_for(kPingGap);
      auto t0 = Clock::now();
      iox_send(pub, m.bytes, static_cast<uint64_t>(i));
      const void* reply = iox_receive(sub, waitset);
      uint64_t seq;
      std::memcpy(&seq, reply, sizeof(seq));
      sub.release(reply);
      if (seq != static_cast<uint64_t>(i)) die("iceoryx: pong out of order");
      samples.data()[i] = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2;
    }
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    init_runtime("pong");
    auto sub = make_subscriber(service("ping", run), m.queue);
    auto pub = make_publisher(service("pong", run));
    iox::popo::WaitSet<> waitset;
    connect_pair(pub, sub, waitset);
    ready_and_wait(go_fd);
    for (int i = 0; i < n; ++i) {
      const void* ping = iox_receive(sub, waitset);
      uint64_t seq;
      std::memcpy(&seq, ping, sizeof(seq));
      sub.release(ping);
      iox_send(pub, m.bytes, seq);
    }
    return 0.0;
  });
  run_parties(bodies);
  return samples.take();
}

double iox_throughput(const Options& o, const MessageSize& m, uint64_t count, int run) {
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    init_runtime("pub");
    auto pub = make_publisher(service("data", run));
    await_subscriber(pub);
    ready_and_wait(go_fd);
    for (uint64_t i = 0; i < count; ++i) iox_send(pub, m.bytes, i);
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    init_runtime("sub");
    auto sub = make_subscriber(service("data", run), m.queue);
    iox::popo::WaitSet<> waitset;
    if (waitset.attachState(sub, iox::popo::SubscriberState::HAS_DATA).has_error()) die("waitset");
    await_subscribed(sub);
    ready_and_wait(go_fd);
    uint64_t acc = 0;
    for (uint64_t i = 0; i < count; ++i) {
      const void* p = iox_receive(sub, waitset);
      acc = consume(static_cast<const std::byte*>(p), m.bytes, acc);
      uint64_t seq;
      std::memcpy(&seq, p, sizeof(seq));
      sub.release(p);
      if (seq != i) die("iceoryx: message lost or out of order");
    }
    return static_cast<double>(acc & 0xffff);
  });
  RunResult r = run_parties(bodies);
  (void)o;
  return static_cast<double>(count) / r.seconds;
}

// ---- shmstream side ---------------------------------------------------------------------------

shmstream::CreateOptions message_stream(const MessageSize& m) {
  shmstream::CreateOptions options;
  options.records = true;
  options.retention = shmstream::Retention::kBlock;
  options.ring_capacity = std::max<uint64_t>(4 << 20, 4 * m.bytes);
  return options;
}

void shm_send(shmstream::Producer& p, size_t size, uint64_t seq) {
  auto span = take(p.reserve_record(size), "reserve_record");
  std::memcpy(span.data(), chunk_at(seq * 64, size).data(), size);
  std::memcpy(span.data(), &seq, sizeof(seq));
  check(p.commit_record(size), "commit_record");
}

shmstream::Record shm_receive(shmstream::Reader& r) {
  auto record = take(r.next_record(), "next_record");
  if (!record) die("the stream ended early");
  return *record;
}

// Opens `name`, retrying while its creator (another party) has not created it yet.
shmstream::Reader open_when_created(shmstream::Client& client, const std::string& name) {
  for (;;) {
    auto r = client.open(name);
    if (r.ok()) return std::move(r.value());
    if (r.status().code() != shmstream::ErrorCode::kNotFound) die(r.status().to_string());
    std::this_thread::sleep_for(1ms);
  }
}

std::vector<double> shm_pingpong(const Options& o, const MessageSize& m) {
  const int n = o.latency_samples / (m.bytes >= (1 << 20) ? 10 : 1);
  SharedSamples samples(n);
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto ping = take(client.create("ice-ping", message_stream(m)), "create");
    auto pong = open_when_created(client, "ice-pong");
    ready_and_wait(go_fd);
    for (int i = 0; i < n; ++i) {
      std::this_thread::sleep_for(kPingGap);
      auto t0 = Clock::now();
      shm_send(ping, m.bytes, static_cast<uint64_t>(i));
      auto reply = shm_receive(pong);
      uint64_t seq;
      std::memcpy(&seq, reply.data.data(), sizeof(seq));
      if (seq != static_cast<uint64_t>(i)) die("shmstream: pong out of order");
      samples.data()[i] = std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / 2;
    }
    check(ping.close(), "close");
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto pong = take(client.create("ice-pong", message_stream(m)), "create");
    auto ping = open_when_created(client, "ice-ping");
    ready_and_wait(go_fd);
    for (int i = 0; i < n; ++i) {
      auto msg = shm_receive(ping);
      uint64_t seq;
      std::memcpy(&seq, msg.data.data(), sizeof(seq));
      shm_send(pong, m.bytes, seq);
    }
    check(pong.close(), "close");
    return 0.0;
  });
  run_parties(bodies);
  remove_stream(o, "ice-ping");
  remove_stream(o, "ice-pong");
  return samples.take();
}

double shm_throughput(const Options& o, const MessageSize& m, uint64_t count) {
  const std::string name = "ice-data";
  int created[2];
  if (pipe(created) != 0) die("pipe");
  std::vector<std::function<double(int)>> bodies;
  bodies.push_back([&](int go_fd) {
    auto client = connect_client(o);
    auto producer = create_and_announce(client, name, created, 1, message_stream(m));
    ready_and_wait(go_fd);
    for (uint64_t i = 0; i < count; ++i) shm_send(producer, m.bytes, i);
    check(producer.close(), "close");
    return 0.0;
  });
  bodies.push_back([&](int go_fd) {
    await_created(created);
    auto client = connect_client(o);
    auto reader = take(client.open(name), "open");
    ready_and_wait(go_fd);
    uint64_t acc = 0;
    for (uint64_t i = 0; i < count; ++i) {
      auto msg = shm_receive(reader);
      acc = consume(msg.data.data(), msg.data.size(), acc);
      uint64_t seq;
      std::memcpy(&seq, msg.data.data(), sizeof(seq));
      if (seq != i || msg.data.size() != m.bytes) die("shmstream: message lost or out of order");
    }
    return static_cast<double>(acc & 0xffff);
  });
  RunResult r = run_parties(bodies, [&] {
    close(created[0]);
    close(created[1]);
  });
  remove_stream(o, name);
  return static_cast<double>(count) / r.seconds;
}

}  // namespace

void scenario_iceoryx(const Options& o) {
  std::string dir = std::filesystem::path(o.socket).parent_path().string();
  Roudi roudi(dir);
  int run = 0;
  for (const MessageSize& m : kSizes) {
    if (!roudi.alive()) die("iox-roudi exited; is another RouDi running?");
    std::string params = std::string("\"message\":") + std::to_string(m.bytes);
    // Latency: one ping-pong series each (thousands of samples), shmstream first.
    Percentiles shm =
        percentiles(dumped(o, std::string("msg_") + m.label + "_shmstream", shm_pingpong(o, m)));
    Percentiles iox = percentiles(
        dumped(o, std::string("msg_") + m.label + "_iceoryx", iox_pingpong(o, m, ++run)));
    std::string scenario = std::string("iceoryx_") + m.label;
    report(o,
           {scenario, "one_way_p50", "us", shm.p50 / 1e3, "iceoryx", iox.p50 / 1e3, false, params});
    report(o,
           {scenario, "one_way_p99", "us", shm.p99 / 1e3, "iceoryx", iox.p99 / 1e3, false, params});
    // Throughput: medians of alternating runs.
    uint64_t count = m.throughput_messages / (o.quick ? 10 : 1);
    auto rates = medians(o, {[&] { return shm_throughput(o, m, count); },
                             [&] { return iox_throughput(o, m, count, ++run); }});
    report(o, {scenario, "messages_per_s", "M/s", rates[0] / 1e6, "iceoryx", rates[1] / 1e6, true,
               params + ",\"messages\":" + std::to_string(count)});
  }
}

}  // namespace shmstream::bench

#else  // no iceoryx at build time

namespace shmstream::bench {

void scenario_iceoryx(const Options&) {
  std::fprintf(stderr,
               "shmstream-bench: built without iceoryx (install iceoryx and "
               "libiceoryx-posh-dev, then rebuild): scenario iceoryx skipped\n");
}

}  // namespace shmstream::bench

#endif
