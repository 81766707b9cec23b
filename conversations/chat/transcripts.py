"""A conversation as staff review it: the whole tree in reading order, a page at a time,
and for every reply exactly what the model was sent.

Reading order is the tree walked depth first, siblings oldest first: a
question, its reply, the rest of that branch, then the next version of the
reply and its branch. `level` counts the forks above a message (the trunk is
0), `current` says whether it is on the branch the member has on screen, and
each message at a fork knows its siblings ("version 2 of 3").

What the model saw is rebuilt from the reply's `request` (chat/turns.py
records it as the reply starts) and the stored rows: the system prompt when
there was one, then the messages named by `message_ids`, in that order, each
as it went upstream (`context.upstream_message`). Messages are never rewritten
(an edit or a regeneration adds a sibling), so the rows are what was sent.
The branch's other messages before the question are marked: dropped for the
token budget (`dropped_messages` counts them) or skipped (replies with no text
are never sent).

A few queries for any page: every message's skeleton (no text) for the tree,
the full rows of the page, those its replies sent that are not on it, the tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from django.core.paginator import Page, Paginator
from django.db.models import Sum
from django.db.models.functions import Length

from conversations.chat import errors, images
from conversations.chat.context import branch, upstream_message
from conversations.models import Attachment, Conversation, Message, Usage
from conversations.models.member import opaque_member_id

PAGE_SIZE = 50
MAX_INDENT = 8
DEFAULT_PROVIDER = "default"
DATA_URL = re.compile(r"^data:([^;,]*)[;,]")


@dataclass
class Node:
    """A message's place in the tree (no text)."""

    message: Message
    number: int = 0  # 1-based, in reading order
    level: int = 0  # forks above it
    current: bool = False  # on the branch the member has on screen
    siblings: list[Node] = field(default_factory=list)  # itself among them, oldest first, when forked
    forks: int = 0  # how many versions follow it (children), when more than one

    @property
    def id(self) -> uuid.UUID:
        return self.message.id

    @property
    def version(self) -> int:
        return self.siblings.index(self) + 1 if self.siblings else 1

    @property
    def page(self) -> int:
        return (self.number - 1) // PAGE_SIZE + 1

    @property
    def indent(self) -> int:
        """How far the page indents it: its level, up to a width a screen can show."""
        return min(self.level, MAX_INDENT)


@dataclass
class Sent:
    """One message of a request, as the model server got it."""

    role: str
    content: str | list
    node: Node | None = None  # None for the system prompt

    @property
    def wire(self) -> dict:
        return {"role": self.role, "content": self.content}

    @property
    def parts(self) -> list[tuple[str, object]]:
        """The content for reading, in order: ("text", …), ("image", url) for an image sent by its
        address, ("inline", InlineImage) for one sent as a data: URL (its bytes are not shown)."""
        if isinstance(self.content, str):
            return [("text", self.content)]
        shown: list[tuple[str, object]] = []
        for part in self.content or []:
            if isinstance(part, dict) and part.get("type") == "text":
                shown.append(("text", str(part.get("text", ""))))
            elif isinstance(part, dict) and part.get("type") == "image_url":
                url = str((part.get("image_url") or {}).get("url", ""))
                shown.append(("inline", InlineImage.of(url)) if url.startswith("data:") else ("image", url))
            else:
                shown.append(("other", json.dumps(part, ensure_ascii=False)))
        return shown


@dataclass
class InlineImage:
    """An image sent inside the request as a data: URL: what it was, without its bytes."""

    media_type: str
    length: int  # characters of the URL
    sha256: str  # of the URL as sent: the same digest the model server's copy has

    @classmethod
    def of(cls, url: str) -> InlineImage:
        found = DATA_URL.match(url)
        return cls(found.group(1) if found else "", len(url), hashlib.sha256(url.encode()).hexdigest())


@dataclass
class Step:
    """A line of what the model saw: a message sent, or a run of the branch's messages left out."""

    state: str  # "sent", "dropped" (the token budget) or "skipped" (a reply with no text)
    sent: Sent | None = None
    nodes: list[Node] = field(default_factory=list)


