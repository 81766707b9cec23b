"""Validation of what members send: websocket frames and message content.

Every client frame is checked here before anything else sees it; a bad one
raises FrameError with the protocol's error code and a human message.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _

from conversations.chat import images
from conversations.upstream import netguard

IMAGE_DETAILS = ("auto", "low", "high")
MAX_PARTS = 20


class FrameError(Exception):
    def __init__(self, code: str, message: str, detail: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail


@dataclass
class ClientFrame:
    type: str
    text: str = ""
    parts: list | None = None
    client_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None


def parse_frame(raw: str) -> ClientFrame:
    limit = settings.WS_MAX_FRAME_BYTES
    if len(raw) > limit or len(raw.encode("utf-8", "surrogatepass")) > limit:
        raise FrameError("too_large", _("Frames are limited to %(limit)s bytes.") % {"limit": limit}, {"reason": "frame", "limit": limit})
    try:
        data = json.loads(raw)
    except ValueError:
        raise FrameError("invalid", _("Frames must be JSON objects.")) from None
    if not isinstance(data, dict):
        raise FrameError("invalid", _("Frames must be JSON objects."))
    kind = data.get("type")
    if kind == "send":
        text, parts = clean_content(data.get("content"))
        return ClientFrame("send", text, parts, client_id=_uuid(data, "client_id"))
    if kind == "stop":
        return ClientFrame("stop")
    if kind == "select":
        message_id = _uuid(data, "message_id")
        if message_id is None:
            raise FrameError("invalid", _("select needs the message_id of the branch to show."))
        return ClientFrame("select", message_id=message_id)
    if kind == "regenerate":
        return ClientFrame("regenerate", message_id=_uuid(data, "message_id"), client_id=_uuid(data, "client_id"))
    if kind == "edit":
        message_id = _uuid(data, "message_id")
        if message_id is None:
            raise FrameError("invalid", _("edit needs the message_id of the message to edit."))
        text, parts = clean_content(data.get("content"))
        return ClientFrame("edit", text, parts, client_id=_uuid(data, "client_id"), message_id=message_id)
    if not isinstance(kind, str):
        raise FrameError("invalid", _("Frames need a string 'type'."))
    raise FrameError("invalid", _("Unknown frame type %(type)s.") % {"type": repr(kind[:40])})


def _uuid(data: dict, name: str) -> uuid.UUID | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FrameError("invalid", _("%(name)s must be a UUID string.") % {"name": name})
    try:
        return uuid.UUID(value)
    except ValueError:
        raise FrameError("invalid", _("%(name)s must be a UUID string.") % {"name": name}) from None


def clean_content(content) -> tuple[str, list | None]:
    """Return (text, parts): parts is None for plain text, else the cleaned list."""
    limit = settings.MAX_MESSAGE_CHARS
    if isinstance(content, str):
        _check_storable(content)
        if not content.strip():
            raise FrameError("invalid", _("The message is empty."))
        if len(content) > limit:
            raise FrameError("too_large", _("Messages are limited to %(limit)s characters.") % {"limit": limit},
                             {"reason": "message", "limit": limit})
        return content, None
    if not isinstance(content, list) or not content:
        raise FrameError("invalid", _("content must be a string or a non-empty list of content parts."))
    if len(content) > MAX_PARTS:
        raise FrameError("too_large", _("A message can have at most %(limit)s parts.") % {"limit": MAX_PARTS},
                         {"reason": "parts", "limit": MAX_PARTS})
    parts, texts = [], []
    for part in content:
        if not isinstance(part, dict):
            raise FrameError("invalid", _("Each content part must be an object."))
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise FrameError("invalid", _("A text part needs a string 'text'."))
            _check_storable(text)
            texts.append(text)
            parts.append({"type": "text", "text": text})
        elif kind == "image_url":
            parts.append({"type": "image_url", "image_url": _image(part.get("image_url"))})
        else:
            raise FrameError("invalid", _("Content parts must be of type 'text' or 'image_url'."))
    text = "\n".join(texts)
    if len(text) > limit:
        raise FrameError("too_large", _("Messages are limited to %(limit)s characters.") % {"limit": limit},
                         {"reason": "message", "limit": limit})
    if not text.strip() and not any(p["type"] == "image_url" for p in parts):
        raise FrameError("invalid", _("The message is empty."))
    return text, parts


def _check_storable(text: str) -> None:
    """Postgres stores neither NUL nor lone surrogates (which JSON's \\u escapes can make)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FrameError("invalid", _("Text must be valid Unicode.")) from None
    if "\x00" in text:
        raise FrameError("invalid", _("Text must not contain NUL characters."))


def _image(image) -> dict:
    if not isinstance(image, dict) or not isinstance(image.get("url"), str):
        raise FrameError("invalid", _("An image_url part needs an object with a string 'url'."))
    url = image["url"]
    _check_storable(url)
    if images.UPLOAD_URL.match(url):
        pass  # an image the member uploaded: its owner is checked with the turn (chat/images.py)
    elif not url.startswith(("https://", "http://", "data:image/")):
        raise FrameError("invalid", _("Image URLs must be uploads, http(s) URLs or data:image/ URLs."))
    elif not url.startswith("data:"):
        # The model server fetches it: no local or private addresses (names are resolved
        # and checked later, off this synchronous path: chat._check_image_hosts).
        try:
            netguard.check_url_static(url, netguard.image_policy())
        except netguard.Blocked as blocked:
            raise FrameError("invalid", _("This image URL cannot be used: %(why)s") % {"why": blocked.message}) from None
    cleaned = {"url": url}
    detail = image.get("detail")
    if detail is not None:
        if detail not in IMAGE_DETAILS:
            raise FrameError("invalid", _("image detail must be auto, low or high."))
        cleaned["detail"] = detail
    return cleaned
