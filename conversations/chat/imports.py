"""Importing conversations from a file: our own export, chatgpt-web's and ChatGPT's.

`parse(raw)` is pure: it turns the file's bytes into a validated intermediate
form (`Imported`), or raises ImportRefused saying what is wrong and where
("conversation 3, message 12: content must be a string"). It bounds the work
a hostile file can cause before the json module sees it: the size, the
nesting depth and the number of objects and lists are measured by a linear
scan with no recursion; the number of conversations and messages is checked
before they are walked; every text is checked for what Postgres cannot store.

`write(member, imported)` then stores everything in one transaction, owned by
the member, and announces each new conversation to the member's tabs once it
commits. Nothing is sent upstream.

The three formats:

- ours (`exports.py`): `{"format": "teamchat", "version": 1, "conversations": [...]}`,
  or one conversation with the marker beside its fields; every branch, with
  parent ids and `current_leaf_id`.
- chatgpt-web's (Chanzhaoyu/chatgpt-web, Settings > Export): its localStorage
  chat store, `{"history": [...], "chat": [{"uuid", "data": [...]}], "active"}`,
  possibly wrapped as `{"data": {...}}` (how its storage helper saves it) or
  `{"chatStorage": {...}}`. Each chat is a list; `inversion: true` is the user.
- ChatGPT's `conversations.json`: a list of conversations, each a tree of nodes
  (`mapping`) with `current_node`. Branches stay branches; system, tool, hidden
  and empty nodes are skipped and their children hang from the nearest kept
  ancestor; non-text parts become a short placeholder such as `[image]`.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.template.defaultfilters import filesizeformat
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.chat import images
from conversations.chat.conversations import announce_changed
from conversations.chat.exports import FORMAT, VERSION
from conversations.chat.params import ParamsError, clean_params
from conversations.models import Attachment, Conversation, Message
from conversations.upstream import netguard

# Deeper than any of the three formats nests (ChatGPT's metadata reaches about 12).
MAX_DEPTH = 64
# Objects and lists in one file: a 20 MB ChatGPT export has a few hundred thousand. Each
# costs ~60 bytes parsed, so a file of nothing but `{},` cannot take gigabytes.
MAX_CONTAINERS = 1_000_000
MAX_PARTS = 20
TITLE_CHARS = 200  # Conversation.title
NAME_CHARS = 200  # Conversation.model, Message.model
FINISH_REASON_CHARS = 64  # Message.finish_reason
# ChatGPT skips these: the model's hidden reasoning and the member's custom instructions.
CHATGPT_HIDDEN_TYPES = frozenset({"thoughts", "reasoning_recap", "user_editable_context", "model_editable_context"})
CHATGPT_PLACEHOLDERS = {
    "image_asset_pointer": "[image]",
    "audio_asset_pointer": "[audio]",
    "real_time_user_audio_video_asset_pointer": "[audio]",
    "video_container_asset_pointer": "[video]",
}
# chatgpt-web stores `new Date().toLocaleString()`: the browser's locale decides the shape.
LOCALE_TIME_FORMATS = ("%Y/%m/%d %H:%M:%S", "%m/%d/%Y, %I:%M:%S %p", "%m/%d/%Y %I:%M:%S %p", "%Y-%m-%d %H:%M:%S")


class ImportRefused(Exception):
    """The file cannot be imported: `reason` for a program, `message` (translated) for a person."""

    def __init__(self, reason: str, message: str, *, conversation: int | None = None, message_index: int | None = None,
                 code: str = "invalid"):
        if conversation is not None and message_index is not None:
            where = _("conversation %(conversation)s, message %(message)s") % {
                "conversation": conversation, "message": message_index}
            message = _("%(where)s: %(problem)s") % {"where": where, "problem": message}
        elif conversation is not None:
            where = _("conversation %(conversation)s") % {"conversation": conversation}
            message = _("%(where)s: %(problem)s") % {"where": where, "problem": message}
        super().__init__(message)
        self.reason, self.message, self.code = reason, message, code
        self.detail = {"reason": reason}
        if conversation is not None:
            self.detail["conversation"] = conversation
        if message_index is not None:
            self.detail["message"] = message_index


# --------------------------------------------------------------------------- the intermediate form


@dataclass
class ImportedMessage:
    id: uuid.UUID
    parent_id: uuid.UUID | None
    role: str
    content: str
    content_parts: list | None
    model: str
    finish_reason: str
    usage: dict | None
    created_at: datetime
    reasoning: str = ""
    logprobs: list | None = None


@dataclass
class ImportedConversation:
    title: str
    model: str
    system_prompt: str
    params: dict
    created_at: datetime
    updated_at: datetime
    messages: list[ImportedMessage]  # parents before their children
    current_leaf_id: uuid.UUID | None
    # The file's title is kept as the member's own (no automatic title replaces it); a title made
    # here from the first question is the automatic kind; none is none.
    title_source: str = ""


@dataclass
class Imported:
    format: str  # "teamchat", "chatgpt-web" or "chatgpt"
    conversations: list[ImportedConversation]


@dataclass
class _Node:
    """A message as read from a file, before the tree is checked: `role` None is skipped."""

    key: str
    parent: str | None
    index: int  # its place in the file, for errors
    role: str | None = None
    content: str = ""
    parts: list | None = None
    model: str = ""
    finish_reason: str = ""
    usage: dict | None = None
    created_at: datetime | None = None
    reasoning: str = ""
    logprobs: list | None = None


# --------------------------------------------------------------------------- bytes to JSON


def parse(raw: bytes) -> Imported:
    """The file's bytes as a validated import, or ImportRefused."""
    return detect(load(raw))


