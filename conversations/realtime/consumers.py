"""The websocket edges: a conversation's socket, and a member's socket for pages without one.

No business logic lives here: frames are validated by `frames`, actions are
done by `chat.service`, replies stream from `chat.generation` (which
outlives any socket), and what one tab has seen is `delivery.Delivery`'s to
decide. A consumer authenticates, checks ownership, translates frames, and
carries out the delivery's commands.

Every socket of a member joins the member's group: it hears when one of the
member's conversations is created, changed or deleted (member frames, sent on
the socket it has), and is re-checked at once when the member signs out,
changes password or is deactivated.

Outages (docs/protocol.md): a socket that cannot reach the channel layer
(Redis down) when it connects or acts is closed with 1013, try again later.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _

from conversations.accounts.language import socket_language
from conversations.accounts.sessions import session_digest, signed_in_user_id, still_signed_in
from conversations.chat import errors
from conversations.chat import service as chat
from conversations.chat.broadcast import LAYER_ERRORS, conversation_group, encode, member_group
from conversations.chat.threads import in_thread
from conversations.models import Member
from conversations.outages import (
    DATABASE_OUTAGE_ERRORS,
    SOCKET_REASONS,
    TRY_AGAIN_LATER_CLOSE_CODE,
    warn_now_and_then,
)
from conversations.realtime.delivery import WATCH_SECONDS, Delivery
from conversations.realtime.frames import FrameError, parse_frame
from conversations.realtime.ratelimit import TokenBucket

log = logging.getLogger(__name__)

NOT_FOUND_CLOSE_CODE = 4404
SIGNED_OUT_CLOSE_CODE = 4401
# Frames whose session check runs in the turn's own worker thread (chat.service's `signed_in`).
TURN_FRAMES = frozenset({"send", "edit", "regenerate"})


def _log_unavailable(where: str) -> None:
    warn_now_and_then(
        "channel layer", "the channel layer is unavailable (%s): sockets are closed with %d, try again later",
        where, TRY_AGAIN_LATER_CLOSE_CODE,
    )


def _has_data_images(frame) -> bool:
    """Whether the frame carries images to store before its turn (they need the session checked first)."""
    return any(part.get("type") == "image_url" and str(part.get("image_url", {}).get("url", "")).startswith("data:")
               for part in getattr(frame, "parts", None) or ())


class MemberSocket(AsyncWebsocketConsumer):
    """What every socket of a member does: sign-in checks, the member group, member frames, outages."""

    groups_joined: list[str]

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except DATABASE_OUTAGE_ERRORS:
            # Postgres is down: leave the groups; outages.py closes the socket with 1013.
            if getattr(self, "groups_joined", None):
                await self._leave_groups()
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
        Every database call here goes through a worker thread, which closes
        stale connections in its own thread anyway.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    def _start(self) -> bool:
        """Read the handshake's member; False (refused before the handshake completes) if anonymous."""
        self.user = self.scope.get("user")
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        self.groups_joined = []
        self.conversation_id = None
        self.bucket = TokenBucket(settings.WS_FRAMES_PER_SECOND, settings.WS_FRAME_BURST, self._now())
        signed_in = self.user is not None and self.user.is_authenticated
        self.language = socket_language(self.user, self.scope.get("headers", ())) if signed_in else settings.LANGUAGE_CODE
        return signed_in

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    async def _join(self, *groups: str) -> bool:
        """Join the groups (the member's, then the conversation's); close with 1013 if Redis is down."""
        try:
            for group in groups:
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups_joined.append(group)
        except LAYER_ERRORS:
            await self.accept()
            await self._unavailable("joining a conversation")
            return False
        return True

    @property
    def listening(self) -> bool:
        return bool(self.groups_joined)

    async def disconnect(self, code) -> None:
        await self._leave_groups()

    async def _leave_groups(self) -> None:
        joined, self.groups_joined = self.groups_joined, []
        for name in joined:
            try:
                await self.channel_layer.group_discard(name, self.channel_name)
            except LAYER_ERRORS:
                pass  # Redis is down: its subscription went with it

    async def _unavailable(self, where: str) -> None:
        """The channel layer is down: closed with 1013; the page reconnects and gets a fresh snapshot."""
        _log_unavailable(where)
        await self._leave_groups()
        await self.close(code=TRY_AGAIN_LATER_CLOSE_CODE, reason=SOCKET_REASONS["channel layer"])

    async def _error(self, code: str, detail: dict | None = None, message_id: str | None = None,
                     text: str | None = None) -> None:
        with translation.override(self.language):
            frame = errors.frame(code, detail, message_id=message_id, text=None if text is None else str(text))
        await self.send(text_data=encode(frame))

    async def _refuse(self, reason: str | None = None) -> None:
        await self._error("not_found", {"reason": reason} if reason else None)
        await self._leave(NOT_FOUND_CLOSE_CODE)

    async def _signed_out(self) -> None:
        # not_found, as for a deactivated member: nothing here is this socket's any more;
        # the close code tells the page to sign in again.
        await self._error("not_found", {"reason": "signed_out"})
        await self._leave(SIGNED_OUT_CLOSE_CODE)

    async def _leave(self, code: int) -> None:
        """Stop hearing anything, then close."""
        await self._leave_groups()
        await self.close(code=code)

    async def _still_allowed(self, session_ended: bool = False) -> bool:
        """Whether this socket's session still signs its member in; if not, refuse and close."""
        if not session_ended and await still_signed_in(self.session_key, self.user):
            return True
        if self.conversation_id is not None:
            try:
                await chat.check_access(self.user, self.conversation_id)
            except chat.NotFound:
                await self._refuse()  # deactivated: 4404
                return False
        elif not await self._still_active():
            await self._refuse()
            return False
        await self._signed_out()
        return False

    async def _still_active(self) -> bool:
        return await in_thread(Member.objects.filter(pk=self.user.pk, is_active=True).exists)()

    async def _frame_allowed(self) -> bool:
        """The rate limit, then the session: False when the frame must be dropped."""
        # The handshake's sign-in may have ended since (signed out, password changed,
        # deactivated): ask the session store again, once per frame.
        return await self._within_rate() and await self._still_allowed()

    async def _within_rate(self) -> bool:
        """The rate limit: False when the frame must be dropped."""
        if not self.listening:
            return False
        if not self.bucket.take(self._now()):
            if self.bucket.refused_in_a_row == 1:
                await self._error("rate_limited", {"reason": "frames", "retry_after": self.bucket.retry_after()})
            return False
        return True

    def _signed_in(self) -> bool:
        """The session check, for a worker thread: the turn frames ask it inside their own thread hop."""
        return signed_in_user_id(self.session_key) == self.user.pk

    # From the member's group

    async def member_check(self, event) -> None:
        """The member signed out somewhere, or was saved (password, deactivation)."""
        if not self.listening:
            return
        ended = event.get("ended_session")
        await self._still_allowed(session_ended=ended is not None and ended == session_digest(self.session_key))

    async def member_frame(self, event) -> None:
        """One of the member's conversations was created, changed or deleted."""
        if not self.listening:
            return
        await self.send(text_data=event["frame"])
        if event.get("closes") and event.get("conversation_id") == str(self.conversation_id):
            await self._refuse("deleted")


