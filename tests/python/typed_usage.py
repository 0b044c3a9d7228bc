"""Checked by mypy --strict against the package's stubs (tests/CMakeLists.txt: Python.Stubs):
typical use must type-check, and the stubs must describe what the module has."""
import asyncio
from typing import Optional

import shmstream


def copy_records(client: shmstream.Client, name: str) -> list[bytes]:
    out: list[bytes] = []
    with client.open(name, cursor="typed", commit="explicit") as reader:
        for record in reader:
            out.append(bytes(record))
        reader.commit(reader.position, token=len(out))
        first: Optional[memoryview] = reader.next_record(timeout=0.5)
        if first is not None:
            out.append(first.tobytes())
    return out


async def follow(reader: shmstream.Reader) -> int:
    total = 0
    async for chunk in reader:
        total += len(chunk)
    return total


def produce(client: shmstream.Client) -> int:
    with client.create("typed", records=True, retention="drop-oldest", ring_capacity=1 << 20,
                       mode="group") as producer:
        room: memoryview = producer.reserve(4)
        room[:] = b"abcd"
        producer.commit(4)
        producer.publish(b"x")
        return producer.committed


def main() -> None:
    try:
        with shmstream.Client(autostart=False) as client:
            produce(client)
            copy_records(client, "typed")
            info = client.stat("typed")
            print(info["record_count"], client.daemon_info()["version"], shmstream.__version__)
            print(asyncio.run(follow(client.open("typed"))))
    except shmstream.Timeout as timeout:
        print("timed out", timeout.code)
    except shmstream.Error as error:
        print(error.code, error.offset)