def file_too_large() -> ImportRefused:
    return ImportRefused("too_large", _("The file is larger than the limit of %(size)s.")
                         % {"size": filesizeformat(settings.IMPORT_MAX_BYTES)}, code="too_large")


def load(raw: bytes):
    """The parsed JSON, refused by size, encoding, depth and bulk before the json module sees it."""
    if len(raw) > settings.IMPORT_MAX_BYTES:
        raise file_too_large()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused("not_utf8", _("The file is not UTF-8 text.")) from None
    steps = _brackets(text)
    containers = steps.count(1)
    if containers > MAX_CONTAINERS:  # counted first: it is the cheaper look at a huge file
        raise ImportRefused("too_large", _("The file has more than %(limit)s objects and lists.")
                            % {"limit": MAX_CONTAINERS}, code="too_large")
    if _depth(steps) > MAX_DEPTH:
        raise ImportRefused("too_deep", _("The file nests deeper than %(limit)s levels.") % {"limit": MAX_DEPTH})
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:  # the scan above makes this unreachable; a second fence costs nothing
        raise ImportRefused("too_deep", _("The file nests deeper than %(limit)s levels.") % {"limit": MAX_DEPTH}) from None
    except json.JSONDecodeError as error:
        raise ImportRefused("not_json", _("The file is not JSON (line %(line)s, column %(column)s).")
                            % {"line": error.lineno, "column": error.colno}) from None
    except ValueError:  # NaN, Infinity, a number too long for Python
        raise ImportRefused("not_json", _("The file is not JSON: it has a number JSON does not allow.")) from None