class MemberConsumer(MemberSocket):
    """`/ws/member/`: the member frames alone, for a page with no conversation open (a new chat)."""

    async def connect(self) -> None:
        if not self._start():
            await self.close()
            return
        if await self._join(member_group(self.user.pk)):
            await self.accept()

    async def receive(self, text_data=None, bytes_data=None) -> None:
        if await self._frame_allowed():
            await self._error("invalid", text=_("This socket takes no frames."))


class ConversationConsumer(MemberSocket):
    """`/ws/conversations/<id>/`: a snapshot, then every change and every character of its replies."""

    async def connect(self) -> None:
        if not self._start():
            await self.close()  # refused before the handshake completes
            return
        self.delivery = Delivery(self._now())
        self.watch: asyncio.Task | None = None
        self.watch_sending = False
        try:
            self.conversation_id = uuid.UUID(self.scope["url_route"]["kwargs"]["conversation_id"])
            await chat.check_access(self.user, self.conversation_id)
        except (ValueError, chat.NotFound):
            await self.accept()
            await self._refuse()
            return
        # Join before reading the snapshot, so nothing falls between the two.
        if not await self._join(member_group(self.user.pk), conversation_group(self.conversation_id)):
            return
        await self.accept()
        await self._resnapshot()

    async def disconnect(self, code) -> None:
        if self.watch is not None and not self.watch_sending:
            self.watch.cancel()  # asleep: never cut a Redis call mid-flight
        await super().disconnect(code)

    # Client -> server

    async def receive(self, text_data=None, bytes_data=None) -> None:
        with translation.override(self.language):  # the words of what is refused: the member's language
            await self._receive(text_data)

    async def _receive(self, text_data) -> None:
        if not await self._within_rate():
            return
        frame = error = None
        if text_data is None:
            error = FrameError("invalid", _("Only JSON text frames are accepted."))
        else:
            try:
                frame = parse_frame(text_data)
            except FrameError as refused:
                error = refused
        # A turn checks the session in its own worker thread, unless it stores images first.
        checked_here = frame is None or frame.type not in TURN_FRAMES or _has_data_images(frame)
        if checked_here and not await self._still_allowed():
            return
        if error is not None:
            await self._error(error.code, error.detail, text=error.message)
            return
        try:
            await self._act(frame, signed_in=None if checked_here else self._signed_in)
        except chat.SignedOut:
            await self._still_allowed(session_ended=True)
        except chat.Busy as busy:
            await self._error("busy", {"reason": busy.reason} if busy.reason else None)
        except chat.Invalid as error:
            await self._error(error.code, error.detail, text=error.text or None)
        except chat.UsageLimit as limit:
            await self._error("usage_limit", limit.detail)
        except chat.NotFound:
            try:
                await chat.check_access(self.user, self.conversation_id)
            except chat.NotFound:
                await self._refuse()
                return
            await self._error("not_found", {"reason": "message"})
        except chat.Unavailable:
            # What was asked is stored and its reply runs; the sockets could not be told.
            await self._unavailable(f"a {frame.type} frame")

    async def _act(self, frame, signed_in) -> None:
        """Carry out a valid frame; `signed_in`, if given, is the session check its turn makes first."""
        if frame.type == "send":
            turn = await chat.send(self.user, self.conversation_id, frame.text, frame.parts, frame.client_id,
                                   signed_in=signed_in)
        elif frame.type == "edit":
            turn = await chat.edit(self.user, self.conversation_id, frame.message_id, frame.text, frame.parts,
                                   frame.client_id, signed_in=signed_in)
        elif frame.type == "regenerate":
            turn = await chat.regenerate(self.user, self.conversation_id, frame.message_id, frame.client_id,
                                         signed_in=signed_in)
        elif frame.type == "select":
            await chat.select(self.user, self.conversation_id, frame.message_id)
            return
        else:
            await chat.stop(self.user, self.conversation_id)
            return
        if turn.duplicate:
            # Already stored: tell only this tab, which is retrying.
            for message in turn.existing:
                await self.send(text_data=encode({"type": "message", "message": message}))

    # Server -> client: the delivery decides, the consumer carries out

    async def reply_frame(self, event) -> None:
        if self.listening:
            await self._carry_out(self.delivery.event(event, self._now()))

    reply_delta = reply_frame

    async def reply_sync(self, event) -> None:
        if self.listening:
            await self._carry_out(self.delivery.sync_answer(event["message_id"], event["text"], self._now(),
                                                            event.get("reasoning", "")))

    async def branch_changed(self, event) -> None:
        """Another branch is on screen (a `select` in any tab): start again from a snapshot."""
        if self.listening:
            await self._resnapshot()

    async def reply_check(self, event) -> None:
        """The watch found a reply overdue: ask the database what became of it."""
        if not self.listening:
            return
        try:
            snapshot = await chat.snapshot(self.user, self.conversation_id)
        except chat.NotFound:
            await self._refuse()
            return
        except DATABASE_OUTAGE_ERRORS:
            log.warning("checking on a reply for a socket failed (database unavailable); retrying later")
            return
        await self._carry_out(self.delivery.checked(snapshot, self._now()))

    async def _resnapshot(self) -> None:
        try:
            snapshot = await chat.snapshot(self.user, self.conversation_id)
        except chat.NotFound:  # deleted, or the member deactivated, meanwhile
            await self._refuse()
            return
        await self._carry_out(self.delivery.snapshot(snapshot, self._now()))

    async def _carry_out(self, commands: list[tuple]) -> None:
        for command in commands:
            if not self.listening:
                return
            kind = command[0]
            if kind == "send":
                await self.send(text_data=command[1])
            elif kind == "sync":
                try:
                    await chat.request_sync(self.conversation_id, self.channel_name)
                except chat.Unavailable:
                    await self._carry_out(self.delivery.sync_failed())
            elif kind == "snapshot":
                await self._resnapshot()
            elif kind == "catch_up":
                _kind, message_id, then = command
                try:
                    text, reasoning = await chat.message_text(self.user, message_id)
                except DATABASE_OUTAGE_ERRORS:
                    log.warning("a socket could not catch up on reply %s (database unavailable)", message_id)
                    text = reasoning = ""
                await self._carry_out([*self.delivery.caught_up(message_id, text, reasoning), ("send", then)])
            elif kind == "check":
                await self.reply_check({})
        self._ensure_watch()

    # Not left waiting: frames lost while Redis restarted

    def _ensure_watch(self) -> None:
        if (self.watch is None or self.watch.done()) and self.delivery.following():
            self.watch = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """While the tab follows a reply, tick the delivery through this socket's own channel,
        so a check runs in turn with every other event of the socket."""
        while self.listening and self.delivery.following():
            await asyncio.sleep(WATCH_SECONDS)
            if not self.listening or not self.delivery.tick(self._now()):
                continue
            self.watch_sending = True
            try:
                await self.channel_layer.send(self.channel_name, {"type": "reply.check"})
            except LAYER_ERRORS:
                pass  # the layer is down: nothing can be heard; try again at the next tick
            finally:
                self.watch_sending = False
