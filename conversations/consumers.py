"""The websocket edge of a conversation: auth, ownership, frames, fan-out.

No business logic lives here: frames are validated by `frames`, actions are
done by `chat`, and replies stream from `generation`, which outlives this
socket. What the consumer owns is the exactness of what one tab sees: it
tracks how many characters of each streaming reply it has forwarded, so a
tab that connects mid-reply gets a snapshot and then every character once.
"""

from __future__ import annotations

import asyncio
import json
import uuid

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from . import chat
from .events import conversation_group, encode
from .frames import FrameError, parse_frame

SYNC_TIMEOUT_SECONDS = 3.0
NOT_FOUND_CLOSE_CODE = 4404


class ConversationConsumer(AsyncWebsocketConsumer):
    async def dispatch(self, message) -> None:
        """Channels' dispatch, without closing stale database connections first.

        Channels does that before every handler, through the one database
        thread: a thread hop for every delta, queued behind every transaction.
        Every database call here goes through database_sync_to_async, which
        closes stale connections in its own thread anyway.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.group = None
        self.forwarded: dict[str, int] = {}  # streaming message id -> characters sent
        self.pending_snapshot: dict | None = None  # waiting for the reply's text so far
        self.buffered: list[dict] = []
        self.sync_timer: asyncio.Task | None = None
        self.resyncing: dict[str, list[dict]] = {}  # message id -> deltas held until its sync
        if self.user is None or not self.user.is_authenticated:
            await self.close()  # refused before the handshake completes
            return
        try:
            self.conversation_id = uuid.UUID(self.scope["url_route"]["kwargs"]["conversation_id"])
            await chat.check_access(self.user, self.conversation_id)
        except (ValueError, chat.NotFound):
            await self.accept()
            await self._refuse()
            return
        # Join before reading the snapshot, so nothing falls between the two.
        self.group = conversation_group(self.conversation_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._send_snapshot()

    async def disconnect(self, code) -> None:
        if self.sync_timer is not None:
            self.sync_timer.cancel()
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None

    async def _refuse(self) -> None:
        await self._error("not_found", "No such conversation.")
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            self.group = None
        await self.close(code=NOT_FOUND_CLOSE_CODE)

    async def _error(self, code: str, message: str, message_id: str | None = None) -> None:
        frame = {"type": "error", "code": code, "message": message}
        if message_id:
            frame["message_id"] = message_id
        await self.send(text_data=encode(frame))

    # Client -> server

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.group is None:
            return
        if text_data is None:
            await self._error("invalid", "Only JSON text frames are accepted.")
            return
        try:
            frame = parse_frame(text_data)
        except FrameError as error:
            await self._error(error.code, error.message)
            return
        try:
            await self._dispatch(frame)
        except chat.Busy:
            await self._error("busy", "A reply is still streaming in this conversation: wait for it or stop it.")
        except chat.Invalid as error:
            await self._error("invalid", str(error))
        except chat.NotFound:
            try:
                await chat.check_access(self.user, self.conversation_id)
            except chat.NotFound:
                await self._refuse()
                return
            await self._error("not_found", "No such message in this conversation.")

    async def _dispatch(self, frame) -> None:
        if frame.type == "send":
            turn = await chat.send(self.user, self.conversation_id, frame.text, frame.parts, frame.client_id)
        elif frame.type == "edit":
            turn = await chat.edit(
                self.user, self.conversation_id, frame.message_id, frame.text, frame.parts, frame.client_id
            )
        elif frame.type == "regenerate":
            turn = await chat.regenerate(self.user, self.conversation_id, frame.message_id)
        else:
            await chat.stop(self.user, self.conversation_id)
            return
        if turn.duplicate:
            # Already stored: tell only this tab, which is retrying.
            for message in turn.announce:
                await self.send(text_data=encode({"type": "message", "message": message}))

    # Snapshot, then exact continuation

    async def _send_snapshot(self) -> None:
        try:
            snapshot = await chat.snapshot(self.user, self.conversation_id)
        except chat.NotFound:
            await self._refuse()
            return
        active = snapshot["active"]
        if active is None:
            await self.send(text_data=encode(snapshot))
            return
        # The row's text may be a second old: ask the reply itself for its text so far.
        self.pending_snapshot = snapshot
        self.buffered = []
        await chat.request_sync(self.conversation_id, self.channel_name)
        self.sync_timer = asyncio.create_task(self._sync_timeout())

    async def _sync_timeout(self) -> None:
        await asyncio.sleep(SYNC_TIMEOUT_SECONDS)
        await self.channel_layer.send(self.channel_name, {"type": "snapshot.timeout"})

    async def snapshot_timeout(self, event) -> None:
        """No reply answered (its process may have died): send what the database has."""
        if self.pending_snapshot is None:
            return
        self.pending_snapshot = None
        self.buffered = []
        self.sync_timer = None
        snapshot = await chat.snapshot(self.user, self.conversation_id)
        if snapshot["active"] is not None:
            self.forwarded[snapshot["active"]["id"]] = len(snapshot["active"]["content"])
        await self.send(text_data=encode(snapshot))

    async def reply_sync(self, event) -> None:
        message_id, text = event["message_id"], event["text"]
        pending = self.pending_snapshot
        if pending is not None and pending["active"]["id"] == message_id:
            pending["active"]["content"] = text  # the same dict as in pending["messages"]
            self.pending_snapshot = None
            if self.sync_timer is not None:
                self.sync_timer.cancel()
                self.sync_timer = None
            self.forwarded[message_id] = len(text)
            await self.send(text_data=encode(pending))
            buffered, self.buffered = self.buffered, []
            for queued in buffered:
                await self._handle(queued)
            return
        if message_id in self.resyncing:
            held = self.resyncing.pop(message_id)
            await self._catch_up(message_id, text)
            for queued in held:
                await self._delta(queued)

    # Server -> client (from the conversation's group)

    async def reply_frame(self, event) -> None:
        await self._handle(event)

    async def reply_delta(self, event) -> None:
        await self._handle(event)

    async def _handle(self, event) -> None:
        if self.pending_snapshot is not None:
            if event["type"] == "reply.frame" and event["message_id"] == self.pending_snapshot["active"]["id"] \
                    and not event["streaming"]:
                # The reply ended before it could answer: the database has it all now.
                self.pending_snapshot = None
                if self.sync_timer is not None:
                    self.sync_timer.cancel()
                    self.sync_timer = None
                await self._send_snapshot()
            else:
                self.buffered.append(event)
            return
        if event["type"] == "reply.frame":
            message_id = event["message_id"]
            if message_id is not None:
                if event["streaming"]:
                    self.forwarded.setdefault(message_id, 0)
                else:
                    if message_id in self.resyncing:
                        # It ended while this socket was catching up: the row is final.
                        del self.resyncing[message_id]
                        await self._catch_up(message_id, await chat.message_text(self.user, message_id))
                    self.forwarded.pop(message_id, None)
            await self.send(text_data=event["frame"])
            return
        await self._delta(event)

    async def _delta(self, event) -> None:
        message_id, offset, length = event["message_id"], event["offset"], event["length"]
        if message_id in self.resyncing:
            self.resyncing[message_id].append(event)
            return
        known = self.forwarded.get(message_id)
        if known is None and offset == 0:
            known = 0
        if known == offset:
            self.forwarded[message_id] = offset + length
            await self.send(text_data=event["frame"])
        elif known is not None and offset + length <= known:
            return  # already forwarded (it was in the snapshot)
        elif known is not None and offset < known:
            content = json.loads(event["frame"])["content"]
            await self._forward_delta(message_id, known, content[known - offset:])
        else:
            # A gap: this socket missed a delta (its queue overflowed). Ask for the text.
            self.resyncing[message_id] = [event]
            await chat.request_sync(self.conversation_id, self.channel_name)

    async def _catch_up(self, message_id: str, text: str) -> None:
        known = self.forwarded.get(message_id, 0)
        if len(text) > known:
            await self._forward_delta(message_id, known, text[known:])

    async def _forward_delta(self, message_id: str, offset: int, content: str) -> None:
        self.forwarded[message_id] = offset + len(content)
        await self.send(
            text_data=encode({"type": "delta", "message_id": message_id, "offset": offset, "content": content})
        )