_ESCAPED_BACKSLASH = "\\\\"
_ESCAPED_QUOTE = '\\"'
_STRINGS = re.compile(r'"[^"]*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEPS = str.maketrans({"[": "\x01", "{": "\x01", "]": "\x00", "}": "\x00"})


def measure(text: str) -> tuple[int, int]:
    """(deepest nesting, number of objects and lists) of a JSON text, in linear time, no recursion."""
    steps = _brackets(text)
    return _depth(steps), steps.count(1)


def _brackets(text: str) -> bytes:
    """The brackets of a JSON text outside its strings, as bytes: 1 opens, 0 closes.

    Escaped backslashes go first, then escaped quotes: what is left of a valid
    JSON text has a quote only at each end of a string, so strings can be cut
    out whole (by C code, no Python loop). A text that is not JSON gives
    something; the json module then says what is wrong with it.
    """
    bare = text.replace(_ESCAPED_BACKSLASH, "").replace(_ESCAPED_QUOTE, "")
    return _NOT_BRACKETS.sub("", _STRINGS.sub("", bare)).translate(_STEPS).encode("latin-1")


def _depth(steps: bytes) -> int:
    if not steps:
        return 0
    opened = itertools.accumulate(steps)
    # After i + 1 brackets, `opened` of them opened: the depth there is opened - (i + 1 - opened).
    return max(map(operator.sub, map(operator.mul, opened, itertools.repeat(2)), itertools.count(1)))


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: Postgres's jsonb cannot store infinity
        raise ValueError("number out of range")
    return value


# --------------------------------------------------------------------------- which format


def detect(data) -> Imported:
    """Which of the three formats `data` is, read and checked."""
    if isinstance(data, list):
        if data and isinstance(data[0], dict) and "mapping" in data[0]:
            return Imported("chatgpt", _chatgpt(data))
        if not data:
            raise ImportRefused("empty", _("The file has no conversations to import."))
    elif isinstance(data, dict):
        if data.get("format") == FORMAT or ("messages" in data and "current_leaf_id" in data):
            return Imported(FORMAT, _ours(data))
        if "mapping" in data and "current_node" in data:
            return Imported("chatgpt", _chatgpt([data]))
        store = _chatgpt_web_store(data)
        if store is not None:
            return Imported("chatgpt-web", _chatgpt_web(store))
    raise ImportRefused("unknown_format", _(
        "This is not a file this server can import: it takes its own JSON export, "
        "chatgpt-web's exported history and ChatGPT's conversations.json."))


# --------------------------------------------------------------------------- checks


class _Place:
    """Where in the file a check is, for the error it raises."""

    def __init__(self, conversation: int | None = None, message: int | None = None):
        self.conversation, self.message = conversation, message

    def at(self, message: int | None) -> _Place:
        return _Place(self.conversation, message)

    def refuse(self, problem: str, reason: str = "invalid"):
        raise ImportRefused(reason, problem, conversation=self.conversation, message_index=self.message)

    def wrong(self, name: str, kind: str):
        self.refuse(_("%(field)s must be %(kind)s.") % {"field": name, "kind": kind}, "wrong_type")

    # Each takes the object and a key, and says what it needed when the value is wrong.

    def obj(self, data: dict, key: str, *, required: bool = True) -> dict | None:
        value = data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, dict):
            self.wrong(key, _("an object") if required else _("an object or null"))
        return value

    def seq(self, data: dict, key: str, *, required: bool = True) -> list:
        value = data.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            self.wrong(key, _("a list") if required else _("a list or null"))
        return value

    def text(self, data: dict, key: str, *, required: bool = False, limit: int | None = None) -> str:
        """A string (null or absent: "" unless required), storable and within `limit`."""
        value = data.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            self.wrong(key, _("a string") if required else _("a string or null"))
        return self.storable(key, value, limit)

    def storable(self, name: str, value: str, limit: int | None = None) -> str:
        """Postgres stores neither NUL nor lone surrogates (which JSON's \\u escapes can make)."""
        if "\x00" in value:
            self.refuse(_("%(field)s must not contain NUL characters.") % {"field": name}, "bad_text")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self.refuse(_("%(field)s must be valid Unicode.") % {"field": name}, "bad_text")
        if limit is not None and len(value) > limit:
            self.refuse(_("%(field)s is longer than %(limit)s characters.") % {"field": name, "limit": limit},
                        "too_long")
        return value

    def flag(self, data: dict, key: str) -> bool:
        value = data.get(key)
        if value is not None and not isinstance(value, bool):
            self.wrong(key, _("true, false or null"))
        return bool(value)

    def epoch(self, data: dict, key: str) -> datetime | None:
        """Seconds since 1970 (ChatGPT's times), or None."""
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 253_402_300_800:
            self.wrong(key, _("a time in seconds since 1970, or null"))
        return datetime.fromtimestamp(value, tz=UTC)

    def iso_time(self, data: dict, key: str) -> datetime | None:
        """An ISO 8601 time (ours), or None."""
        value = data.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value)
                if timezone.is_naive(moment):
                    moment = timezone.make_aware(moment, UTC)
                return moment.astimezone(UTC)
            except (ValueError, OverflowError):
                pass
        self.wrong(key, _("an ISO 8601 time or null"))

    def json_value(self, name: str, value) -> None:
        """A JSON value to store as it is (usage): no text Postgres cannot store, anywhere in it."""
        if isinstance(value, str):
            self.storable(name, value)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.storable(name, key)
                self.json_value(name, item)
        elif isinstance(value, list):
            for item in value:
                self.json_value(name, item)


