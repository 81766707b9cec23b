"""The websocket edge of a conversation: auth, ownership, frames, fan-out.

No business logic lives here: frames are validated by `frames`, actions are
done by `chat`, and replies stream from `generation`, which outlives this
socket. What the consumer owns is the exactness of what one tab sees: it
tracks how many characters of each streaming reply it has forwarded, so a
tab that connects mid-reply gets a snapshot and then every character once.

Outages (docs/protocol.md): a socket that cannot reach the channel layer
(Redis down) when it connects or acts is closed with 1013, try again later.
A socket that stays open through a Redis restart has lost frames: a gap in a
reply's offsets makes it ask the reply for its text, an end frame whose
length is beyond what it forwarded makes it send the rest from the row, and a
reply it has heard nothing of for STALL_SECONDS (or a sync nobody answered)
makes it ask the database, then start again from a fresh snapshot if the
reply ended meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from conversations.accounts.sessions import session_digest, still_signed_in
from conversations.chat import service as chat
from conversations.chat.events import LAYER_ERRORS, conversation_group, encode, member_group
from conversations.outages import (
    DATABASE_OUTAGE_ERRORS,
    SOCKET_REASONS,
    TRY_AGAIN_LATER_CLOSE_CODE,
    warn_now_and_then,
)
from conversations.realtime.frames import FrameError, parse_frame

log = logging.getLogger(__name__)

SYNC_TIMEOUT_SECONDS = 3.0
STALL_SECONDS = 10.0  # nothing heard of a streaming reply this long: ask the database about it
NOT_FOUND_CLOSE_CODE = 4404
SIGNED_OUT_CLOSE_CODE = 4401


def _log_unavailable(where: str) -> None:
    warn_now_and_then(
        "channel layer", "the channel layer is unavailable (%s): sockets are closed with %d, try again later",
        where, TRY_AGAIN_LATER_CLOSE_CODE,
    )


class ConversationConsumer(AsyncWebsocketConsumer):
    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except DATABASE_OUTAGE_ERRORS:
            # Postgres is down: leave the groups; outages.py closes the socket with 1013.
            if getattr(self, "group", None) is not None or getattr(self, "member_group", None) is not None:
                await self._discard_group()
            raise
        except LAYER_ERRORS:
            if hasattr(self, "channel_name"):
                raise
            # Channels could not give this socket a channel: the layer is down. Answer
            # the handshake rather than drop it, so the page can tell and retry.
            _log_unavailable("a socket's channel")
            await self._handshake_unavailable(scope, receive, send)

    @staticmethod
    async def _handshake_unavailable(scope, receive, send) -> None:
        message = await receive()
        if message.get("type") != "websocket.connect":
            return
        user = scope.get("user")
        if user is None or not user.is_authenticated:
            await send({"type": "websocket.close"})  # refused, as ever for anonymous
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": TRY_AGAIN_LATER_CLOSE_CODE, "reason": SOCKET_REASONS["channel layer"]})

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
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.group = None
        self.member_group = None
        self.forwarded: dict[str, int] = {}  # streaming message id -> characters sent
        self.pending_snapshot: dict | None = None  # waiting for the reply's text so far
        self.buffered: list[dict] = []
        self.sync_timer: asyncio.Task | None = None
        self.resyncing: dict[str, list[dict]] = {}  # message id -> deltas held until its sync
        self.watch: asyncio.Task | None = None  # see _watch
        self.watch_sending = False
        self.heard_at = self.asked_at = asyncio.get_running_loop().time()
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
        try:
            await self.channel_layer.group_add(self.group, self.channel_name)
            self.member_group = member_group(self.user.pk)  # told when the member signs out
            await self.channel_layer.group_add(self.member_group, self.channel_name)
        except LAYER_ERRORS:
            await self.accept()
            await self._unavailable("joining a conversation")
            return
        await self.accept()
        await self._send_snapshot()

    async def disconnect(self, code) -> None:
        if self.sync_timer is not None:
            self.sync_timer.cancel()
        if self.watch is not None and not self.watch_sending:
            self.watch.cancel()  # asleep: never cut a Redis call mid-flight
        await self._discard_group()

    async def _discard_group(self) -> None:
        group, self.group = self.group, None
        member, self.member_group = self.member_group, None
        for name in (group, member):
            if name is not None:
                try:
                    await self.channel_layer.group_discard(name, self.channel_name)
                except LAYER_ERRORS:
                    pass  # Redis is down: its subscription went with it

    async def _unavailable(self, where: str) -> None:
        """The channel layer is down: this socket cannot hear its conversation.

        Closed with 1013 (try again later): the page reconnects and gets a
        fresh snapshot, which has whatever was stored meanwhile.
        """
        _log_unavailable(where)
        await self._discard_group()
        await self.close(code=TRY_AGAIN_LATER_CLOSE_CODE, reason=SOCKET_REASONS["channel layer"])

    async def _refuse(self) -> None:
        await self._error("not_found", "No such conversation.")
        await self._leave(NOT_FOUND_CLOSE_CODE)

    async def _signed_out(self) -> None:
        # not_found, as for a deactivated member: the conversation is no longer
        # this socket's; the close code tells the page to sign in again.
        await self._error("not_found", "You are signed out: sign in again to continue.")
        await self._leave(SIGNED_OUT_CLOSE_CODE)

    async def _leave(self, code: int) -> None:
        """Stop hearing the conversation, then close."""
        await self._discard_group()
        await self.close(code=code)

    async def _error(self, code: str, message: str, message_id: str | None = None) -> None:
        frame = {"type": "error", "code": code, "message": message}
        if message_id:
            frame["message_id"] = message_id
        await self.send(text_data=encode(frame))

    # Client -> server

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if self.group is None:
            return
        # The handshake's sign-in may have ended since (signed out, password
        # changed, deactivated): ask the session store again, once per frame.
        if not await self._still_allowed():
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

    async def _still_allowed(self, session_ended: bool = False) -> bool:
        """Whether this socket's session still signs its member in; if not, refuse and close."""
        if not session_ended and await still_signed_in(self.session_key, self.user):
            return True
        try:
            await chat.check_access(self.user, self.conversation_id)
        except chat.NotFound:
            await self._refuse()  # deactivated: 4404
        else:
            await self._signed_out()
        return False

    async def member_check(self, event) -> None:
        """The member signed out somewhere, or was saved (password, deactivation)."""
        if self.group is None:
            return
        ended = event.get("ended_session")
        await self._still_allowed(session_ended=ended is not None and ended == session_digest(self.session_key))

    async def _dispatch(self, frame) -> None:
        try:
            await self._act(frame)
        except chat.Unavailable:
            # What was asked is stored and its reply runs; the sockets could not be told.
            await self._unavailable(f"a {frame.type} frame")

    async def _act(self, frame) -> None:
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
        self.asked_at = asyncio.get_running_loop().time()
        self._ensure_watch()
        try:
            await chat.request_sync(self.conversation_id, self.channel_name)
        except chat.Unavailable:
            # Nobody can answer now: send the row's text; what follows it comes by resync.
            self.pending_snapshot = None
            self.forwarded[active["id"]] = len(active["content"])
            await self.send(text_data=encode(snapshot))
            return
        self.sync_timer = asyncio.create_task(self._sync_timeout())

    async def _sync_timeout(self) -> None:
        await asyncio.sleep(SYNC_TIMEOUT_SECONDS)
        try:
            await self.channel_layer.send(self.channel_name, {"type": "snapshot.timeout"})
        except LAYER_ERRORS:
            pass  # the layer is down; _watch asks again once it is back

    async def snapshot_timeout(self, event) -> None:
        """No reply answered (its process may have died): send what the database has."""
        if self.pending_snapshot is None or self.group is None:
            return
        self.pending_snapshot = None
        self.buffered = []
        self.sync_timer = None
        try:
            snapshot = await chat.snapshot(self.user, self.conversation_id)
        except chat.NotFound:  # deleted, or the member deactivated, while it waited
            await self._refuse()
            return
        if snapshot["active"] is not None:
            self.forwarded[snapshot["active"]["id"]] = len(snapshot["active"]["content"])
        await self.send(text_data=encode(snapshot))

    async def reply_sync(self, event) -> None:
        if self.group is None:
            return  # refused: nothing more for this socket
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

    # Events already on their way when the socket left its group are dropped.

    async def reply_frame(self, event) -> None:
        if self.group is not None:
            await self._handle(event)

    async def reply_delta(self, event) -> None:
        if self.group is not None:
            await self._handle(event)

    async def _handle(self, event) -> None:
        self.heard_at = asyncio.get_running_loop().time()
        self._ensure_watch()
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
                    known = self.forwarded.get(message_id)
                    if message_id in self.resyncing or (known is not None and known < event.get("length", known)):
                        # It ended while this socket was catching up, or after deltas this
                        # socket never got (Redis restarted): the row is final, send the rest.
                        self.resyncing.pop(message_id, None)
                        try:
                            await self._catch_up(message_id, await chat.message_text(self.user, message_id))
                        except DATABASE_OUTAGE_ERRORS:
                            log.warning("a socket could not catch up on reply %s (database unavailable)", message_id)
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
        if known is None:
            # A reply this socket never heard start: its `message` frame was lost (Redis
            # was down). Deltas cannot rebuild that: start again from a snapshot.
            await self._resnapshot()
            return
        if known == offset:
            self.forwarded[message_id] = offset + length
            await self.send(text_data=event["frame"])
        elif offset + length <= known:
            return  # already forwarded (it was in the snapshot)
        elif offset < known:
            content = json.loads(event["frame"])["content"]
            await self._forward_delta(message_id, known, content[known - offset:])
        else:
            # A gap: this socket missed a delta (its queue overflowed, or Redis restarted).
            # Ask the reply for its text; _watch asks again if no answer comes.
            self.resyncing[message_id] = [event]
            self.asked_at = asyncio.get_running_loop().time()
            try:
                await chat.request_sync(self.conversation_id, self.channel_name)
            except chat.Unavailable:
                pass

    async def _resnapshot(self) -> None:
        """Start again from the database: this socket missed what it cannot rebuild."""
        self.forwarded.clear()
        self.resyncing.clear()
        await self._send_snapshot()

    # Not left waiting: frames lost while Redis restarted

    def _following(self) -> bool:
        return bool(self.forwarded or self.resyncing) or self.pending_snapshot is not None

    def _ensure_watch(self) -> None:
        if (self.watch is None or self.watch.done()) and self._following():
            self.watch = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """While this socket follows a streaming reply, see that it hears its end.

        A reply heard of for STALL_SECONDS, or a sync request unanswered for
        SYNC_TIMEOUT_SECONDS, sends this socket a `reply.check` through its own
        channel, so the check runs in turn with every other event of the socket.
        """
        loop = asyncio.get_running_loop()
        while self.group is not None and self._following():
            await asyncio.sleep(min(STALL_SECONDS, SYNC_TIMEOUT_SECONDS) / 2)
            now = loop.time()
            waiting = (self.resyncing or self.pending_snapshot is not None) \
                and now - self.asked_at >= SYNC_TIMEOUT_SECONDS
            if self.group is None or not (waiting or now - self.heard_at >= STALL_SECONDS):
                continue
            self.heard_at = self.asked_at = now
            self.watch_sending = True
            try:
                await self.channel_layer.send(self.channel_name, {"type": "reply.check"})
            except LAYER_ERRORS:
                pass  # the layer is down: nothing can be heard; try again at the next tick
            finally:
                self.watch_sending = False

    async def reply_check(self, event) -> None:
        """Ask the database what became of the reply this socket is waiting on."""
        if self.group is None:
            return
        if self.pending_snapshot is not None:
            await self.snapshot_timeout(event)
            return
        followed = set(self.forwarded) | set(self.resyncing)
        if not followed:
            return
        try:
            snapshot = await chat.snapshot(self.user, self.conversation_id)
        except chat.NotFound:
            await self._refuse()
            return
        except DATABASE_OUTAGE_ERRORS:
            log.warning("checking on a reply for a socket failed (database unavailable); retrying later")
            return
        active = snapshot["active"]
        if followed - {active["id"] if active else None}:
            # A reply it follows ended (or its process died) while its frames were lost.
            await self._resnapshot()
            return
        # Still streaming, quiet or unheard: ask it for its text (answered if it lives).
        self.resyncing.setdefault(active["id"], [])
        self.asked_at = asyncio.get_running_loop().time()
        try:
            await chat.request_sync(self.conversation_id, self.channel_name)
        except chat.Unavailable:
            pass

    async def _catch_up(self, message_id: str, text: str) -> None:
        known = self.forwarded.get(message_id, 0)
        if len(text) > known:
            await self._forward_delta(message_id, known, text[known:])

    async def _forward_delta(self, message_id: str, offset: int, content: str) -> None:
        self.forwarded[message_id] = offset + len(content)
        await self.send(
            text_data=encode({"type": "delta", "message_id": message_id, "offset": offset, "content": content})
        )
