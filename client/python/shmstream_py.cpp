// shmstream._core: the C++ client for Python, with zero-copy reads (the package `shmstream`,
// client/python/shmstream/, re-exports it and adds asyncio iteration).
//
// Reader.next(), next_record() and view() return read-only memoryviews of the stream's own
// mapping: no byte is copied (numpy.frombuffer wraps them without copying either). Each view
// keeps the mapping alive; Reader.close() refuses (BufferError) while any is still referenced,
// as Python's mmap does, so a view can never point at unmapped memory.
//
// Blocking calls release the GIL. A Reader or Producer serves one thread at a time (others get
// RuntimeError), except Reader.close(), which any thread may call to wake a blocked read.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <optional>
#include <string>

#include "shmstream/client.hpp"

namespace py = pybind11;
using shmstream::ErrorCode;
using shmstream::Status;

namespace {

// shmstream.Error. A plain reference, never released: the module lives until the interpreter
// ends, and a py::object destroyed after that would crash at exit.
PyObject* error_class = nullptr;
// shmstream.Timeout: a subclass of shmstream.Error and of the built-in TimeoutError.
PyObject* timeout_class = nullptr;

// Runs `f` without the GIL (a call that may block). Python objects may not be touched in it.
template <typename F>
auto released(F f) {
  py::gil_scoped_release release;
  return f();
}

[[noreturn]] void raise(const Status& status) {
  PyObject* type = status.code() == ErrorCode::kTimeout ? timeout_class : error_class;
  py::object error = py::reinterpret_borrow<py::object>(type)(status.message());
  error.attr("code") = std::string(shmstream::error_code_name(status.code()));
  error.attr("offset") = status.offset();
  PyErr_SetObject(type, error.ptr());
  throw py::error_already_set();
}

[[noreturn]] void raise_buffer_error(const std::string& message) {
  PyErr_SetString(PyExc_BufferError, message.c_str());
  throw py::error_already_set();
}

template <typename T>
T unwrap(shmstream::Result<T> result) {
  if (!result.ok()) raise(result.status());
  return std::move(result.value());
}

void check(const Status& status) {
  if (!status.ok()) raise(status);
}

// None: forever; seconds otherwise (0 never waits).
shmstream::Timeout timeout_of(std::optional<double> seconds) {
  if (!seconds) return shmstream::kForever;
  if (!std::isfinite(*seconds) || *seconds > 1e9) return shmstream::kForever;
  return std::chrono::nanoseconds(static_cast<int64_t>(std::max(0.0, *seconds) * 1e9));
}

// One thread at a time per Producer or Reader.
class Busy {
 public:
  explicit Busy(std::mutex& mutex, const char* what) : lock_(mutex, std::try_to_lock) {
    if (!lock_.owns_lock()) {
      throw std::runtime_error(std::string(what) + " is in use by another thread");
    }
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

struct ReaderBox {
  explicit ReaderBox(shmstream::Reader r) : reader(std::move(r)) {}
  shmstream::Reader reader;
  std::mutex busy;
  std::atomic<int> views{0};     // live View objects (memoryviews of the mapping)
  bool closed = false;           // no more reads (under the GIL)
  bool release_pending = false;  // closed while views lived: the last one releases the mapping
};

// The exporter behind each memoryview: bytes of the mapping, and a hold on it.
struct View {
  View(std::shared_ptr<ReaderBox> b, const std::byte* d, size_t n)
      : box(std::move(b)), data(d), size(n) {
    box->views.fetch_add(1, std::memory_order_relaxed);  // counted only; no data published
  }
  ~View() {
    // Under the GIL, as `with reader:`'s exit that set release_pending.
    if (box->views.fetch_sub(1, std::memory_order_relaxed) == 1 && box->release_pending) {
      box->release_pending = false;
      box->reader.close();
    }
  }
  View(const View&) = delete;
  View& operator=(const View&) = delete;
  std::shared_ptr<ReaderBox> box;
  const std::byte* data;
  size_t size;
};

py::memoryview memoryview_of(const std::shared_ptr<ReaderBox>& box,
                             std::span<const std::byte> bytes) {
  py::object view = py::cast(std::make_unique<View>(box, bytes.data(), bytes.size()));
  return py::memoryview(view);
}

class PyReader {
 public:
  explicit PyReader(shmstream::Reader reader)
      : box_(std::make_shared<ReaderBox>(std::move(reader))) {}

  py::memoryview next(size_t max, std::optional<double> timeout) {
    Busy busy(box_->busy, "this Reader");
    auto& reader = open();
    auto got = unwrap(released([&] { return reader.next(max, timeout_of(timeout)); }));
    return memoryview_of(box_, got);
  }
  py::object next_record(std::optional<double> timeout) {
    Busy busy(box_->busy, "this Reader");
    auto& reader = open();
    auto record = unwrap(released([&] { return reader.next_record(timeout_of(timeout)); }));
    if (!record) return py::none();
    return memoryview_of(box_, record->data);
  }
  // What iteration yields: the next record (records streams) or chunk; None at the clean end.
  py::object next_item(std::optional<double> timeout) {
    if (records()) return next_record(timeout);
    py::memoryview chunk = next(1 << 20, timeout);
    if (py::len(chunk) == 0) return py::none();
    return chunk;
  }
  bool records() { return box_->reader.records(); }
  py::bytes read(size_t max, std::optional<double> timeout) {
    Busy busy(box_->busy, "this Reader");
    auto& reader = open();
    std::string out(max, '\0');
    size_t n = unwrap(released(
        [&] { return reader.read(std::as_writable_bytes(std::span(out)), timeout_of(timeout)); }));
    out.resize(n);
    return py::bytes(out);
  }
  py::memoryview view(uint64_t offset, size_t length) {
    Busy busy(box_->busy, "this Reader");
    return memoryview_of(box_, unwrap(open().view(offset, length)));
  }
  void wait(uint64_t length, std::optional<double> timeout) {
    Busy busy(box_->busy, "this Reader");
    auto& reader = open();
    check(released([&] { return reader.wait_for(length, timeout_of(timeout)); }));
  }
  void seek(int64_t offset, int whence) {
    Busy busy(box_->busy, "this Reader");
    if (whence < 0 || whence > 2) throw py::value_error("whence must be 0, 1 or 2");
    check(open().seek(offset, static_cast<shmstream::Whence>(whence)));
  }
  int fileno() {
    Busy busy(box_->busy, "this Reader");
    return unwrap(open().event_fd());
  }
  void commit(std::optional<uint64_t> offset, uint64_t token) {
    Busy busy(box_->busy, "this Reader");
    auto& reader = open();
    check(reader.commit(offset.value_or(reader.position()), token));
  }
  uint64_t cursor_position() { return box_->closed ? 0 : box_->reader.cursor_position(); }
  uint64_t cursor_token() { return box_->closed ? 0 : box_->reader.cursor_token(); }
  bool intact(uint64_t offset) { return !box_->closed && box_->reader.intact(offset); }
  uint64_t position() { return box_->closed ? 0 : box_->reader.position(); }
  uint64_t committed() { return box_->closed ? 0 : box_->reader.committed(); }
  uint64_t oldest() { return box_->closed ? 0 : box_->reader.oldest(); }
  std::string state() {
    return box_->closed ? "closed-reader" : shmstream::to_string(box_->reader.state());
  }
  const std::string& name() { return box_->reader.name(); }
  int live_views() const { return box_->views.load(std::memory_order_relaxed); }
  // Any thread. Refuses while memoryviews of the mapping are alive.
  void close() {
    int views = box_->views.load(std::memory_order_relaxed);
    if (views > 0) {
      PyErr_SetString(PyExc_BufferError,
                      (std::to_string(views) +
                       " memoryview(s) of the stream's mapping still exist: release them "
                       "(memoryview.release(), del) before closing the reader")
                          .c_str());
      throw py::error_already_set();
    }
    py::gil_scoped_release release;
    box_->reader.close();
    box_->closed = true;
  }
  // Leaving `with reader:`: no more reads from now on; the mapping goes with the last view (the
  // loop variable of a `for` inside the `with` may hold one), never from under it.
  void exit() {
    if (box_->closed) return;
    if (box_->views.load(std::memory_order_relaxed) == 0) {
      close();
      return;
    }
    box_->closed = true;
    box_->release_pending = true;
  }

 private:
  shmstream::Reader& open() {
    if (box_->closed) {
      raise(
          Status(ErrorCode::kInterrupted, "stream \"" + box_->reader.name() + "\": reader closed"));
    }
    return box_->reader;
  }
  std::shared_ptr<ReaderBox> box_;
};

// The bytes of a bytes-like object (valid while `info` lives).
std::span<const std::byte> bytes_of(const py::buffer_info& info) {
  return std::span(static_cast<const std::byte*>(info.ptr),
                   static_cast<size_t>(info.size * info.itemsize));
}

class PyProducer {
 public:
  explicit PyProducer(shmstream::Producer producer) : producer_(std::move(producer)) {}

  void append(py::buffer data, std::optional<double> timeout) {
    Busy busy(mutex_, "this Producer");
    py::buffer_info info = data.request();
    auto bytes = bytes_of(info);
    check(released([&] { return producer_.append(bytes, timeout_of(timeout)); }));
  }
  void publish(py::buffer data, std::optional<double> timeout) {
    Busy busy(mutex_, "this Producer");
    py::buffer_info info = data.request();
    auto bytes = bytes_of(info);
    check(released([&] { return producer_.publish(bytes, timeout_of(timeout)); }));
  }
  // Zero-copy writes: a writable memoryview at the end of the stream; fill it, then commit(n).
  // The view is revoked by commit() (and by the next reserve(), close() and abort()): after it,
  // nothing can write the committed bytes through it.
  py::memoryview reserve(size_t size, std::optional<double> timeout) {
    Busy busy(mutex_, "this Producer");
    revoke_room("reserve()");
    auto room = unwrap(released([&] { return producer_.reserve(size, timeout_of(timeout)); }));
    room_ = py::cast(std::make_unique<Room>(room.data(), room.size()));
    py::memoryview view(room_);
    room_view_ = view;
    return view;
  }
  void commit(size_t size) {
    Busy busy(mutex_, "this Producer");
    revoke_room("commit()");
    check(producer_.commit(size));
  }
  void close() {
    Busy busy(mutex_, "this Producer");
    revoke_room("close()");
    check(producer_.close());
  }
  void abort(const std::string& reason) {
    Busy busy(mutex_, "this Producer");
    revoke_room("abort()");
    check(producer_.abort(reason));
  }
  uint64_t committed() { return producer_.committed(); }
  const std::string& name() { return producer_.name(); }

  // The exporter behind reserve()'s memoryview: the reserved bytes, writable.
  struct Room {
    Room(std::byte* d, size_t n) : data(d), size(n) {}
    std::byte* data;
    size_t size;
  };

 private:
  // Releases reserve()'s memoryview; BufferError (nothing done) while anything derived from it
  // (a numpy array, a slice, its .obj) still holds the reserved bytes.
  void revoke_room(const char* what) {
    if (room_.is_none()) return;
    try {
      room_view_.attr("release")();
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_BufferError)) throw;
    }
    // Ours is the one reference left once every buffer on it was released.
    if (Py_REFCNT(room_.ptr()) > 1) {
      raise_buffer_error(std::string(what) +
                         ": the reserved bytes are still referenced (a numpy array, a slice or "
                         "another view of reserve()'s memoryview): release them first (del, "
                         ".release()), so that nothing can write them once committed");
    }
    room_ = py::none();
    room_view_ = py::none();
  }