def _count(place: _Place, found: int, total: list[int]) -> None:
    """Add a conversation's messages to the file's count; refuse past the limit before walking them."""
    total[0] += found
    limit = settings.IMPORT_MAX_MESSAGES
    if total[0] > limit:
        place.refuse(_("the file has more than %(limit)s messages, the most one import takes.") % {"limit": limit},
                     "too_many_messages")


def _conversations(items: list) -> list:
    limit = settings.IMPORT_MAX_CONVERSATIONS
    if len(items) > limit:
        raise ImportRefused("too_many_conversations", _(
            "The file has %(count)s conversations; one import takes at most %(limit)s.")
            % {"count": len(items), "limit": limit})
    if not items:
        raise ImportRefused("empty", _("The file has no conversations to import."))
    return items


def _given(title: str) -> str:
    return Conversation.TitleSource.MEMBER if title else Conversation.TitleSource.NONE


def _fold_title(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 80 else line[:79].rstrip() + "…"


# --------------------------------------------------------------------------- the tree


def _tree(place: _Place, nodes: list[_Node], current: str | None, current_name: str,
          fallback: datetime) -> tuple[list[ImportedMessage], uuid.UUID | None]:
    """The kept messages, parents first, each under its nearest kept ancestor; and the current leaf.

    Refuses an id that appears twice, a parent that is not in the conversation,
    and parents that form a cycle. A message without a time takes its parent's
    (just after it), else `fallback`. The current leaf is the nearest kept
    message at or above `current`; without one, the newest kept leaf.
    """
    by_key: dict[str, _Node] = {}
    for node in nodes:
        if node.key in by_key:
            place.at(node.index).refuse(_("the id %(id)s appears twice.") % {"id": _show(node.key)})
        by_key[node.key] = node
    for node in nodes:
        if node.parent is not None and node.parent not in by_key:
            place.at(node.index).refuse(_("its parent %(id)s is not a message of this conversation.")
                                        % {"id": _show(node.parent)})
    # Parents first: walk up from each node to one already placed; a walk that meets itself is a cycle.
    order: list[_Node] = []
    placed: set[str] = set()
    for node in nodes:
        path, on_path, key = [], set(), node.key
        while key is not None and key not in placed:
            if key in on_path:
                place.at(by_key[key].index).refuse(_("its parents form a cycle."), "cycle")
            on_path.add(key)
            path.append(key)
            key = by_key[key].parent
        for key in reversed(path):
            placed.add(key)
            order.append(by_key[key])
    # The nearest kept node at or above each node, and the ids and times of the kept ones.
    anchor: dict[str, str | None] = {}
    ids: dict[str, uuid.UUID] = {}
    times: dict[str, datetime] = {}
    messages: list[ImportedMessage] = []
    has_children: set[str] = set()
    for position, node in enumerate(order):
        above = anchor[node.parent] if node.parent is not None else None
        if node.role is None:
            anchor[node.key] = above
            continue
        anchor[node.key] = node.key
        created = node.created_at or (times[above] + timedelta(microseconds=1) if above
                                      else fallback + timedelta(microseconds=position))
        ids[node.key], times[node.key] = uuid.uuid4(), created
        if above is not None:
            has_children.add(above)
        messages.append(ImportedMessage(
            id=ids[node.key], parent_id=ids[above] if above else None, role=node.role, content=node.content,
            content_parts=node.parts, model=node.model, finish_reason=node.finish_reason, usage=node.usage,
            created_at=created, reasoning=node.reasoning, logprobs=node.logprobs,
        ))
    if current is not None:
        if current not in by_key:
            place.refuse(_("%(field)s %(id)s is not one of its messages.") % {"field": current_name, "id": _show(current)})
        leaf = anchor[current]
        return messages, ids[leaf] if leaf else None
    parents = {ids[key] for key in has_children}
    leaves = [m for m in messages if m.id not in parents]
    newest = max(leaves, key=lambda m: m.created_at, default=None)
    return messages, newest.id if newest else None


def _show(key: str) -> str:
    return repr(key if len(key) <= 40 else key[:40] + "…")


# --------------------------------------------------------------------------- ours


def _ours(data: dict) -> list[ImportedConversation]:
    place = _Place()
    version = data.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        place.wrong("version", _("a whole number"))
    if version > VERSION:
        place.refuse(_("this export is version %(version)s, newer than this server reads (%(known)s).")
                     % {"version": version, "known": VERSION}, "version")
    items = place.seq(data, "conversations") if "conversations" in data else [data]
    total = [0]
    return [_our_conversation(_Place(number), item, total)
            for number, item in enumerate(_conversations(items), 1)]


def _our_conversation(place: _Place, item, total: list[int]) -> ImportedConversation:
    if not isinstance(item, dict):
        place.wrong("conversation", _("an object"))
    found = place.seq(item, "messages", required=False)
    _count(place, len(found), total)
    now = timezone.now()
    created = place.iso_time(item, "created_at") or now
    params = place.obj(item, "params", required=False) or {}
    try:
        params = clean_params(params)
    except ParamsError as error:
        place.refuse(_("params: %(problem)s") % {"problem": error}, "invalid_params")
    nodes = [_our_message(place.at(index), index, message) for index, message in enumerate(found, 1)]
    current = item.get("current_leaf_id")
    if current is not None and not isinstance(current, str):
        place.wrong("current_leaf_id", _("a string or null"))
    messages, leaf = _tree(place, nodes, current, "current_leaf_id", created)
    title = place.text(item, "title")[:TITLE_CHARS]
    return ImportedConversation(
        title=title, title_source=_given(title),
        model=place.text(item, "model", limit=NAME_CHARS) or settings.DEFAULT_MODEL,
        system_prompt=place.text(item, "system_prompt", limit=settings.MAX_MESSAGE_CHARS),
        params=params, created_at=created, updated_at=place.iso_time(item, "updated_at") or created,
        messages=messages, current_leaf_id=leaf,
    )


def _our_message(place: _Place, index: int, message) -> _Node:
    if not isinstance(message, dict):
        place.wrong("message", _("an object"))
    key = message.get("id")
    if not isinstance(key, str):
        place.wrong("id", _("a string"))
    parent = message.get("parent_id")
    if parent is not None and not isinstance(parent, str):
        place.wrong("parent_id", _("a string or null"))
    role = message.get("role")
    if role not in (Message.Role.USER, Message.Role.ASSISTANT, Message.Role.SYSTEM):
        place.refuse(_("role must be user, assistant or system."), "wrong_type")
    content, parts = _our_content(place, message.get("content"))
    usage = place.obj(message, "usage", required=False)
    if usage is not None:
        place.json_value("usage", usage)
    logprobs = place.seq(message, "logprobs", required=False) or None
    if logprobs is not None:
        place.json_value("logprobs", logprobs)
    assistant = role == Message.Role.ASSISTANT
    return _Node(
        key=key, parent=parent, index=index, role=role, content=content, parts=parts,
        model=place.text(message, "model", limit=NAME_CHARS) if assistant else "",
        finish_reason=place.text(message, "finish_reason")[:FINISH_REASON_CHARS], usage=usage,
        created_at=place.iso_time(message, "created_at"),
        reasoning=place.text(message, "reasoning", limit=settings.MAX_REPLY_CHARS) if assistant else "",
        logprobs=logprobs if assistant else None,
    )


def _our_content(place: _Place, content) -> tuple[str, list | None]:
    """(text, parts): a string, or a list of OpenAI content parts as the product stores them."""
    limit = max(settings.MAX_MESSAGE_CHARS, settings.MAX_REPLY_CHARS)
    if isinstance(content, str):
        return place.storable("content", content, limit), None
    if not isinstance(content, list) or not content:
        place.wrong("content", _("a string or a non-empty list of content parts"))
    if len(content) > MAX_PARTS:
        place.refuse(_("content has more than %(limit)s parts.") % {"limit": MAX_PARTS}, "too_long")
    parts, texts = [], []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = place.text(part, "text", required=True, limit=limit)
            texts.append(text)
            parts.append({"type": "text", "text": text})
        elif kind == "image_url":
            parts.append({"type": "image_url", "image_url": _our_image(place, part)})
        else:
            place.wrong("content", _("a string or a list of text and image_url parts"))
    return place.storable("content", "\n".join(texts), limit), parts


def _our_image(place: _Place, part: dict) -> dict:
    image = place.obj(part, "image_url")
    url = place.text(image, "url", required=True)
    if images.UPLOAD_URL.match(url):
        pass  # an image uploaded here: kept if it is the importing member's (`write`)
    elif not url.startswith(("https://", "http://", "data:image/")):
        place.refuse(_("image URLs must be uploads, http(s) or data:image/ URLs."))
    elif not url.startswith("data:"):
        # As for a message sent: the model server fetches it, so no local or private address.
        try:
            netguard.check_url_static(url, netguard.image_policy())
        except netguard.Blocked as blocked:
            place.refuse(_("this image URL cannot be used: %(why)s") % {"why": blocked.message})
    cleaned = {"url": url}
    detail = image.get("detail")
    if detail is not None:
        if detail not in ("auto", "low", "high"):
            place.refuse(_("image detail must be auto, low or high."))
        cleaned["detail"] = detail
    return cleaned


# --------------------------------------------------------------------------- ChatGPT


def _chatgpt(items: list) -> list[ImportedConversation]:
    total = [0]
    return [_chatgpt_conversation(_Place(number), item, total)
            for number, item in enumerate(_conversations(items), 1)]


def _chatgpt_conversation(place: _Place, item, total: list[int]) -> ImportedConversation:
    if not isinstance(item, dict):
        place.wrong("conversation", _("an object"))
    mapping = place.obj(item, "mapping")
    _count(place, len(mapping), total)
    created = place.epoch(item, "create_time") or timezone.now()
    nodes = [_chatgpt_node(place.at(index), index, key, node) for index, (key, node) in enumerate(mapping.items(), 1)]
    current = item.get("current_node")
    if current is not None and not isinstance(current, str):
        place.wrong("current_node", _("a string or null"))
    messages, leaf = _tree(place, nodes, current, "current_node", created)
    model = place.text(item, "default_model_slug", limit=NAME_CHARS)
    if not model:
        models = [m.model for m in messages if m.model]
        model = models[-1] if models else settings.DEFAULT_MODEL
    title = place.text(item, "title")[:TITLE_CHARS]
    return ImportedConversation(
        title=title, title_source=_given(title), model=model, system_prompt="", params={},
        created_at=created, updated_at=place.epoch(item, "update_time") or created,
        messages=messages, current_leaf_id=leaf,
    )


def _chatgpt_node(place: _Place, index: int, key: str, node) -> _Node:
    if not isinstance(node, dict):
        place.wrong("node", _("an object"))
    parent = node.get("parent")
    if parent is not None and not isinstance(parent, str):
        place.wrong("parent", _("a string or null"))
    children = place.seq(node, "children", required=False)
    if not all(isinstance(child, str) for child in children):
        place.wrong("children", _("a list of strings"))
    found = _Node(key=key, parent=parent, index=index)
    message = place.obj(node, "message", required=False)
    if message is None:
        return found  # the root: no message
    author = place.obj(message, "author")
    role = place.text(author, "role", required=True)
    content = place.obj(message, "content")
    content_type = place.text(content, "content_type", required=True)
    metadata = place.obj(message, "metadata", required=False) or {}
    recipient = place.text(message, "recipient")
    found.created_at = place.epoch(message, "create_time")
    text = _chatgpt_text(place, content_type, content)
    hidden = metadata.get("is_visually_hidden_from_conversation") is True
    tool_call = role == "assistant" and recipient not in ("", "all")
    if role not in ("user", "assistant") or hidden or tool_call or not text.strip():
        return found  # skipped: its children hang from its nearest kept ancestor
    found.role, found.content = role, text
    if role == "assistant":
        found.model = place.text(metadata, "model_slug", limit=NAME_CHARS)
    return found


def _chatgpt_text(place: _Place, content_type: str, content: dict) -> str:
    limit = max(settings.MAX_MESSAGE_CHARS, settings.MAX_REPLY_CHARS)
    if content_type in CHATGPT_HIDDEN_TYPES:
        return ""
    if content_type in ("text", "multimodal_text"):
        texts = []
        for part in place.seq(content, "parts", required=False):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict):
                texts.append(_chatgpt_part(place, part))
            else:
                place.wrong("parts", _("a list of strings and objects"))
        return place.storable("content", "\n".join(t for t in texts if t), limit)
    if content_type == "code":
        language = place.text(content, "language")
        language = "" if language == "unknown" else language
        return place.storable("content", f"```{language}\n{place.text(content, 'text')}\n```", limit)
    text = content.get("text")
    if isinstance(text, str):
        return place.storable("content", text, limit)
    return f"[{_short(content_type)}]"


