"""Load generators, run by bench.relay in a process of their own.

They run in their own process so that their CPU never counts as the app's and
the app's event loop never waits on them. The driver writes a spec (a JSON
file whose path is the only argument) and then talks over stdin and stdout,
one line each way:

    stdout  {"event": "ready", ...}     every socket is open and has its snapshot
    stdin   go                          start the replies now
    stdout  {"event": "result", ...}    every reply ended (or the deadline passed)
    stdin   close                       close the sockets and exit (EOF works too)

Modes:
  relay   one websocket per conversation on the app; sends one message each and
          assembles the reply from its frames, checking offsets and the text.
  direct  the same replies read straight from the upstream with httpx (the baseline).
  watch   two sockets per conversation on two app processes; sends on the first
          and records when each delta reaches each socket.
  idle    open the sockets, read the snapshots, then only wait.

Times are `time.time()`, so they compare with the fake upstream's `received_at`
and `first_chunk_at`.

Each socket offers permessage-deflate, as browsers do, and counts what it reads
two ways: `bytes`, the payloads as the page gets them (decompressed), and
`wire_bytes`, the frames as they travelled (header + payload, compressed when the
server agreed to compress). Without compression the two differ by the headers.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import deque

import httpx
from httpx_sse import aconnect_sse
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions import Extension
from websockets.frames import Frame, Opcode

# The last time any socket or stream received something (None: nothing yet). A phase
# whose frames stopped arriving (an overloaded app can lose a `done`) ends `stall`
# seconds after the last one; before the first frame only the deadline applies, since
# an app may legitimately take long to answer many sends at once.
activity = {"at": None}

# Handshakes in flight at once: daphne's listen backlog is small, and a dropped SYN
# costs a 1 s retransmit that would show up as a slow phase.
CONNECT_CONCURRENCY = 32
OPEN_TIMEOUT = 30.0


def emit(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


async def read_command() -> str:
    """The driver's next line ("" at EOF), read off the event loop."""
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip()


def new_outcome() -> dict:
    """One reply's outcome. `gap_max`: the longest interval between consecutive frames from the
    first text update to the last (see Gaps); None for a reply of one update or none."""
    return {
        "send_at": None, "first_at": None, "done_at": None,
        "deltas": 0, "frames": 0, "bytes": 0, "wire_bytes": 0, "delta_bytes": 0, "gap_max": None,
        "text_len": 0, "ok": False, "error": None,
    }


class Gaps:
    """The longest interval between two consecutive frames while the text arrives, i.e. from
    the first text update to the last: what a reader waits at most to see the text move."""

    def __init__(self, out: dict):
        self.out = out
        self.last: float | None = None  # the previous frame's arrival, once the text has begun
        self.since_text = 0.0  # the longest gap since the last text update: counts if more text follows

    def frame(self, now: float, is_text: bool) -> None:
        if self.last is not None:
            self.since_text = max(self.since_text, now - self.last)
            if is_text:
                if self.out["gap_max"] is None or self.since_text > self.out["gap_max"]:
                    self.out["gap_max"] = self.since_text
                self.since_text = 0.0
        if self.last is not None or is_text:
            self.last = now


# Sockets

_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class WireMeter(Extension):
    """Sizes of the frames as they arrived, before any decompression.

    Not negotiated: it is put last in the connection's extensions, and websockets
    decodes a received frame through them in reverse order, so it sees the frame
    as read from the socket. Server frames are unmasked: the header is 2 bytes,
    plus 2 or 8 for a longer payload.
    """

    name = "x-bench-wire-meter"

    def __init__(self) -> None:
        self.frames: deque[tuple[bool, int, bool]] = deque()  # (data frame?, wire bytes, fin)

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        length = len(frame.data)
        header = 2 + (0 if length < 126 else 2 if length < 65536 else 8)
        self.frames.append((frame.opcode in _DATA, header + length, frame.fin))
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame

    def take_message(self) -> int:
        """Wire bytes of the next message received (its frames and any control frame among them).

        The connection parses ahead of recv(): frames are taken in order, one message per recv().
        """
        total = 0
        while self.frames:
            is_data, size, fin = self.frames.popleft()
            total += size
            if is_data and fin:
                break
        return total


class MeteredConnection(ClientConnection):
    """A client connection with a WireMeter installed as the handshake's extensions are settled,
    so that even a frame arriving in the same read as the handshake's answer is measured."""

    def __init__(self, protocol, **kwargs) -> None:
        super().__init__(protocol, **kwargs)
        self.meter = WireMeter()
        negotiate = protocol.process_extensions
        protocol.process_extensions = lambda headers: [*negotiate(headers), self.meter]

    @property
    def compressed(self) -> bool:
        return any(e.name == "permessage-deflate" for e in self.protocol.extensions)


