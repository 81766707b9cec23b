"""Exact delivery to one tab (realtime/delivery.py), over every order of events.

A reply of three deltas is published as its start frame, the deltas and its
end frame. A tab joins at any point, reads its snapshot at any later point
(before the reply's row exists, while it streams with its text flushed or
not, or after it ended, written or not yet announced), and the reply answers
the tab's sync at any point after that, with or without a delta it has
counted but not yet sent. For every combination, the tab must assemble
exactly the reply's text: every delta starting where its text ends, the
reply started once and ended once.
"""

from __future__ import annotations

import itertools
import json

import pytest

from conversations.chat import broadcast
from conversations.realtime import delivery as delivery_module
from conversations.realtime.delivery import Delivery

REPLY = "r1"
QUESTION = "q1"
PIECES = ["ab", "cd", "ef"]
FINAL = "".join(PIECES)


def message(status: str, content: str) -> dict:
    return {"id": REPLY, "role": "assistant", "content": content, "status": status, "parent_id": QUESTION}


QUESTION_MESSAGE = {"id": QUESTION, "role": "user", "content": "?", "status": "complete", "parent_id": None}


def published_events() -> list[dict]:
    """The conversation's group, in the order the reply publishes: start, deltas, end."""
    events = [broadcast.frame_event({"type": "message", "message": message("streaming", "")},
                                    message_id=REPLY, streaming=True)]
    offset = 0
    for piece in PIECES:
        events.append(broadcast.delta_event(REPLY, offset, piece))
        offset += len(piece)
    done = {"type": "done", "message_id": REPLY, "status": "complete", "finish_reason": "stop", "usage": None}
    events.append(broadcast.frame_event(done, message_id=REPLY, length=len(FINAL)))
    return events


EVENTS = published_events()
END = len(EVENTS) - 1  # index of the end frame


class World:
    """What the database holds at an instant (the number of events published so far)."""

    def __init__(self, flushed: bool, final_before_end: bool):
        self.flushed = flushed  # the row holds the text published so far (else: nothing flushed yet)
        self.final_before_end = final_before_end  # at instant END the final write is done already

    def published_text(self, instant: int) -> str:
        return "".join(PIECES[: max(0, min(instant - 1, len(PIECES)))])

    def is_final(self, instant: int) -> bool:
        return instant > END or (instant == END and self.final_before_end)

    def snapshot(self, instant: int | None) -> dict:
        """`None`: before the turn committed (no reply row yet)."""
        if instant is None:
            return {"type": "snapshot", "conversation": {}, "messages": [], "active": None}
        if self.is_final(instant):
            reply = message("complete", FINAL)
        else:
            reply = message("streaming", self.published_text(instant) if self.flushed else "")
        active = reply if reply["status"] == "streaming" else None
        return {"type": "snapshot", "conversation": {}, "messages": [dict(QUESTION_MESSAGE), reply], "active": active}

    def stored_text(self, instant: int) -> str:
        return FINAL if self.is_final(instant) else (self.published_text(instant) if self.flushed else "")


class Tab:
    """The page: applies frames as chat.js does, insisting on exactness."""

    def __init__(self):
        self.text: str | None = None
        self.ended = 0
        self.snapshots = 0

    def frame(self, raw: str) -> None:
        frame = json.loads(raw)
        kind = frame["type"]
        if kind == "snapshot":
            self.snapshots += 1
            reply = next((m for m in frame["messages"] if m["id"] == REPLY), None)
            self.text = None if reply is None else reply["content"]
            if reply is not None and reply["status"] != "streaming":
                self.ended = 1
        elif kind == "message":
            assert frame["message"]["id"] == REPLY
            assert self.text is None, "the reply's start was replayed over text the tab has"
            self.text = frame["message"]["content"]
        elif kind == "delta":
            assert self.text is not None, "a delta before its reply"
            assert frame["offset"] == len(self.text), f"delta at {frame['offset']}, the tab has {len(self.text)}"
            self.text += frame["content"]
        elif kind == "done":
            assert self.text == FINAL, f"done over {self.text!r}"
            self.ended += 1
        else:
            raise AssertionError(f"unexpected frame {frame}")


def run(join: int, read: int | None, answer_at: int, counted_ahead: bool, world: World,
        events: list[dict] = EVENTS) -> Tab:
    tab, state = Tab(), Delivery(0.0)
    asked = False
    now = 0.0

    def carry_out(commands, instant):
        nonlocal asked
        for command in commands:
            if command[0] == "send":
                tab.frame(command[1])
            elif command[0] == "sync":
                asked = True
            elif command[0] == "snapshot":
                carry_out(state.snapshot(world.snapshot(instant), now), instant)
            elif command[0] == "catch_up":
                carry_out(state.caught_up(command[1], world.stored_text(instant)), instant)
                tab.frame(command[2])
            else:
                raise AssertionError(command)

    def answer(instant):
        nonlocal asked
        asked = False
        text = world.published_text(instant)
        if counted_ahead and 1 <= instant <= len(PIECES):  # the next delta counted, not yet sent
            text += PIECES[instant - 1]
        carry_out(state.sync_answer(REPLY, text, now), instant)

    carry_out(state.snapshot(world.snapshot(read), now), read if read is not None else 0)
    for index in range(join, len(events)):
        if asked and answer_at == index:
            answer(min(index, len(EVENTS)))
        carry_out(state.event(events[index], now), min(index + 1, len(EVENTS)))
    if asked and answer_at >= len(events):
        answer(len(EVENTS))
    return tab