def _chatgpt_part(place: _Place, part: dict) -> str:
    """A non-text part: its transcript when it has one, else a short placeholder."""
    text = part.get("text")
    if isinstance(text, str):
        return text
    kind = part.get("content_type")
    if not isinstance(kind, str):
        return "[attachment]"
    return CHATGPT_PLACEHOLDERS.get(kind, f"[{_short(kind)}]")


def _short(kind: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "", kind.lower())[:40] or "attachment"


# --------------------------------------------------------------------------- chatgpt-web


def _chatgpt_web_store(data: dict) -> dict | None:
    """The chat store inside an export: bare, or in `data` / `chatStorage` (older exports)."""
    for _level in range(3):
        if isinstance(data.get("chat"), list) or isinstance(data.get("history"), list):
            return data
        inner = data.get("chatStorage", data.get("data"))
        if not isinstance(inner, dict):
            return None
        data = inner
    return None


def _chatgpt_web(store: dict) -> list[ImportedConversation]:
    place = _Place()
    titles: dict = {}
    order: dict = {}
    for position, entry in enumerate(place.seq(store, "history", required=False)):
        if not isinstance(entry, dict):
            place.wrong("history", _("a list of objects"))
        key = _web_uuid(place, entry)
        titles[key] = place.text(entry, "title")
        order.setdefault(key, position)
    chats = _conversations(place.seq(store, "chat", required=False))
    numbered = list(enumerate(chats, 1))
    for number, chat in numbered:
        if not isinstance(chat, dict):
            _Place(number).wrong("chat", _("an object"))
    # The sidebar's order (newest first), then chats the history does not list, as they come.
    numbered.sort(key=lambda pair: order.get(_web_uuid(_Place(pair[0]), pair[1]), len(order) + pair[0]))
    total = [0]
    return [_chatgpt_web_conversation(_Place(number), chat, titles, total) for number, chat in numbered]