async def open_socket(endpoint: dict, conv: dict, gate: asyncio.Semaphore) -> MeteredConnection:
    """A signed-in, same-origin tab on one conversation, past its snapshot."""
    async with gate:
        ws = await connect(
            f"{endpoint['ws']}/ws/conversations/{conv['id']}/",
            origin=endpoint["origin"],
            additional_headers={"Cookie": f"sessionid={conv['session']}"},
            open_timeout=OPEN_TIMEOUT,
            ping_interval=None,  # no keepalive traffic inside the measurements
            compression="deflate",  # offered as browsers offer it; used only if the server agrees
            max_size=None,
            create_connection=MeteredConnection,
        )
        try:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(decode=False), OPEN_TIMEOUT))
            ws.meter.take_message()
        except BaseException:
            await ws.close()
            raise
        if snapshot.get("type") != "snapshot":
            await ws.close()
            raise RuntimeError(f"expected a snapshot, got {snapshot.get('type')!r}")
        return ws


async def open_all(endpoint: dict, convs: list[dict]) -> tuple[list[MeteredConnection | None], list[str]]:
    """Open one socket per conversation; a failure leaves None and an error string."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    results = await asyncio.gather(*(open_socket(endpoint, c, gate) for c in convs), return_exceptions=True)
    sockets, errors = [], []
    for result in results:
        if isinstance(result, BaseException):
            sockets.append(None)
            errors.append(f"connect: {type(result).__name__}: {result}")
        else:
            sockets.append(result)
    return sockets, errors


async def close_all(sockets) -> None:
    await asyncio.gather(*(ws.close() for ws in sockets if ws is not None), return_exceptions=True)


async def follow_reply(ws: MeteredConnection, expected: str, out: dict, times: dict | None = None) -> None:
    """Read frames until the reply ends, filling `out`; `times` gets offset -> arrival.

    The reply is the first assistant message announced as streaming; each of its
    deltas must start exactly where the text so far ends.
    """
    reply_id, parts, length = None, [], 0
    gaps = Gaps(out)
    out["compressed"] = ws.compressed
    while True:
        data = await ws.recv(decode=False)
        now = time.time()
        activity["at"] = time.monotonic()
        out["frames"] += 1
        out["bytes"] += len(data)
        out["wire_bytes"] += ws.meter.take_message()
        frame = json.loads(data)
        kind = frame.get("type")
        gaps.frame(now, kind == "delta" and frame["message_id"] == reply_id)
        if kind == "message" and reply_id is None and frame["message"]["status"] == "streaming":
            reply_id = frame["message"]["id"]
        elif kind == "delta" and frame["message_id"] == reply_id:
            if out["first_at"] is None:
                out["first_at"] = now
            if frame["offset"] != length and out["error"] is None:
                out["error"] = f"delta at offset {frame['offset']}, expected {length}"
            if times is not None:
                times[frame["offset"]] = now
            out["deltas"] += 1
            out["delta_bytes"] += len(data)
            parts.append(frame["content"])
            length += len(frame["content"])
        elif kind in ("done", "error") and (frame.get("message_id") == reply_id or not frame.get("message_id")):
            out["done_at"] = now
            text = "".join(parts)
            out["text_len"] = len(text)
            if kind == "error":
                out["error"] = out["error"] or f"error frame: {frame.get('code')}"
            elif text != expected:
                out["error"] = out["error"] or f"text differs ({len(text)} chars, expected {len(expected)})"
            out["ok"] = out["error"] is None
            return


async def send_and_follow(ws: MeteredConnection, conv: dict, out: dict, times: dict | None = None) -> None:
    frame = json.dumps({"type": "send", "content": conv["content"], "client_id": str(uuid.uuid4())})
    out["send_at"] = time.time()
    await ws.send(frame)
    await follow_reply(ws, conv["expected"], out, times)


async def run_bounded(coros: list, outs: list[dict], deadline: float, stall: float) -> None:
    """Run every reply at once, until all end, the deadline passes or nothing arrives for `stall` s.

    A reply that fails or is still running then is marked in its outcome, not fatal.
    """
    tasks = [asyncio.create_task(c) for c in coros]
    if not tasks:
        return
    started, activity["at"] = time.monotonic(), None
    pending = set(tasks)
    while pending:
        now = time.monotonic()
        if now - started > deadline or (activity["at"] is not None and now - activity["at"] > stall):
            break
        _done, pending = await asyncio.wait(pending, timeout=0.5)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task, out in zip(tasks, outs):
        if task in pending:
            out["error"] = out["error"] or "no end within the time limit"
        elif task.exception() is not None:
            out["error"] = out["error"] or f"{type(task.exception()).__name__}: {task.exception()}"
        out["ok"] = out["ok"] and out["error"] is None


def failed(error: str) -> dict:
    out = new_outcome()
    out["error"] = error
    return out


# Modes


async def run_relay(spec: dict) -> None:
    convs = spec["convs"]
    sockets, errors = await open_all(spec["app"], convs)
    emit("ready", connected=sum(ws is not None for ws in sockets), errors=errors[:5])
    outs, coros = [], []
    if await read_command() == "go":
        cpu = time.process_time()
        for ws, conv in zip(sockets, convs):
            out = new_outcome() if ws is not None else failed("not connected")
            outs.append(out)
            if ws is not None:
                coros.append(send_and_follow(ws, conv, out))
        await run_bounded(coros, [o for o, ws in zip(outs, sockets) if ws is not None], spec["deadline"], spec["stall"])
        emit("result", replies=outs, client_cpu=time.process_time() - cpu)
        await read_command()
    await close_all(sockets)


async def direct_reply(client: httpx.AsyncClient, upstream: dict, conv: dict, out: dict) -> None:
    """One reply read from the upstream the way the app reads it (httpx-sse, json per event)."""
    body = {
        "model": upstream["model"],
        "messages": [{"role": "user", "content": conv["content"]}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {upstream['api_key']}"}
    parts = []
    gaps = Gaps(out)
    out["send_at"] = time.time()
    async with aconnect_sse(client, "POST", upstream["url"], json=body, headers=headers) as source:
        if source.response.status_code != 200:
            out["error"] = f"HTTP {source.response.status_code}"
            return
        async for event in source.aiter_sse():
            if event.data == "[DONE]":
                break
            activity["at"] = time.monotonic()
            choices = json.loads(event.data).get("choices")
            content = choices[0]["delta"].get("content") if choices else None
            now = time.time()
            gaps.frame(now, bool(content))
            if content:
                if out["first_at"] is None:
                    out["first_at"] = now
                out["deltas"] += 1
                parts.append(content)
    out["done_at"] = time.time()
    text = "".join(parts)
    out["text_len"] = len(text)
    if text != conv["expected"]:
        out["error"] = f"text differs ({len(text)} chars, expected {len(conv['expected'])})"
    out["ok"] = out["error"] is None


async def first_use(upstream: dict) -> None:
    url = upstream["url"].rsplit("/chat/completions", 1)[0] + "/models"
    async with httpx.AsyncClient(timeout=10.0) as client:
        await client.get(url, headers={"Authorization": f"Bearer {upstream['api_key']}"})


async def run_direct(spec: dict) -> None:
    convs = spec["convs"]
    limits = httpx.Limits(max_connections=len(convs) + 10, max_keepalive_connections=len(convs) + 10)
    timeout = httpx.Timeout(10.0, read=60.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        # Connections open at `go`, not before: with a hundred idle connections in its pool,
        # httpcore polls every one of them for each request it assigns (encode/httpcore#924),
        # which made a warm pool ~20x slower than fresh connects to hand out 100 at once.
        # One request on a client of its own loads what httpx imports on first use (tens of ms).
        await first_use(spec["upstream"])
        emit("ready", connected=len(convs), errors=[])
        if await read_command() == "go":
            cpu = time.process_time()
            outs = [new_outcome() for _ in convs]
            coros = [direct_reply(client, spec["upstream"], conv, out) for conv, out in zip(convs, outs)]
            await run_bounded(coros, outs, spec["deadline"], spec["stall"])
            emit("result", replies=outs, client_cpu=time.process_time() - cpu)
            await read_command()


async def run_watch(spec: dict) -> None:
    """Sender on the generating process, watcher on the other; latency per matched delta."""
    convs = spec["convs"]
    senders, errors_a = await open_all(spec["app"], convs)
    watchers, errors_b = await open_all(spec["other"], convs)
    emit("ready", connected=sum(ws is not None for ws in senders + watchers), errors=(errors_a + errors_b)[:5])
    if await read_command() == "go":
        pairs = [(a, b, c) for a, b, c in zip(senders, watchers, convs) if a is not None and b is not None]
        outs, coros, timings = [], [], []
        for a, b, conv in pairs:
            times_a, times_b, out_a, out_b = {}, {}, new_outcome(), new_outcome()
            timings.append((times_a, times_b))
            outs += [out_a, out_b]
            coros += [send_and_follow(a, conv, out_a, times_a), follow_reply(b, conv["expected"], out_b, times_b)]
        await run_bounded(coros, outs, spec["deadline"], spec["stall"])
        latencies, unmatched = [], 0
        for times_a, times_b in timings:
            for offset, at in times_a.items():
                if offset in times_b:
                    latencies.append(round(times_b[offset] - at, 6))
                else:
                    unmatched += 1
        emit("result", replies=outs[0::2], watchers=outs[1::2], latencies=latencies, unmatched=unmatched)
        await read_command()
    await close_all(senders + watchers)


async def run_idle(spec: dict) -> None:
    sockets, errors = await open_all(spec["app"], spec["convs"])
    emit("ready", connected=sum(ws is not None for ws in sockets), errors=errors[:5])
    await read_command()  # the driver measures while this process only waits
    await close_all(sockets)
    emit("closed")


MODES = {"relay": run_relay, "direct": run_direct, "watch": run_watch, "idle": run_idle}


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    asyncio.run(MODES[spec["mode"]](spec))


if __name__ == "__main__":
    main()