  shmstream::Producer producer_;
  std::mutex mutex_;
  py::object room_ = py::none();       // the Room of the last reserve(), until revoked
  py::object room_view_ = py::none();  // and the memoryview handed out on it
};

// A connection to shmstreamd that close() (or leaving `with client:`) ends.
class PyClient {
 public:
  explicit PyClient(shmstream::Client client)
      : client_(std::make_unique<shmstream::Client>(std::move(client))) {}
  shmstream::Client& get() {
    if (!client_) raise(Status(ErrorCode::kInvalidArgument, "client closed"));
    return *client_;
  }
  // Readers and producers it made stay usable (they hold the connection they need).
  void close() {
    py::gil_scoped_release release;
    client_.reset();
  }
  bool closed() const { return !client_; }

 private:
  std::unique_ptr<shmstream::Client> client_;
};

// The library's own names (shmstream::parse_retention, parse_mode); a ValueError otherwise.
template <typename T>
T parsed_or_value_error(shmstream::Result<T> parsed) {
  if (!parsed.ok()) throw py::value_error(parsed.status().message());
  return std::move(parsed).value();
}

// A stream's description: exactly the keys and values of the CLI's --json (shmstream::to_json,
// the one place they are made), as a dict.
py::dict info_dict(const shmstream::StreamInfo& info) {
  // Not cached in a static: it would be released after the interpreter finalized.
  return py::module_::import("json").attr("loads")(shmstream::to_json(info)).cast<py::dict>();
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() =
      "shmstream's compiled core; use the package `shmstream`, which re-exports it: shared-memory "
      "streams, one producer appends, any number of readers in any processes read the same "
      "bytes zero-copy (memoryviews of a read-only mapping).";
  m.attr("__version__") = shmstream::version();
  error_class = PyErr_NewExceptionWithDoc(
      "shmstream.Error",
      "A shmstream failure. .code is its stable name ('not_found', 'timeout', "
      "'producer_died', ...); .offset, for 'overrun', the oldest offset still available.",
      nullptr, nullptr);
  if (error_class == nullptr) throw py::error_already_set();
  m.attr("Error") = py::reinterpret_borrow<py::object>(error_class);
  {
    py::tuple bases = py::make_tuple(py::reinterpret_borrow<py::object>(error_class),
                                     py::reinterpret_borrow<py::object>(PyExc_TimeoutError));
    timeout_class = PyErr_NewExceptionWithDoc(
        "shmstream.Timeout",
        "A wait's deadline passed (code 'timeout'): a shmstream.Error and a TimeoutError.",
        bases.ptr(), nullptr);
    if (timeout_class == nullptr) throw py::error_already_set();
    m.attr("Timeout") = py::reinterpret_borrow<py::object>(timeout_class);
  }

  py::class_<View>(m, "_View", py::buffer_protocol()).def_buffer([](View& v) {
    return py::buffer_info(const_cast<std::byte*>(v.data), 1,
                           py::format_descriptor<uint8_t>::format(), 1,
                           {static_cast<ssize_t>(v.size)}, {1}, /*readonly=*/true);
  });
  py::class_<PyProducer::Room>(m, "_Room", py::buffer_protocol())
      .def_buffer([](PyProducer::Room& r) {
        return py::buffer_info(r.data, 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<ssize_t>(r.size)}, {1}, /*readonly=*/false);
      });

