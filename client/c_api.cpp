// The C API (shmstream/shmstream.h): thin wrappers over the C++ client that turn Status into a
// code plus a thread-local message, and never let an exception out.
#include <chrono>
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "shmstream/client.hpp"
#include "shmstream/shmstream.h"

struct shmstream_client {
  shmstream::Client client;
};
struct shmstream_producer {
  shmstream::Producer producer;
};
struct shmstream_reader {
  shmstream::Reader reader;
};

namespace {

using shmstream::ErrorCode;
using shmstream::Status;

// The last failure on this thread, for shmstream_last_error().
thread_local std::string last_message;
thread_local uint64_t last_offset = 0;

static_assert(SHMSTREAM_LIMIT_EXCEEDED == static_cast<int>(ErrorCode::kLimitExceeded));
static_assert(SHMSTREAM_END_OF_STREAM == static_cast<int>(ErrorCode::kEndOfStream));
static_assert(SHMSTREAM_OVERRUN == static_cast<int>(ErrorCode::kOverrun));
static_assert(SHMSTREAM_RETENTION_BLOCK == static_cast<int>(shmstream::Retention::kBlock));
static_assert(SHMSTREAM_MODE_EVERYONE == static_cast<int>(shmstream::StreamMode::kEveryone));

int fail(const Status& status) {
  last_message = status.message();
  last_offset = status.offset();
  return static_cast<int>(status.code());
}

int report(const Status& status) { return status.ok() ? int{SHMSTREAM_OK} : fail(status); }

int invalid(const char* what) { return fail(Status(ErrorCode::kInvalidArgument, what)); }

shmstream::Timeout timeout_from(int64_t ns) {
  if (ns == SHMSTREAM_FOREVER) return shmstream::kForever;
  return std::chrono::nanoseconds(ns < 0 ? 0 : ns);
}

// Runs `body`, turning any exception into SHMSTREAM_INTERNAL (or the out-of-memory it was).
template <typename Body>
int guarded(Body body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return fail(Status(ErrorCode::kNoSpace, "out of memory"));
  } catch (const std::exception& e) {
    return fail(Status(ErrorCode::kInternal, e.what()));
  } catch (...) {
    return fail(Status(ErrorCode::kInternal, "unknown exception"));
  }
}

}  // namespace