def cases():
    for join in range(len(EVENTS) + 1):
        reads = [None] if join == 0 else []
        reads += list(range(max(join, 0), len(EVENTS) + 1))
        for read, flushed, final_before_end in itertools.product(reads, (False, True), (False, True)):
            start = read if read is not None else 0
            for answer_at in range(start, len(EVENTS) + 2):  # len+1: the reply never answers
                for counted_ahead in (False, True):
                    yield join, read, answer_at, counted_ahead, flushed, final_before_end


CASES = list(cases())


def test_there_are_many_orders():
    assert len(CASES) > 300


@pytest.mark.parametrize("case", CASES, ids=lambda c: "j{}-s{}-a{}-{}-{}-{}".format(*c))
def test_every_order_gives_the_tab_the_exact_reply(case):
    join, read, answer_at, counted_ahead, flushed, final_before_end = case
    world = World(flushed, final_before_end)
    tab = run(join, read, answer_at, counted_ahead, world)
    assert tab.text == FINAL, f"the tab ended with {tab.text!r}"
    assert tab.ended == 1, f"the reply ended {tab.ended} times on the tab"


@pytest.mark.parametrize("join", range(len(EVENTS)))
def test_an_end_announced_twice_ends_the_reply_once(join):
    """A retried announcement (Redis answered late) can repeat the end frame."""
    tab = run(join, join, join, False, World(True, False), events=[*EVENTS, EVENTS[END]])
    assert (tab.text, tab.ended) == (FINAL, 1)


def test_a_start_frame_the_snapshot_showed_is_not_replayed():
    """The defect: a tab joining as a turn starts read the streaming reply in its snapshot,
    then got the reply's `message` frame, which reset the text it had."""
    state = Delivery(0.0)
    world = World(flushed=True, final_before_end=False)
    commands = state.snapshot(world.snapshot(2), 0.0)
    assert commands == [("sync",)]
    assert state.event(EVENTS[0], 0.0) == []  # buffered while the snapshot waits
    sent = state.sync_answer(REPLY, "ab", 0.0)
    assert [json.loads(c[1])["type"] for c in sent] == ["snapshot"]  # the start frame was dropped


def test_a_question_the_snapshot_showed_is_not_sent_again():
    state = Delivery(0.0)
    snapshot = {"type": "snapshot", "conversation": {}, "messages": [QUESTION_MESSAGE], "active": None}
    state.snapshot(snapshot, 0.0)
    again = broadcast.frame_event({"type": "message", "message": QUESTION_MESSAGE})
    assert state.event(again, 0.0) == []
    other = dict(QUESTION_MESSAGE, id="q2")
    assert state.event(broadcast.frame_event({"type": "message", "message": other}), 0.0)[0][0] == "send"


def test_a_gap_asks_the_reply_and_fills_from_its_answer():
    state, tab = Delivery(0.0), Tab()
    for command in state.snapshot(World(True, False).snapshot(None), 0.0):
        tab.frame(command[1])
    tab.frame(state.event(EVENTS[0], 0.0)[0][1])
    tab.frame(state.event(EVENTS[1], 0.0)[0][1])
    assert state.event(EVENTS[3], 0.0) == [("sync",)]  # "cd" was lost
    for command in state.sync_answer(REPLY, "abcd", 0.0):
        tab.frame(command[1])
    assert tab.text == "abcdef"


def test_a_quiet_reply_is_looked_up_and_an_unanswered_sync_is_given_up():
    state = Delivery(0.0)
    state.snapshot(World(True, False).snapshot(2), 0.0)  # waits for the reply's answer
    assert state.tick(delivery_module.SYNC_TIMEOUT_SECONDS - 0.1) == []
    assert state.tick(delivery_module.SYNC_TIMEOUT_SECONDS) == [("check",)]
    # The reply's process died: the database's snapshot is sent as it is.
    sent = state.checked(World(True, False).snapshot(2), delivery_module.SYNC_TIMEOUT_SECONDS)
    assert [json.loads(c[1])["type"] for c in sent] == ["snapshot"]
    assert state.tick(delivery_module.SYNC_TIMEOUT_SECONDS + 1) == []
    assert state.tick(delivery_module.SYNC_TIMEOUT_SECONDS + delivery_module.STALL_SECONDS) == [("check",)]