  py::class_<PyReader>(
      m, "Reader",
      "Reads one stream at its own position (Client.open). Iterating yields records (records "
      "streams) or chunks as zero-copy memoryviews until the stream's clean end; `async for` "
      "does the same on asyncio. A context manager: leaving `with` ends the reads.")
      .def("next", &PyReader::next, py::arg("max") = 1 << 20, py::arg("timeout") = py::none(),
           "Waits for bytes at the position; returns a read-only memoryview of up to `max` of "
           "them (zero-copy) and moves past them. Empty at the clean end of the stream. "
           "`timeout`: seconds (None: forever); past it, shmstream.Timeout.")
      .def("next_record", &PyReader::next_record, py::arg("timeout") = py::none(),
           "Records streams: the next record as a zero-copy memoryview; None at the clean end.")
      .def("next_item", &PyReader::next_item, py::arg("timeout") = py::none(),
           "What iteration yields: the next record (records streams) or chunk; None at the "
           "clean end.")
      .def("read", &PyReader::read, py::arg("max") = 1 << 20, py::arg("timeout") = py::none(),
           "As next(), but copies into a new bytes object.")
      .def("view", &PyReader::view, py::arg("offset"), py::arg("length"),
           "Zero-copy memoryview of committed bytes [offset, offset + length); never waits.")
      .def("wait", &PyReader::wait, py::arg("length"), py::arg("timeout") = py::none(),
           "Waits until the committed length reaches `length`.")
      .def("seek", &PyReader::seek, py::arg("offset"), py::arg("whence") = 0,
           "Moves the position: from the start (whence 0), the position (1) or the committed "
           "end (2).")
      .def("fileno", &PyReader::fileno,
           "A descriptor that polls readable when next() need not wait (selectors, asyncio's "
           "add_reader). Read with timeout=0 until it raises Timeout; that re-arms it.")
      .def("commit", &PyReader::commit, py::arg("offset") = py::none(), py::arg("token") = 0,
           "Named cursors: commits `offset` (default: the position) with a 64-bit token of "
           "yours, stored atomically with it: record there how far your output got, and a "
           "restart can undo a half-done step (exactly once). See cursor_token.")
      .def("intact", &PyReader::intact, py::arg("offset"),
           "Rings: whether what was read at `offset` was not overwritten since (check after "
           "using a view).")
      .def("close", &PyReader::close,
           "Wakes blocked reads in other threads and releases the mapping. BufferError while "
           "memoryviews of it are alive.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyReader& r, py::args) { r.exit(); })
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__",
           [](PyReader& r) {
             py::object item = r.next_item(std::nullopt);
             if (item.is_none()) throw py::stop_iteration();
             return item;
           })
      .def_property_readonly("name", &PyReader::name)
      .def_property_readonly("records", &PyReader::records,
                             "Whether the stream carries framed records")
      .def_property_readonly("position", &PyReader::position)
      .def_property_readonly("committed", &PyReader::committed)
      .def_property_readonly("oldest", &PyReader::oldest)
      .def_property_readonly("state", &PyReader::state)
      .def_property_readonly("cursor_position", &PyReader::cursor_position,
                             "A named cursor's committed position (at open: where it started)")
      .def_property_readonly("cursor_token", &PyReader::cursor_token,
                             "A named cursor's committed token (see commit())")
      .def_property_readonly("live_views", &PyReader::live_views,
                             "memoryviews of the mapping still referenced");

