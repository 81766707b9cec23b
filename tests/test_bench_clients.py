"""The benchmark clients count a frame's bytes as it travelled, compressed or not (no timings here)."""

from __future__ import annotations

import json

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from bench.clients import Gaps, MeteredConnection, new_outcome

TEXT = json.dumps({"type": "delta", "content": "w1 " * 400})  # 1,230+ bytes: a 4-byte header, and compressible


async def sizes_seen(compression: str | None) -> tuple[list[int], list[int], bool]:
    """Payload and wire sizes of three messages from a server that does or does not compress."""
    async def handler(ws) -> None:
        for text in ("hi", TEXT, "x" * 70_000):
            await ws.send(text)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression="deflate", max_size=None,
                           create_connection=MeteredConnection) as ws:
            payloads, wire = [], []
            for _ in range(3):
                payloads.append(len(await ws.recv(decode=False)))
                wire.append(ws.meter.take_message())
            return payloads, wire, ws.compressed


async def test_uncompressed_frames_are_their_payload_and_header() -> None:
    payloads, wire, compressed = await sizes_seen(None)
    assert not compressed
    assert payloads == [2, len(TEXT), 70_000]
    assert wire == [2 + 2, len(TEXT) + 4, 70_000 + 10]


async def test_compressed_frames_are_counted_as_sent() -> None:
    payloads, wire, compressed = await sizes_seen("deflate")
    assert compressed
    assert payloads == [2, len(TEXT), 70_000]
    assert wire[1] < len(TEXT) / 5 and wire[2] < 1_000  # repetitive text deflates well


def test_the_longest_wait_is_between_frames_from_the_first_update_to_the_last() -> None:
    out = new_outcome()
    gaps = Gaps(out)
    gaps.frame(0.0, False)  # the reply's `message`: before the text, not counted
    gaps.frame(5.0, True)  # the first update: its wait is the time to first token, not a gap
    gaps.frame(5.02, True)
    gaps.frame(5.10, False)  # another frame among the updates: the 80 ms before it count
    gaps.frame(5.11, True)
    gaps.frame(9.0, False)  # `done`, after the last update: not while the text arrives
    assert round(out["gap_max"], 3) == 0.08