def _web_uuid(place: _Place, entry: dict):
    key = entry.get("uuid")
    if isinstance(key, bool) or not isinstance(key, int | str):
        place.wrong("uuid", _("a number or a string"))
    return key


def _chatgpt_web_conversation(place: _Place, chat: dict, titles: dict, total: list[int]) -> ImportedConversation:
    key = _web_uuid(place, chat)
    items = place.seq(chat, "data", required=False)
    _count(place, len(items), total)
    limit = max(settings.MAX_MESSAGE_CHARS, settings.MAX_REPLY_CHARS)
    nodes: list[_Node] = []
    previous = None
    for index, item in enumerate(items, 1):
        here = place.at(index)
        if not isinstance(item, dict):
            here.wrong("message", _("an object"))
        text = here.text(item, "text", required=True, limit=limit)
        user = here.flag(item, "inversion")
        failed = here.flag(item, "error")
        when = _locale_time(here, item.get("dateTime"))
        node = _Node(key=str(index), parent=previous, index=index, created_at=when)
        # A failed reply's text is chatgpt-web's error message, not the model's words.
        if text.strip() and not (failed and not user):
            node.role, node.content = ("user" if user else "assistant"), text
        nodes.append(node)
        previous = node.key
    created = next((n.created_at for n in nodes if n.created_at), None) or timezone.now()
    messages, leaf = _tree(place, nodes, None, "", created)
    title = place.storable("title", titles.get(key) or "")[:TITLE_CHARS]
    source = _given(title)
    if not title or title in ("New Chat", "新建聊天"):  # chatgpt-web's name for a chat not yet named
        first = next((m.content for m in messages if m.role == "user"), "")
        if first:
            title, source = _fold_title(first), Conversation.TitleSource.FIRST_WORDS
    return ImportedConversation(
        title=title, title_source=source, model=settings.DEFAULT_MODEL, system_prompt="", params={}, created_at=created,
        updated_at=max((m.created_at for m in messages), default=created), messages=messages, current_leaf_id=leaf,
    )


