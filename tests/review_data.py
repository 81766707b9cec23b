"""Conversations for the staff review tests, written straight to the database: a tree with a
regenerated reply, failures and usage rows, and a way to read the transcript's parts back."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from html.parser import HTMLParser

from django.utils import timezone

from conversations.models import Conversation, Message, Usage


@dataclass
class Tree:
    conversation: Conversation
    q1: Message
    r1: Message
    q2: Message
    r2a: Message  # failed (rate limited), then regenerated as r2b
    r2b: Message
    q3: Message
    r3: Message  # interrupted; the current leaf


def reply(conversation, parent, text, *, at, status="complete", tokens=(10, 5), ttft=None, duration=None,
          **fields) -> Message:
    message = Message.objects.create(
        conversation=conversation, parent=parent, role="assistant", content=text, status=status,
        model=conversation.model, created_at=at, updated_at=at,
        usage={"prompt_tokens": tokens[0], "completion_tokens": tokens[1], "total_tokens": sum(tokens)},
        request={"model": conversation.model, "params": conversation.params,
                 "system_prompt": conversation.system_prompt,
                 "message_ids": [str(m.id) for m in _path(parent)], "dropped_messages": 0,
                 "estimated_tokens": tokens[0]},
        **fields,
    )
    Usage.objects.create(member=conversation.owner, reply=message, conversation_id=conversation.id,
                         model=conversation.model, prompt_tokens=tokens[0], completion_tokens=tokens[1],
                         status=status, ttft_ms=ttft, duration_ms=duration, estimated=status == "interrupted")
    return message


def question(conversation, parent, text, *, at) -> Message:
    return Message.objects.create(conversation=conversation, parent=parent, role="user", content=text,
                                  created_at=at, updated_at=at)


def _path(message) -> list[Message]:
    path = []
    while message is not None:
        path.append(message)
        message = message.parent
    return path[::-1]


def make_tree(owner, *, title="Quarterly numbers", model="gpt-tree", days_ago: int = 0) -> Tree:
    start = timezone.now() - timedelta(days=days_ago, minutes=10)
    conversation = Conversation.objects.create(owner=owner, title=title, model=model,
                                               system_prompt="Answer in French.", params={"temperature": 0.3})
    at = (start + timedelta(seconds=i) for i in range(100))
    q1 = question(conversation, None, "How were the quarterly numbers?", at=next(at))
    r1 = reply(conversation, q1, "Les chiffres sont bons.", at=next(at), tokens=(30, 7), ttft=120, duration=900,
               finish_reason="stop")
    q2 = question(conversation, r1, "And the marmalade budget?", at=next(at))
    r2a = reply(conversation, q2, "", at=next(at), status="error", tokens=(40, 0), duration=300,
                error_code="upstream_rate_limited", error_detail={"reason": "retry_after", "retry_after": 7})
    r2b = reply(conversation, q2, "Le budget de marmelade est serré.", at=next(at), tokens=(40, 9), ttft=95,
                duration=700, finish_reason="length")
    q3 = question(conversation, r2b, "Why so tight?", at=next(at))
    r3 = reply(conversation, q3, "Parce que", at=next(at), status="interrupted", tokens=(50, 2),
               error_code="interrupted", error_detail={"reason": "process_died"})
    conversation.current_leaf = r3
    conversation.updated_at = start + timedelta(minutes=1)
    conversation.save()
    return Tree(conversation, q1, r1, q2, r2a, r2b, q3, r3)


@dataclass
class SentMessage:
    role: str
    message_id: str | None
    parts: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class SeenBlock:
    reply_id: str
    sent: list[SentMessage] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)  # "dropped"/"skipped" -> how many


class TranscriptReader(HTMLParser):
    """The transcript page read back: each reply's "what the model saw", part by part."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.blocks: dict[str, SeenBlock] = {}
        self.messages: dict[str, dict] = {}  # li#m-<id> -> its classes
        self._block: SeenBlock | None = None
        self._part: tuple[str, list[str]] | None = None
        self._in_code = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "li" and (attrs.get("id") or "").startswith("m-"):
            self.messages[attrs["id"][2:]] = {"classes": classes}
        if tag == "details" and "data-seen-for" in attrs:
            self._block = SeenBlock(attrs["data-seen-for"])
            self.blocks[self._block.reply_id] = self._block
        elif self._block is not None and tag == "li" and "sent" in classes:
            self._block.sent.append(SentMessage(attrs["data-role"], attrs.get("data-message")))
        elif self._block is not None and tag == "li" and "left-out" in classes:
            state = "dropped" if "dropped" in classes else "skipped"
            self._block.left_out[state] = self._block.left_out.get(state, 0) + int(attrs["data-left-out"])
        elif self._block is not None and attrs.get("data-part") == "inline":
            self._block.sent[-1].parts.append(("inline", attrs["data-sha256"]))
        elif self._block is not None and "data-part" in attrs:
            self._part = (attrs["data-part"], [])
        elif self._part is not None and tag == "code":
            self._in_code = True

    def handle_endtag(self, tag):
        if tag == "details":
            self._block = None
        elif tag == "code":
            self._in_code = False
        elif self._part is not None and tag in ("div", "pre"):
            kind, chunks = self._part
            self._block.sent[-1].parts.append((kind, "".join(chunks)))
            self._part = None

    def handle_data(self, data):
        if self._part is not None and (self._part[0] != "image" or self._in_code):
            self._part[1].append(data)


def as_parts(content) -> list[tuple[str, str]]:
    """A message's content as the transcript shows it: its text, or each part (an image sent
    inline by the SHA-256 of its data: URL)."""
    if isinstance(content, str):
        return [("text", content)]
    shown = []
    for part in content:
        if part["type"] == "text":
            shown.append(("text", part["text"]))
        elif part["image_url"]["url"].startswith("data:"):
            shown.append(("inline", hashlib.sha256(part["image_url"]["url"].encode()).hexdigest()))
        else:
            shown.append(("image", part["image_url"]["url"]))
    return shown