@dataclass
class Seen:
    """What the model saw for one reply."""

    model: str
    provider: str
    params: dict
    estimated_tokens: int | None
    recorded_dropped: int
    messages: list[Sent]  # exactly the request's `messages`, in order
    steps: list[Step]  # the same, with the branch's messages that were left out marked where they stood
    missing: list[str]  # ids recorded that are no longer stored
    in_branch_order: bool = True  # the messages sent are the branch's, in its order
    user: str = ""  # the opaque id the model server was given for the member

    @property
    def dropped(self) -> list[Node]:
        return [node for step in self.steps if step.state == "dropped" for node in step.nodes]

    @property
    def skipped(self) -> list[Node]:
        return [node for step in self.steps if step.state == "skipped" for node in step.nodes]

    @property
    def consistent(self) -> bool:
        """The rows still account for the record: nothing missing, as many dropped as recorded,
        and what was sent is the branch in its order (as chat/context.py builds it)."""
        return not self.missing and len(self.dropped) == self.recorded_dropped and self.in_branch_order

    def upstream_messages(self) -> list[dict]:
        return [sent.wire for sent in self.messages]

    def body(self) -> dict:
        """The request's body as it was sent, messages aside (chat/turns.py builds the same)."""
        return {**self.params, "model": self.model, "stream": True, "stream_options": {"include_usage": True},
                "user": self.user}

    @property
    def body_json(self) -> str:
        return json.dumps(self.body(), ensure_ascii=False, indent=2)


@dataclass
class Entry:
    """A message on the page: its place, its row, and for a reply its cost and what it saw."""

    node: Node
    message: Message
    usage: Usage | None
    seen: Seen | None
    error_text: str

    @property
    def parts(self) -> list[dict]:
        return self.message.content_parts or []

    @property
    def images(self) -> list[str]:
        return [str((part.get("image_url") or {}).get("url", "")) for part in self.parts
                if isinstance(part, dict) and part.get("type") == "image_url"]

    @property
    def tokens(self) -> list[Token]:
        """The reply's tokens with their probabilities, when logprobs were asked for (at most TOKENS_SHOWN)."""
        return token_view(self.message.logprobs)


TOKENS_SHOWN = 5_000  # a page stays light; the export holds them all


@dataclass
class Token:
    text: str
    percent: float
    band: int  # 0: likely (≥ 90%) … 4: unlikely (< 10%), the shade the page gives it
    alternatives: str  # "'a' 36.8%, 'b' 13.5%", shown on hover


def token_view(logprobs) -> list[Token]:
    """The model server's `logprobs.content` entries as shaded tokens; anything malformed is skipped."""
    tokens = []
    for entry in (logprobs if isinstance(logprobs, list) else [])[:TOKENS_SHOWN]:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            continue
        percent = _percent(entry.get("logprob"))
        band = next((i for i, floor in enumerate((90, 60, 30, 10)) if percent >= floor), 4)
        others = [f"{alt['token']!r} {_percent(alt.get('logprob')):.1f}%"
                  for alt in entry.get("top_logprobs") or ()
                  if isinstance(alt, dict) and isinstance(alt.get("token"), str) and alt["token"] != entry["token"]]
        tokens.append(Token(entry["token"], round(percent, 1), band, ", ".join(others)))
    return tokens


def _percent(logprob) -> float:
    if not isinstance(logprob, int | float) or logprob > 0:
        return 0.0
    return 100 * math.exp(max(float(logprob), -100.0))


@dataclass
class Transcript:
    conversation: Conversation
    page: Page
    entries: list[Entry]
    message_count: int
    tokens: int

    @property
    def params_json(self) -> str:
        return json.dumps(self.conversation.params or {}, ensure_ascii=False, indent=2)


def reading_order(skeleton: dict, current_leaf_id) -> list[Node]:
    """Every message as a Node, depth first, siblings oldest first; numbered, levelled, linked."""
    nodes = {mid: Node(message) for mid, message in skeleton.items()}
    children: dict = defaultdict(list)
    for node in nodes.values():
        parent_id = node.message.parent_id if node.message.parent_id in nodes else None
        children[parent_id].append(node)
    for siblings in children.values():
        siblings.sort(key=lambda n: (n.message.created_at, str(n.id)))
        if len(siblings) > 1:
            for node in siblings:
                node.siblings = siblings
    current = {m.id for m in branch(skeleton, current_leaf_id)}
    order: list[Node] = []
    stack = [(node, 1 if len(children[None]) > 1 else 0) for node in reversed(children[None])]
    while stack:
        node, level = stack.pop()
        node.number, node.level, node.current = len(order) + 1, level, node.id in current
        order.append(node)
        below = children.get(node.id, [])
        node.forks = len(below) if len(below) > 1 else 0
        stack.extend((child, level + (1 if len(below) > 1 else 0)) for child in reversed(below))
    return order


