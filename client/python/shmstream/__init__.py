"""shmstream: shared-memory streams.

One producer appends bytes (or framed records) to a named stream; any number of readers, in any
processes, read the same bytes zero-copy (memoryviews of a read-only mapping), each at its own
offset, waiting for what is not committed yet::

    import shmstream
    with shmstream.Client() as client:
        with client.create("cam0") as producer:   # closes on exit, aborts on an exception
            producer.append(b"frame")
        with client.open("cam0") as reader:
            for chunk in reader:                  # records streams: one record each
                process(chunk)

``async for chunk in reader`` does the same on asyncio without blocking the event loop.
Failures raise :class:`Error` (``.code`` names the kind); timeouts raise :class:`Timeout`,
also a :class:`TimeoutError`.
"""

import asyncio as _asyncio

from ._core import Client, Error, Producer, Reader, Timeout, __version__

__all__ = ["Client", "Error", "Producer", "Reader", "Timeout", "__version__"]


class _AsyncItems:
    """``async for`` over a Reader: what iterating yields, waiting on the event loop."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def __aiter__(self) -> "_AsyncItems":
        return self

    async def __anext__(self) -> memoryview:
        while True:
            try:
                item = self._reader.next_item(timeout=0)
            except Timeout:
                await self._readable()
                continue
            if item is None:
                raise StopAsyncIteration
            return item

    async def _readable(self) -> None:
        # The reader's descriptor polls readable once a read need not wait (Reader.fileno()).
        loop = _asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self._reader.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)


def _aiter(self: Reader) -> _AsyncItems:
    return _AsyncItems(self)


Reader.__aiter__ = _aiter  # type: ignore[attr-defined]