  py::class_<PyProducer>(
      m, "Producer",
      "Appends to one stream (Client.create). A context manager: a clean exit closes the "
      "stream, an exception aborts it with the exception as the reason.")
      .def("append", &PyProducer::append, py::arg("data"), py::arg("timeout") = py::none(),
           "Copies a bytes-like object to the end of the stream and publishes it.")
      .def("publish", &PyProducer::publish, py::arg("data"), py::arg("timeout") = py::none(),
           "Records streams: publishes one record.")
      .def("reserve", &PyProducer::reserve, py::arg("size"), py::arg("timeout") = py::none(),
           "Zero-copy: a writable memoryview at the end of the stream; fill it, then "
           "commit(n). commit() revokes it (BufferError while a numpy array or slice of it "
           "still exists), so committed bytes cannot change.")
      .def("commit", &PyProducer::commit, py::arg("size"),
           "Publishes the first `size` bytes of the last reserve().")
      .def("close", &PyProducer::close, "Ends the stream cleanly.")
      .def("abort", &PyProducer::abort, py::arg("reason") = "",
           "Ends the stream as failed: readers get ProducerDied, whose message ends "
           "'aborted by its producer: REASON'.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__",
           [](PyProducer& p, py::object type, py::object value, py::object) {
             if (type.is_none()) {
               p.close();
             } else {
               // The exception is the reason: "ValueError: bad frame".
               std::string why = py::str(type.attr("__name__"));
               std::string text = py::str(value);
               p.abort(text.empty() ? why : why + ": " + text);
             }
           })
      .def_property_readonly("committed", &PyProducer::committed)
      .def_property_readonly("name", &PyProducer::name);