def _locale_time(place: _Place, value) -> datetime | None:
    """chatgpt-web's `toLocaleString()` time in the server's time zone, or None when its locale is unknown."""
    if value is None:
        return None
    if not isinstance(value, str):
        place.wrong("dateTime", _("a string"))
    text = value.replace("\u202f", " ").replace("\u00a0", " ").strip()
    for shape in LOCALE_TIME_FORMATS:
        try:
            return timezone.make_aware(datetime.strptime(text, shape))
        except ValueError:
            continue
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


# --------------------------------------------------------------------------- the write


def write(member, imported: Imported) -> list[tuple[Conversation, int]]:
    """Store every conversation of `imported` for `member` in one transaction; (conversation, messages) each.

    Each is announced to the member's tabs (`conversation_created`) once the
    transaction commits; a failure anywhere stores nothing and announces nothing.
    """
    _keep_own_uploads(member, imported)
    conversations, messages, written = [], [], []
    for found in imported.conversations:
        conversation = Conversation(
            id=uuid.uuid4(), owner=member, title=found.title, title_source=found.title_source,
            model=found.model, provider=None,
            system_prompt=found.system_prompt, params=found.params, current_leaf_id=found.current_leaf_id,
            created_at=found.created_at, updated_at=found.updated_at,
        )
        conversations.append(conversation)
        written.append((conversation, len(found.messages)))
        messages += [
            Message(id=m.id, conversation=conversation, parent_id=m.parent_id, role=m.role, content=m.content,
                    content_parts=m.content_parts, status=Message.Status.COMPLETE, model=m.model,
                    finish_reason=m.finish_reason, usage=m.usage, reasoning=m.reasoning, logprobs=m.logprobs,
                    created_at=m.created_at, updated_at=m.created_at)
            for m in found.messages
        ]
    with transaction.atomic():
        # Foreign keys are checked at commit (Postgres: deferred), so the order of rows does not matter.
        Conversation.objects.bulk_create(conversations, batch_size=500)
        Message.objects.bulk_create(messages, batch_size=1000)
        for conversation in conversations:
            announce_changed(conversation, "conversation_created")
    return written


def _keep_own_uploads(member, imported: Imported) -> None:
    """An uploaded image stays only if it is the member's own (their export, imported back);
    another member's becomes the `[image]` placeholder: its owner alone may read it."""
    found = [m for c in imported.conversations for m in c.messages if images.attachment_ids(m.content_parts)]
    if not found:
        return
    wanted = {i for m in found for i in images.attachment_ids(m.content_parts)}
    owned = set(Attachment.objects.filter(owner=member, pk__in=wanted).values_list("pk", flat=True))
    for message in found:
        parts = [part if all(i in owned for i in images.attachment_ids([part])) else {"type": "text", "text": "[image]"}
                 for part in message.content_parts]
        message.content_parts = parts
        message.content = "\n".join(part["text"] for part in parts if part["type"] == "text")