def seen_by(reply: Message, skeleton: dict, nodes: dict, rows: dict,
            wire: Callable[[Message], dict] = upstream_message) -> Seen | None:
    """What the model was sent for `reply`, rebuilt from its record and the rows; None if unrecorded.

    `wire` turns a row into the message as the model server got it (stored images inline)."""
    request = reply.request
    if not isinstance(request, dict):
        return None
    sent: list[Sent] = []
    steps: list[Step] = []
    if request.get("system_prompt"):
        sent.append(Sent("system", request["system_prompt"]))
        steps.append(Step("sent", sent[-1]))
    recorded: list[tuple[uuid.UUID, Sent]] = []
    missing: list[str] = []
    for raw in request.get("message_ids") or []:
        try:
            message_id = uuid.UUID(str(raw))
        except ValueError:
            missing.append(str(raw))
            continue
        row = rows.get(message_id)
        if row is None:
            missing.append(str(raw))
            continue
        sent_as = wire(row)
        recorded.append((message_id, Sent(sent_as["role"], sent_as["content"], nodes.get(message_id))))
        sent.append(recorded[-1][1])
    # The branch's messages that were not sent, each marked where it stood: before the sent
    # message that followed it on the branch. The sent ones keep the record's order.
    path = branch(skeleton, reply.parent_id)
    position = {message.id: index for index, message in enumerate(path)}
    sent_ids = {message_id for message_id, _one in recorded}
    left_out = [message for message in path if message.id not in sent_ids]
    for message_id, one in recorded:
        here = position.get(message_id, len(path))
        while left_out and position[left_out[0].id] < here:
            _add_left_out(steps, left_out.pop(0), nodes)
        steps.append(Step("sent", one))
    for message in left_out:
        _add_left_out(steps, message, nodes)
    places = [position.get(message_id) for message_id, _one in recorded]
    params = request.get("params")
    return Seen(
        model=str(request.get("model", reply.model)),
        provider=str(request.get("provider") or DEFAULT_PROVIDER),
        params=params if isinstance(params, dict) else {},
        estimated_tokens=request.get("estimated_tokens"),
        recorded_dropped=int(request.get("dropped_messages") or 0),
        messages=sent,
        steps=steps,
        missing=missing,
        in_branch_order=None not in places and places == sorted(places),
        user=opaque_member_id(reply.conversation.owner_id),
    )


def _add_left_out(steps: list[Step], message: Message, nodes: dict) -> None:
    """Mark a message of the branch that was not sent, joining a run of the same kind."""
    state = "skipped" if message.role == Message.Role.ASSISTANT and not message.text_length else "dropped"
    if steps and steps[-1].state == state:
        steps[-1].nodes.append(nodes[message.id])
    else:
        steps.append(Step(state, nodes=[nodes[message.id]]))


def read(conversation: Conversation, page_number=1) -> Transcript:
    """One page of the conversation's transcript (the page number is clamped to the pages there are)."""
    skeleton = {
        m.id: m for m in Message.objects.filter(conversation=conversation)
        .only("id", "parent_id", "role", "status", "created_at").annotate(text_length=Length("content"))
    }
    order = reading_order(skeleton, conversation.current_leaf_id)
    nodes = {node.id: node for node in order}
    page = Paginator(order, PAGE_SIZE).get_page(page_number)
    wanted = {node.id for node in page.object_list}
    rows = _rows(conversation, wanted)
    referenced = set()
    for mid in wanted:
        request = rows[mid].request if mid in rows else None
        if isinstance(request, dict):
            for raw in request.get("message_ids") or []:
                try:
                    referenced.add(uuid.UUID(str(raw)))
                except ValueError:
                    pass
    if referenced - rows.keys():
        rows.update(_rows(conversation, referenced - rows.keys()))
    wire = _wire(conversation, [rows[i] for i in referenced if i in rows])
    entries = []
    for node in page.object_list:
        message = rows[node.id]
        message.conversation = conversation
        usage = getattr(message, "usage_record", None)
        seen = seen_by(message, skeleton, nodes, rows, wire) if message.role == Message.Role.ASSISTANT else None
        error_text = errors.describe(message.error_code, message.error_detail) if message.error_code else ""
        entries.append(Entry(node, message, usage, seen, error_text))
    tokens = Usage.objects.filter(conversation_id=conversation.id).aggregate(
        total=Sum("prompt_tokens") + Sum("completion_tokens"))["total"] or 0
    return Transcript(conversation, page, entries, len(skeleton), tokens)


def _wire(conversation: Conversation, sent: list[Message]) -> Callable[[Message], dict]:
    """`upstream_message` with the owner's stored images as chat/context.py sends them, each
    message made once per page however many replies sent it."""
    ids = {i for message in sent for i in images.attachment_ids(message.content_parts)}
    owned = ({a.id: a for a in Attachment.objects.filter(pk__in=ids, owner_id=conversation.owner_id)}
             if ids else {})
    made: dict = {}

    def wire(message: Message) -> dict:
        if message.id not in made:
            made[message.id] = upstream_message(message, owned)
        return made[message.id]

    return wire


def _rows(conversation: Conversation, ids) -> dict:
    if not ids:
        return {}
    return {m.id: m for m in Message.objects.filter(conversation=conversation, pk__in=ids)
            .select_related("usage_record")}