  py::class_<PyClient>(m, "Client",
                       "A connection to shmstreamd (started if none answers, unless "
                       "autostart=False). A context manager; close() ends the connection "
                       "(readers and producers it made go on).")
      .def(py::init([](std::optional<std::string> socket_path, bool autostart) {
             shmstream::ClientOptions options;
             if (socket_path) options.socket_path = *socket_path;
             options.autostart = autostart;
             return PyClient(unwrap(released([&] { return shmstream::Client::connect(options); })));
           }),
           py::arg("socket_path") = py::none(), py::arg("autostart") = true)
      .def(
          "create",
          [](PyClient& pc, const std::string& name, bool records, const std::string& retention,
             uint64_t ring_capacity, uint64_t max_bytes, const std::string& mode,
             double resume_grace, double stall_limit) {
            if (!(resume_grace >= 0 && resume_grace <= 86400)) {
              throw py::value_error("resume_grace must be 0 to 86400 seconds");
            }
            if (!(stall_limit >= 0 && stall_limit <= 86400)) {
              throw py::value_error("stall_limit must be 0 to 86400 seconds");
            }
            shmstream::CreateOptions options;
            options.records = records;
            options.retention = parsed_or_value_error(shmstream::parse_retention(retention));
            options.ring_capacity = ring_capacity;
            options.max_bytes = max_bytes;
            options.mode = parsed_or_value_error(shmstream::parse_mode(mode));
            options.resume_grace =
                std::chrono::milliseconds(static_cast<int64_t>(resume_grace * 1000));
            options.stall_limit =
                std::chrono::milliseconds(static_cast<int64_t>(stall_limit * 1000));
            auto& c = pc.get();
            return std::make_unique<PyProducer>(
                unwrap(released([&] { return c.create(name, options); })));
          },
          py::arg("name"), py::kw_only(), py::arg("records") = false,
          py::arg("retention") = "unbounded", py::arg("ring_capacity") = 0,
          py::arg("max_bytes") = 0, py::arg("mode") = "owner", py::arg("resume_grace") = 0.0,
          py::arg("stall_limit") = 0.0,
          "Creates stream `name`, you its producer. records: framed records; retention: "
          "'unbounded', 'drop-oldest' or 'block' (a ring of ring_capacity bytes); mode: "
          "'owner', 'group' or 'everyone'; resume_grace, stall_limit: seconds.")
      .def(
          "resume",
          [](PyClient& pc, const std::string& name) {
            auto& c = pc.get();
            return std::make_unique<PyProducer>(unwrap(released([&] { return c.resume(name); })));
          },
          py::arg("name"),
          "Take over a stream, created with a resume_grace, whose producer died: append at its "
          "committed end.")
      .def(
          "open",
          [](PyClient& pc, const std::string& name, std::optional<std::string> cursor,
             const std::string& commit) {
            shmstream::OpenOptions options;
            if (cursor) options.cursor = *cursor;
            if (commit == "explicit") {
              options.commit = shmstream::CommitMode::kExplicit;
            } else if (commit != "auto") {
              throw py::value_error("commit must be 'auto' or 'explicit', not '" + commit + "'");
            }
            auto& c = pc.get();
            return PyReader(unwrap(released([&] { return c.open(name, options); })));
          },
          py::arg("name"), py::kw_only(), py::arg("cursor") = py::none(),
          py::arg("commit") = "auto",
          "Opens stream `name` for reading from offset 0, or as named cursor `cursor` from "
          "where it committed. commit='auto' commits each record as the next is asked for (at "
          "least once); 'explicit' only on Reader.commit(offset, token) (exactly once with a "
          "token).")
      .def(
          "list",
          [](PyClient& pc) {
            auto& c = pc.get();
            auto streams = unwrap(released([&] { return c.list(); }));
            py::list out;
            for (const auto& s : streams) out.append(info_dict(s));
            return out;
          },
          "Every stream, as dicts with the keys of `shmstream ls --json`.")
      .def(
          "daemon_info",
          [](PyClient& pc) {
            auto& c = pc.get();
            auto info = unwrap(released([&] { return c.daemon_info(); }));
            return py::module_::import("json")
                .attr("loads")(shmstream::to_json(info))
                .cast<py::dict>();
          },
          "The daemon's identity, configuration, limits and holdings: the keys of "
          "`shmstream daemon status --json`.")
      .def(
          "stat",
          [](PyClient& pc, const std::string& name) {
            auto& c = pc.get();
            return info_dict(unwrap(released([&] { return c.stat(name); })));
          },
          py::arg("name"), "One stream, as a dict with the keys of `shmstream stat --json`.")
      .def(
          "remove",
          [](PyClient& pc, const std::string& name, bool force) {
            auto& c = pc.get();
            check(released([&] { return c.remove(name, force); }));
          },
          py::arg("name"), py::arg("force") = false,
          "Removes stream `name`; current readers may finish (force: they fail at once).")
      .def("close", &PyClient::close, "Ends the connection (idempotent).")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyClient& c, py::args) { c.close(); })
      .def_property_readonly("closed", &PyClient::closed)
      .def_property_readonly("socket_path", [](PyClient& c) { return c.get().socket_path(); });
}
