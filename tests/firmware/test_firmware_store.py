"""Store-and-forward queue: order, PUBACK-only removal, persistence across reboots, drop-oldest."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fw_testkit import MemoryFlash

from firmware.hal import FileFlash
from firmware.store import MessageStore


def _flashes(tmp_path: Path) -> dict[str, object]:
    return {"memory": MemoryFlash(), "file": FileFlash(tmp_path / "flash")}


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_survives_reboot_in_order_and_acks_remove(tmp_path: Path, kind: str) -> None:
    flash = _flashes(tmp_path)[kind]

    async def scenario() -> None:
        store = MessageStore(flash, 10)
        await store.load()
        seqs = [await store.put(f"t/{i}", f'{{"n":{i}}}'.encode()) for i in range(5)]
        assert seqs == [0, 1, 2, 3, 4]
        await store.ack(1)  # out-of-order PUBACK
        # reboot: a new store object on the same flash
        store2 = MessageStore(flash, 10)
        await store2.load()
        assert len(store2) == 4
        cursor, got = -1, []
        while (seq := store2.seq_after(cursor)) is not None:
            msg = await store2.get(seq)
            got.append((msg.topic, msg.payload))
            cursor = seq
        assert got == [(f"t/{i}", f'{{"n":{i}}}'.encode()) for i in (0, 2, 3, 4)]
        assert await store2.put("t/5", b"{}") == 5  # numbering continues after the newest survivor

    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_full_queue_drops_oldest_and_counts(tmp_path: Path, kind: str) -> None:
    flash = _flashes(tmp_path)[kind]

    async def scenario() -> None:
        store = MessageStore(flash, 3)
        await store.load()
        for i in range(7):
            await store.put("t", str(i).encode())
        assert len(store) == 3 and store.dropped == 4
        payloads = [(await store.get(s)).payload for s in (store.seq_after(-1), 5, 6)]
        assert payloads == [b"4", b"5", b"6"]
        assert len(await flash.list("queue/")) == 3
        # a smaller limit after a reboot trims the oldest too
        smaller = MessageStore(flash, 2)
        await smaller.load()
        assert smaller.dropped == 1 and (await smaller.get(smaller.seq_after(-1))).payload == b"5"

    asyncio.run(scenario())


def test_corrupt_and_stray_entries_cost_one_message(tmp_path: Path) -> None:
    flash = FileFlash(tmp_path / "flash")

    async def scenario() -> None:
        store = MessageStore(flash, 10)
        await store.load()
        for i in range(3):
            await store.put("t", str(i).encode())
        blob = await flash.read("queue/000000000001")
        await flash.write("queue/000000000001", blob[:-1] + b"X")  # bit rot
        (tmp_path / "flash" / "queue" / "000000000009.tmp").write_bytes(b"torn")  # write cut by power loss
        (tmp_path / "flash" / "queue" / "junk").write_bytes(b"?")
        store2 = MessageStore(flash, 10)
        await store2.load()
        assert len(store2) == 3
        got = [await store2.get(s) for s in (0, 1, 2)]
        assert [m.payload if m else None for m in got] == [b"0", None, b"2"]
        assert store2.corrupt == 1 and len(store2) == 2

    asyncio.run(scenario())


def test_wait_after_wakes_on_put() -> None:
    async def scenario() -> None:
        store = MessageStore(MemoryFlash(), 10)
        await store.load()
        waiter = asyncio.create_task(store.wait_after(-1))
        await asyncio.sleep(0)
        assert not waiter.done()
        await store.put("t", b"x")
        assert await asyncio.wait_for(waiter, 1) == 0

    asyncio.run(scenario())
