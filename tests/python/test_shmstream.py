"""The Python module: zero-copy reads (proven by address), interop with C++ producers and
readers, records, errors, the event-loop descriptor and mapping lifetime.

Run by ctest: PYTHONPATH holds the built module, SHMSTREAM_TEST_BIN the built executables.
Each test class starts a private shmstreamd on a fresh socket and stops it after.
"""
import asyncio
import hashlib
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

import shmstream

BIN = os.environ["SHMSTREAM_TEST_BIN"]


class Daemon:
    """A private shmstreamd, ready when the constructor returns."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="shmstream-test-py.")
        self.socket = os.path.join(self.dir, "ctl.sock")
        ready_r, ready_w = os.pipe()
        self.process = subprocess.Popen(
            [f"{BIN}/shmstreamd", "--foreground", "--socket", self.socket, "--persist-dir",
             os.path.join(self.dir, "persist"), "--log-level", "warn", "--ready-fd", str(ready_w)],
            pass_fds=[ready_w])
        os.close(ready_w)
        ready = os.read(ready_r, 1)  # one byte once serving; EOF if it died
        os.close(ready_r)
        if not ready:
            raise RuntimeError("shmstreamd did not start")
        self.env = dict(os.environ, SHMSTREAM_SOCKET=self.socket)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def mapping_of(address):
    """The /proc/self/maps line of the mapping that holds `address`, or None."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            span = line.split()[0]
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return line.strip()
    return None


def address_of(view):
    """The address of a bytes-like object's first byte, through numpy (no copy)."""
    array = np.frombuffer(view, dtype=np.uint8)
    return array.__array_interface__["data"][0]


class PythonModuleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = Daemon()
        cls.client = shmstream.Client(cls.daemon.socket, autostart=False)

    @classmethod
    def tearDownClass(cls):
        del cls.client
        cls.daemon.stop()

    def tearDown(self):
        for info in self.client.list():
            self.client.remove(info["name"], force=True)

    def test_reads_are_zero_copy_views_of_the_mapping(self):
        data = os.urandom(1 << 20)
        with self.client.create("zc") as producer:
            producer.append(data)
        stream_id = self.client.stat("zc")["stream_id"]
        reader = self.client.open("zc")
        view = reader.view(0, len(data))
        self.assertIsInstance(view, memoryview)
        self.assertTrue(view.readonly)
        self.assertEqual(view.tobytes(), data)
        address = address_of(view)
        line = mapping_of(address)
        # The bytes lie in a shared mapping of this stream's segment file, not in a Python
        # buffer: no byte was copied.
        self.assertIsNotNone(line)
        self.assertIn(f"{stream_id:016x}", line, line)
        self.assertIn("r--s", line, line)  # read-only, shared
        # numpy wraps the same memory again, without copying.
        array = np.frombuffer(view, dtype=np.uint8)
        self.assertEqual(array.__array_interface__["data"][0], address)
        self.assertFalse(array.flags.writeable)
        # next() returns views of the same mapping at the reader's position.
        first = reader.next(4096)
        self.assertEqual(address_of(first), address)
        second = reader.next(4096)
        self.assertEqual(address_of(second), address + 4096)
        self.assertEqual(reader.position, 8192)
        self.assertEqual(reader.live_views, 3)
        # The mapping outlives the reader's close only if no view is left.
        with self.assertRaises(BufferError):
            reader.close()
        del array
        view.release()
        first.release()
        second.release()
        self.assertEqual(reader.live_views, 0)
        reader.close()
        with self.assertRaises(shmstream.Error) as caught:
            reader.next()
        self.assertEqual(caught.exception.code, "interrupted")

    def test_info_dicts_carry_the_same_keys_and_values_as_the_cli_json(self):
        with self.client.create("keys", retention="drop-oldest", ring_capacity=65536,
                                mode="group") as producer:
            producer.append(b"x" * 1000)
            reader = self.client.open("keys", cursor="audit")
            cli = subprocess.run([f"{BIN}/shmstream", "stat", "keys", "--json"],
                                 env=self.daemon.env, capture_output=True, check=True, text=True)
            from_cli = json.loads(cli.stdout)
            from_python = self.client.stat("keys")
            # Measured at each call (the daemon samples writes between them): same keys, and
            # every other value the same.
            for moving in ("last_write_age_ms", "write_rate_bytes_per_s"):
                from_python.pop(moving)
                from_cli.pop(moving)
            self.assertEqual(from_python, from_cli)
            self.assertEqual(from_python["owner_uid"], os.getuid())
            self.assertEqual(from_python["retention"], "drop-oldest")
            self.assertEqual(from_python["mode"], "group")
            self.assertEqual(from_python["cursors"][0]["name"], "audit")
            self.assertEqual(from_python["cursors"][0]["lag"], 1000)
            del reader
        with self.assertRaises(ValueError) as refused:
            self.client.create("bad", retention="sideways")
        self.assertIn("drop-oldest", str(refused.exception))

    def test_reserve_writes_in_place(self):
        producer = self.client.create("reserve")
        room = producer.reserve(8)
        self.assertFalse(room.readonly)
        room[:] = b"in-place"
        producer.commit(8)
        producer.close()
        reader = self.client.open("reserve")
        self.assertEqual(bytes(reader.next()), b"in-place")

    def test_the_package_comes_from_the_virtual_environment(self):
        if not os.environ.get("SHMSTREAM_EXPECT_VENV"):
            self.skipTest("run from the build tree, not from a pip-installed venv")
        self.assertNotEqual(sys.prefix, sys.base_prefix, "not in a virtual environment")
        self.assertTrue(shmstream.__file__.startswith(sys.prefix), shmstream.__file__)
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(shmstream.__file__),
                                                    "py.typed")))

    def test_iterating_a_records_stream_yields_its_records(self):
        records = [b"a\nb", b"", b"x" * 5000, b"last"]
        with self.client.create("framed", records=True) as producer:
            for record in records:
                producer.publish(record)
        with self.client.open("framed") as reader:
            self.assertTrue(reader.records)
            got = [bytes(record) for record in reader]
        self.assertEqual(got, records)

    def test_leaving_with_while_a_loop_holds_a_view_raises_nothing(self):
        with self.client.create("held") as producer:
            producer.append(b"0123456789" * 1000)
        with self.client.open("held") as reader:
            for chunk in reader:
                last = chunk
        # The loop variable still holds a view: it stays valid, reads are over.
        self.assertEqual(bytes(last[:10]), b"0123456789")
        self.assertEqual(reader.live_views, 1)
        with self.assertRaises(shmstream.Error) as caught:
            reader.next(timeout=0)
        self.assertIn("reader closed", str(caught.exception))
        del last, chunk
        self.assertEqual(reader.live_views, 0)
        self.assertEqual(reader.state, "closed-reader")

    def test_a_reserved_view_cannot_write_once_committed(self):
        producer = self.client.create("revoked")
        room = producer.reserve(4)
        room[:] = b"abcd"
        producer.commit(4)
        with self.assertRaises(ValueError):  # a released memoryview
            room[0] = ord("z")
        # Something derived from the view (a numpy array) holds it: commit refuses, commits
        # nothing, and goes ahead once it is gone.
        array = np.frombuffer(producer.reserve(4), dtype=np.uint8)
        array[:] = 7
        with self.assertRaises(BufferError):
            producer.commit(4)
        self.assertEqual(producer.committed, 4)
        del array
        producer.commit(4)
        producer.close()
        reader = self.client.open("revoked")
        self.assertEqual(bytes(reader.read()), b"abcd\x07\x07\x07\x07")

    def test_async_for_reads_without_blocking_the_event_loop(self):
        producer = self.client.create("async", records=True)
        reader = self.client.open("async")

        async def main():
            got = []

            async def consume():
                async for record in reader:
                    got.append(bytes(record))

            task = asyncio.create_task(consume())
            # The loop stays ours while consume() waits for records: we produce them here.
            for i in range(50):
                await asyncio.sleep(0)
                producer.publish(b"record %d" % i)
            producer.close()
            await asyncio.wait_for(task, 30)
            return got

        self.assertEqual(asyncio.run(main()), [b"record %d" % i for i in range(50)])

    def test_timeouts_are_timeout_errors(self):
        producer = self.client.create("quiet")
        reader = self.client.open("quiet")
        with self.assertRaises(TimeoutError) as caught:
            reader.next(timeout=0.01)
        self.assertIsInstance(caught.exception, shmstream.Timeout)
        self.assertIsInstance(caught.exception, shmstream.Error)
        self.assertEqual(caught.exception.code, "timeout")
        producer.close()

    def test_a_client_is_a_context_manager(self):
        with shmstream.Client(self.daemon.socket, autostart=False) as client:
            producer = client.create("scoped")
            reader = client.open("scoped")
        self.assertTrue(client.closed)
        with self.assertRaises(shmstream.Error):
            client.list()
        # What it made goes on.
        producer.append(b"still")
        producer.close()
        self.assertEqual(bytes(reader.next()), b"still")
        client.close()  # again: nothing

    def test_explicit_commits_carry_a_token_exactly_once(self):
        with self.client.create("ledger", records=True) as producer:
            for i in range(5):
                producer.publish(b"entry %d" % i)
        reader = self.client.open("ledger", cursor="books", commit="explicit")
        self.assertEqual(bytes(reader.next_record()), b"entry 0")
        self.assertEqual(bytes(reader.next_record()), b"entry 1")
        reader.commit(reader.position, token=2)  # "two entries are in my ledger"
        self.assertEqual(bytes(reader.next_record()), b"entry 2")  # read, never committed
        reader.close()
        again = self.client.open("ledger", cursor="books", commit="explicit")
        self.assertEqual(again.cursor_token, 2)
        self.assertEqual(bytes(again.next_record()), b"entry 2")
        with self.assertRaises(ValueError):
            self.client.open("ledger", commit="sometimes")

    def test_python_reads_a_cpp_producer_live(self):
        # The C++ CLI writes 8 MiB; Python reads it while it is written, zero-copy.
        data = os.urandom(8 << 20)
        writer = subprocess.Popen([f"{BIN}/shmstream", "--no-autostart", "write", "from-cpp"],
                                  stdin=subprocess.PIPE, env=self.daemon.env)
        feeder = threading.Thread(target=lambda: (writer.stdin.write(data), writer.stdin.close()))
        feeder.start()
        reader = None
        deadline = time.monotonic() + 30
        while reader is None:  # the CLI creates the stream once started: ask until it did
            try:
                reader = self.client.open("from-cpp")
            except shmstream.Error as e:
                self.assertEqual(e.code, "not_found")
                self.assertIsNone(writer.poll(), "the CLI writer exited early")
                self.assertLess(time.monotonic(), deadline, "no stream after 30 s")
        digest = hashlib.sha256()
        for chunk in reader:  # memoryviews until the clean end
            digest.update(chunk)
        feeder.join()
        self.assertEqual(writer.wait(timeout=30), 0)
        self.assertEqual(digest.hexdigest(), hashlib.sha256(data).hexdigest())

    def test_version_and_daemon_info(self):
        version = subprocess.run([f"{BIN}/shmstream", "--version"], capture_output=True,
                                 text=True, timeout=30).stdout
        self.assertEqual(version, f"shmstream {shmstream.__version__}\n")
        info = self.client.daemon_info()
        self.assertEqual(info["version"], shmstream.__version__)
        self.assertEqual(info["pid"], self.daemon.process.pid)
        self.assertEqual(info["socket"], self.daemon.socket)
        self.assertIn("max_streams_per_user", info["limits"])

    def test_readers_learn_why_a_cli_writer_aborted(self):
        # The command's exit status and the signal that killed it, as `write -- CMD` records them.
        for name, command, code, text in [
                ("exit3", "echo x; exit 3", 3, "its command `sh` exited with status 3"),
                ("killed", "echo x; kill -9 $$", 137,
                 "its command `sh` was killed by signal 9 (SIGKILL)")]:
            writer = subprocess.run([f"{BIN}/shmstream", "--no-autostart", "write", name, "--",
                                     "sh", "-c", command], env=self.daemon.env, timeout=30,
                                    stderr=subprocess.DEVNULL)
            self.assertEqual(writer.returncode, code)
            reader = self.client.open(name)
            self.assertEqual(bytes(reader.next(timeout=5)), b"x\n")
            with self.assertRaises(shmstream.Error) as caught:
                reader.next(timeout=5)
            self.assertEqual(caught.exception.code, "producer_died")
            self.assertIn(f'stream "{name}": aborted: {text}', str(caught.exception))
            self.assertEqual(self.client.stat(name)["abort_reason"]["text"], text)
            reader.close()

    def wait_until(self, condition, what):
        deadline = time.monotonic() + 30
        while not condition():  # each poll a real query
            self.assertLess(time.monotonic(), deadline, what)

    def test_resume_takes_over_from_a_dead_producer(self):
        writer = subprocess.Popen([f"{BIN}/shmstream", "--no-autostart", "write", "graced",
                                   "--resume-grace", "60"],
                                  stdin=subprocess.PIPE, env=self.daemon.env)
        writer.stdin.write(b"abc")
        writer.stdin.flush()
        self.wait_until(lambda: any(i["name"] == "graced" and i["bytes"] == 3
                                    for i in self.client.list()), "no 3 bytes after 30 s")
        with self.assertRaises(shmstream.Error) as busy:
            self.client.resume("graced")
        self.assertEqual(busy.exception.code, "busy")
        writer.kill()
        writer.wait(timeout=30)
        self.wait_until(lambda: self.client.stat("graced")["awaiting_producer"],
                        "not awaiting a producer 30 s after the kill")
        self.assertEqual(self.client.stat("graced")["resume_grace_ms"], 60000)
        producer = self.client.resume("graced")
        self.assertEqual(producer.committed, 3)
        producer.append(b"def")
        producer.close()
        reader = self.client.open("graced")
        self.assertEqual(b"".join(bytes(chunk) for chunk in reader), b"abcdef")
        reader.close()

    def test_cpp_reads_a_python_producer(self):
        data = os.urandom(3 << 20) + b"end"
        with self.client.create("from-py") as producer:
            for i in range(0, len(data), 65536):
                producer.append(memoryview(data)[i:i + 65536])
        out = subprocess.run([f"{BIN}/shmstream", "--no-autostart", "cat", "from-py"],
                             env=self.daemon.env, capture_output=True, timeout=60, check=True)
        self.assertEqual(out.stdout, data)

    def test_records_and_numpy_payloads(self):
        with self.client.create("records", records=True) as producer:
            for i in range(100):
                producer.publish(np.arange(i, dtype=np.int32))
            producer.publish(b"")
        reader = self.client.open("records")
        for i in range(100):
            record = reader.next_record(timeout=5)
            self.assertTrue(np.array_equal(np.frombuffer(record, dtype=np.int32), np.arange(i)))
            record.release()
        self.assertEqual(len(reader.next_record()), 0)  # an empty record
        self.assertIsNone(reader.next_record())  # the clean end

    def test_errors_are_shmstream_errors_with_codes(self):
        with self.assertRaises(shmstream.Error) as caught:
            self.client.open("missing")
        self.assertEqual(caught.exception.code, "not_found")
        self.assertIn("missing", str(caught.exception))
        with self.assertRaises(shmstream.Error) as caught:
            self.client.create("bad/name")
        self.assertEqual(caught.exception.code, "invalid_argument")
        with self.assertRaises(ValueError):
            self.client.create("x", retention="sometimes")
        producer = self.client.create("slow")
        reader = self.client.open("slow")
        with self.assertRaises(shmstream.Error) as caught:
            reader.next(timeout=0.01)
        self.assertEqual(caught.exception.code, "timeout")
        # A producer that fails inside `with` aborts: readers learn it died.
        try:
            with producer:
                producer.append(b"abc")
                raise KeyError("boom")
        except KeyError:
            pass
        self.assertEqual(bytes(reader.next()), b"abc")
        with self.assertRaises(shmstream.Error) as caught:
            reader.next()
        self.assertEqual(caught.exception.code, "producer_died")
        # ... and why: the exception that left the `with`.
        self.assertIn("aborted by its producer: KeyError: 'boom'", str(caught.exception))
        reason = self.client.stat("slow")["abort_reason"]
        self.assertEqual(reason["kind"], "explicit")
        self.assertEqual(reason["message"], "KeyError: 'boom'")
        # An explicit abort, with a reason.
        explicit = self.client.create("explicit")
        explicit_reader = self.client.open("explicit")
        explicit.abort("camera unplugged")
        with self.assertRaises(shmstream.Error) as caught:
            explicit_reader.next(timeout=5)
        self.assertIn("aborted by its producer: camera unplugged", str(caught.exception))
        with self.client.create("fine") as fine:
            fine.append(b"x")
        self.assertIsNone(self.client.stat("fine")["abort_reason"])
        # An overrun names where to resume.
        ring = self.client.create("ring", retention="drop-oldest", ring_capacity=4096)
        lagging = self.client.open("ring")
        for _ in range(16):
            ring.append(b"r" * 1024)
        with self.assertRaises(shmstream.Error) as caught:
            lagging.next()
        self.assertEqual(caught.exception.code, "overrun")
        self.assertEqual(caught.exception.offset, lagging.oldest)

    def test_a_stall_limit_evicts_a_reader_that_holds_a_block_ring(self):
        producer = self.client.create("held", retention="block", ring_capacity=4096,
                                      stall_limit=0.2)
        self.assertEqual(self.client.stat("held")["stall_limit_ms"], 200)
        self.assertIsNone(self.client.stat("held")["producer_waits_for"])
        stuck = self.client.open("held")  # never reads
        for _ in range(3):
            producer.append(b"s" * 4096, timeout=20)  # waits, until the eviction
        with self.assertRaises(shmstream.Error) as caught:
            stuck.next(timeout=1)
        self.assertEqual(caught.exception.code, "overrun")
        self.assertIn("evicted", str(caught.exception))
        with self.assertRaises(ValueError):
            self.client.create("bad", retention="block", ring_capacity=4096, stall_limit=-1)

    def test_close_from_another_thread_wakes_a_blocked_read(self):
        producer = self.client.create("blocked")  # kept: dropping it would abort the stream
        reader = self.client.open("blocked")
        outcome = []

        def read():
            try:
                reader.next()
            except shmstream.Error as e:
                outcome.append(e.code)

        thread = threading.Thread(target=read)
        thread.start()  # blocks without the GIL, so this thread goes on
        reader.close()
        thread.join(timeout=30)
        self.assertFalse(thread.is_alive())
        self.assertEqual(outcome, ["interrupted"])
        producer.close()

    def test_fileno_works_with_selectors(self):
        producer = self.client.create("selected")
        readers = [self.client.open("selected") for _ in range(3)]
        selector = selectors.DefaultSelector()
        for reader in readers:
            selector.register(reader.fileno(), selectors.EVENT_READ, reader)
        self.assertEqual(selector.select(timeout=0), [])
        got = {id(r): b"" for r in readers}
        for i in range(50):
            producer.append(b"%d;" % i)
        producer.close()
        ended = 0
        while ended < len(readers):
            events = selector.select(timeout=30)
            self.assertTrue(events, "no reader became readable within 30 s")
            for key, _ in events:
                reader = key.data
                while True:
                    try:
                        chunk = reader.next(timeout=0)
                    except shmstream.Error as e:
                        self.assertEqual(e.code, "timeout")
                        break
                    if len(chunk) == 0:
                        selector.unregister(key.fd)
                        ended += 1
                        break
                    got[id(reader)] += bytes(chunk)
        want = b"".join(b"%d;" % i for i in range(50))
        self.assertEqual(list(got.values()), [want] * 3)


if __name__ == "__main__":
    unittest.main()