extern "C" {

const char* shmstream_last_error(void) { return last_message.c_str(); }
uint64_t shmstream_last_error_offset(void) { return last_offset; }

const char* shmstream_code_name(int code) {
  if (code < 0 || code > SHMSTREAM_LIMIT_EXCEEDED) return "unknown";
  // error_code_name returns views of string literals: NUL-terminated.
  return shmstream::error_code_name(static_cast<ErrorCode>(code)).data();
}

int shmstream_connect(const char* socket_path, shmstream_client** out) {
  if (out == nullptr) return invalid("shmstream_connect: out is NULL");
  *out = nullptr;
  return guarded([&] {
    shmstream::ClientOptions options;
    if (socket_path != nullptr) options.socket_path = socket_path;
    auto client = shmstream::Client::connect(options);
    if (!client.ok()) return fail(client.status());
    *out = new shmstream_client{std::move(client.value())};
    return int{SHMSTREAM_OK};
  });
}

void shmstream_client_free(shmstream_client* client) { delete client; }

void shmstream_create_options_init(shmstream_create_options* options) {
  if (options == nullptr) return;
  std::memset(options, 0, sizeof *options);
  options->size = sizeof *options;
}

// A producer from create() or resume(), handed out as *out.
static int take_producer(shmstream::Result<shmstream::Producer> producer,
                         shmstream_producer** out) {
  if (!producer.ok()) return fail(producer.status());
  *out = new shmstream_producer{std::move(producer.value())};
  return int{SHMSTREAM_OK};
}

int shmstream_create(shmstream_client* client, const char* name,
                     const shmstream_create_options* options, shmstream_producer** out) {
  if (client == nullptr || name == nullptr || out == nullptr) {
    return invalid("shmstream_create: client, name and out must not be NULL");
  }
  *out = nullptr;
  shmstream::CreateOptions create;
  if (options != nullptr) {
    if (options->size < offsetof(shmstream_create_options, mode) + sizeof options->mode) {
      return invalid("shmstream_create: options not set up by shmstream_create_options_init");
    }
    if (options->retention < SHMSTREAM_RETENTION_UNBOUNDED ||
        options->retention > SHMSTREAM_RETENTION_BLOCK) {
      return invalid("shmstream_create: retention must be a SHMSTREAM_RETENTION_* value");
    }
    if (options->mode < SHMSTREAM_MODE_OWNER || options->mode > SHMSTREAM_MODE_EVERYONE) {
      return invalid("shmstream_create: mode must be a SHMSTREAM_MODE_* value");
    }
    create.max_bytes = options->max_bytes;
    create.retention = static_cast<shmstream::Retention>(options->retention);
    create.ring_capacity = options->ring_capacity;
    create.records = options->records != 0;
    create.max_readers = options->max_readers;
    create.mode = static_cast<shmstream::StreamMode>(options->mode);
    // Newer than the first version of the struct: read only if the caller's struct has it.
    if (options->size >=
        offsetof(shmstream_create_options, resume_grace_ms) + sizeof options->resume_grace_ms) {
      create.resume_grace = std::chrono::milliseconds(options->resume_grace_ms);
    }
    if (options->size >=
        offsetof(shmstream_create_options, stall_limit_ms) + sizeof options->stall_limit_ms) {
      create.stall_limit = std::chrono::milliseconds(options->stall_limit_ms);
    }
  }
  return guarded([&] { return take_producer(client->client.create(name, create), out); });
}

int shmstream_resume(shmstream_client* client, const char* name, shmstream_producer** out) {
  if (client == nullptr || name == nullptr || out == nullptr) {
    return invalid("shmstream_resume: client, name and out must not be NULL");
  }
  *out = nullptr;
  return guarded([&] { return take_producer(client->client.resume(name), out); });
}

int shmstream_append(shmstream_producer* producer, const void* data, size_t size,
                     int64_t timeout_ns) {
  if (producer == nullptr || (data == nullptr && size > 0)) {
    return invalid("shmstream_append: producer or data is NULL");
  }
  return guarded([&] {
    return report(producer->producer.append(std::span(static_cast<const std::byte*>(data), size),
                                            timeout_from(timeout_ns)));
  });
}

int shmstream_reserve(shmstream_producer* producer, size_t size, int64_t timeout_ns, void** out) {
  if (producer == nullptr || out == nullptr) {
    return invalid("shmstream_reserve: producer or out is NULL");
  }
  *out = nullptr;
  return guarded([&] {
    auto span = producer->producer.reserve(size, timeout_from(timeout_ns));
    if (!span.ok()) return fail(span.status());
    *out = span->data();
    return int{SHMSTREAM_OK};
  });
}

int shmstream_commit(shmstream_producer* producer, size_t size) {
  if (producer == nullptr) return invalid("shmstream_commit: producer is NULL");
  return guarded([&] { return report(producer->producer.commit(size)); });
}

int shmstream_publish(shmstream_producer* producer, const void* data, size_t size,
                      int64_t timeout_ns) {
  if (producer == nullptr || (data == nullptr && size > 0)) {
    return invalid("shmstream_publish: producer or data is NULL");
  }
  return guarded([&] {
    return report(producer->producer.publish(std::span(static_cast<const std::byte*>(data), size),
                                             timeout_from(timeout_ns)));
  });
}

const char* shmstream_version(void) { return shmstream::version(); }

int shmstream_producer_close(shmstream_producer* producer) {
  if (producer == nullptr) return invalid("shmstream_producer_close: producer is NULL");
  return guarded([&] { return report(producer->producer.close()); });
}

int shmstream_producer_abort(shmstream_producer* producer) {
  if (producer == nullptr) return invalid("shmstream_producer_abort: producer is NULL");
  return guarded([&] { return report(producer->producer.abort()); });
}

int shmstream_producer_abort_because(shmstream_producer* producer, const char* reason) {
  if (producer == nullptr) return invalid("shmstream_producer_abort_because: producer is NULL");
  return guarded([&] {
    return report(producer->producer.abort(std::string_view(reason == nullptr ? "" : reason)));
  });
}

uint64_t shmstream_producer_committed(const shmstream_producer* producer) {
  return producer == nullptr ? 0 : producer->producer.committed();
}

void shmstream_producer_free(shmstream_producer* producer) {
  // The destructor aborts an open stream and tells the daemon; it does not throw.
  delete producer;
}

int shmstream_open(shmstream_client* client, const char* name, const char* cursor,
                   shmstream_reader** out) {
  if (client == nullptr || name == nullptr || out == nullptr) {
    return invalid("shmstream_open: client, name and out must not be NULL");
  }
  *out = nullptr;
  return guarded([&] {
    shmstream::OpenOptions options;
    if (cursor != nullptr) options.cursor = cursor;
    auto reader = client->client.open(name, options);
    if (!reader.ok()) return fail(reader.status());
    *out = new shmstream_reader{std::move(reader.value())};
    return int{SHMSTREAM_OK};
  });
}

int shmstream_read(shmstream_reader* reader, void* buf, size_t size, int64_t timeout_ns,
                   size_t* n) {
  if (reader == nullptr || n == nullptr || (buf == nullptr && size > 0)) {
    return invalid("shmstream_read: reader, buf or n is NULL");
  }
  *n = 0;
  return guarded([&] {
    auto got = reader->reader.read(std::span(static_cast<std::byte*>(buf), size),
                                   timeout_from(timeout_ns));
    if (!got.ok()) return fail(got.status());
    *n = *got;
    return int{SHMSTREAM_OK};
  });
}

int shmstream_next(shmstream_reader* reader, size_t max, int64_t timeout_ns, const void** data,
                   size_t* size) {
  if (reader == nullptr || data == nullptr || size == nullptr) {
    return invalid("shmstream_next: reader, data or size is NULL");
  }
  *data = nullptr;
  *size = 0;
  return guarded([&] {
    auto view = reader->reader.next(max, timeout_from(timeout_ns));
    if (!view.ok()) return fail(view.status());
    *data = view->data();
    *size = view->size();
    return int{SHMSTREAM_OK};
  });
}

int shmstream_next_record(shmstream_reader* reader, int64_t timeout_ns, const void** data,
                          size_t* size, uint64_t* offset) {
  if (reader == nullptr || data == nullptr || size == nullptr) {
    return invalid("shmstream_next_record: reader, data or size is NULL");
  }
  *data = nullptr;
  *size = 0;
  return guarded([&] {
    auto record = reader->reader.next_record(timeout_from(timeout_ns));
    if (!record.ok()) return fail(record.status());
    if (!record->has_value()) {
      return fail(Status(ErrorCode::kEndOfStream,
                         "stream \"" + reader->reader.name() + "\": ended cleanly"));
    }
    *data = (*record)->data.data();
    *size = (*record)->data.size();
    if (offset != nullptr) *offset = (*record)->offset;
    return int{SHMSTREAM_OK};
  });
}

int shmstream_view(shmstream_reader* reader, uint64_t offset, size_t length, const void** data) {
  if (reader == nullptr || data == nullptr)
    return invalid("shmstream_view: reader or data is NULL");
  *data = nullptr;
  return guarded([&] {
    auto view = reader->reader.view(offset, length);
    if (!view.ok()) return fail(view.status());
    *data = view->data();
    return int{SHMSTREAM_OK};
  });
}

int shmstream_wait(shmstream_reader* reader, uint64_t length, int64_t timeout_ns) {
  if (reader == nullptr) return invalid("shmstream_wait: reader is NULL");
  return guarded([&] { return report(reader->reader.wait_for(length, timeout_from(timeout_ns))); });
}

int shmstream_seek(shmstream_reader* reader, int64_t offset, int whence) {
  if (reader == nullptr) return invalid("shmstream_seek: reader is NULL");
  if (whence < SHMSTREAM_SEEK_START || whence > SHMSTREAM_SEEK_END) {
    return invalid("shmstream_seek: whence must be a SHMSTREAM_SEEK_* value");
  }
  static constexpr shmstream::Whence kWhence[] = {
      shmstream::Whence::kStart, shmstream::Whence::kCurrent, shmstream::Whence::kEnd};
  return guarded([&] { return report(reader->reader.seek(offset, kWhence[whence])); });
}

uint64_t shmstream_position(const shmstream_reader* reader) {
  return reader == nullptr ? 0 : reader->reader.position();
}
uint64_t shmstream_committed(const shmstream_reader* reader) {
  return reader == nullptr ? 0 : reader->reader.committed();
}
uint64_t shmstream_oldest(const shmstream_reader* reader) {
  return reader == nullptr ? 0 : reader->reader.oldest();
}
int shmstream_intact(const shmstream_reader* reader, uint64_t offset) {
  return reader != nullptr && reader->reader.intact(offset) ? 1 : 0;
}

int shmstream_reader_fd(shmstream_reader* reader, int* fd) {
  if (reader == nullptr || fd == nullptr)
    return invalid("shmstream_reader_fd: reader or fd is NULL");
  *fd = -1;
  return guarded([&] {
    auto got = reader->reader.event_fd();
    if (!got.ok()) return fail(got.status());
    *fd = *got;
    return int{SHMSTREAM_OK};
  });
}

void shmstream_reader_close(shmstream_reader* reader) {
  if (reader != nullptr) reader->reader.close();
}
void shmstream_reader_free(shmstream_reader* reader) { delete reader; }

int shmstream_remove(shmstream_client* client, const char* name, int force) {
  if (client == nullptr || name == nullptr) {
    return invalid("shmstream_remove: client or name is NULL");
  }
  return guarded([&] { return report(client->client.remove(name, force != 0)); });
}

}  // extern "C"
