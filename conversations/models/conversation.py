"""Conversations and their messages, owned by one member and stored as a tree.

Messages form a tree through `parent` so that regenerating a reply or editing
a question adds a sibling branch instead of rewriting history; the
conversation's `current_leaf` says which branch the member is looking at.
"""

import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex, OpClass
from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper
from django.utils import timezone


class ConversationQuerySet(models.QuerySet):
    def owned_by(self, user) -> "ConversationQuerySet":
        """Scope every lookup by its owner: the only door to a conversation."""
        if not user.is_authenticated:
            return self.none()
        # Checked in the database, so a member deactivated mid-session loses access at once.
        return self.filter(owner=user, owner__is_active=True)


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    class TitleSource(models.TextChoices):
        NONE = ""
        FIRST_WORDS = "first_words"  # the first question's start, until the model names it
        MODEL = "model"  # written by the model after the first reply
        MEMBER = "member"  # the member's own: never overwritten

    title = models.CharField(max_length=200, blank=True)
    title_source = models.CharField(max_length=16, blank=True, choices=TitleSource.choices)
    model = models.CharField(max_length=200)
    # Where `model` is served: a provider staff added, or null for the default (OPENAI_BASE_URL).
    provider = models.ForeignKey("conversations.Provider", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+")
    system_prompt = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    current_leaf = models.ForeignKey(
        "Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["owner", "-updated_at"], name="conv_owner_recent"),
            # The staff's list, newest activity first, across members.
            models.Index(fields=["-updated_at"], name="conv_recent"),
            # Staff search: trigrams of the upper-cased title serve Django's own `icontains`
            # (UPPER(title) LIKE UPPER('%…%')). Postgres only: the migration skips it elsewhere.
            GinIndex(OpClass(Upper("title"), name="gin_trgm_ops"), name="conv_title_trgm"),
        ]
        permissions = [
            # Staff with it read transcripts and export them in the admin, while
            # settings.STAFF_REVIEW_ENABLED is on (accounts/review.py).
            ("view_conversation_content", "Can read the messages of members' conversations"),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.id}"


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming"
        COMPLETE = "complete"
        STOPPED = "stopped"
        ERROR = "error"
        INTERRUPTED = "interrupted"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.CASCADE, related_name="children"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    # The text; for a message sent as content parts, the parts' text joined.
    content = models.TextField(blank=True)
    # The OpenAI content parts (text and image_url) when the member sent a list.
    content_parts = models.JSONField(null=True, blank=True)
    # A reply's reasoning ("thinking"), streamed apart from its answer; never sent upstream again.
    reasoning = models.TextField(blank=True)
    # The tokens of a reply with their probabilities, when logprobs were asked for.
    logprobs = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    model = models.CharField(max_length=200, blank=True)
    finish_reason = models.CharField(max_length=64, blank=True)
    usage = models.JSONField(null=True, blank=True)
    # Why a reply failed: a code of the protocol and what the words need (chat/errors.py
    # turns them into the member's language when shown). No English is stored.
    error_code = models.CharField(max_length=64, blank=True)
    error_detail = models.JSONField(null=True, blank=True)
    # What the model saw: model, parameters and the ids of the messages sent.
    request = models.JSONField(null=True, blank=True)
    # The tab's id for the frame that made this message (send, edit, regenerate):
    # a resent frame finds it instead of making a second one.
    client_id = models.UUIDField(null=True, blank=True)
    # A streaming reply whose lease has passed belongs to a process that died.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The run generating a streaming reply: its writes count only while the row is
    # still streaming and still this run's (never after a sweep marked it interrupted).
    run_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status="streaming"),
                name="one_streaming_reply_per_conversation",
            ),
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="one_message_per_client_id",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="msg_conv_created"),
            models.Index(
                fields=["lease_expires_at"],
                condition=Q(status="streaming"),
                name="msg_streaming_lease",
            ),
            # The staff's status column and filter: conversations with failed replies.
            models.Index(
                fields=["conversation", "status"],
                condition=Q(status__in=["error", "interrupted"]),
                name="msg_failed",
            ),
            # Search over message text (see Conversation's conv_title_trgm). Streaming replies are
            # left out: their text is rewritten every second, and each rewrite would add every
            # trigram of it to the index again. They join it with their final write.
            GinIndex(OpClass(Upper("content"), name="gin_trgm_ops"), name="msg_content_trgm",
                     condition=~Q(status="streaming")),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:60]}"

    @property
    def wire_content(self):
        """The content as the member sent it: a string, or the list of parts."""
        return self.content_parts if self.content_parts is not None else self.content


def lease_deadline():
    return timezone.now() + timedelta(seconds=settings.REPLY_LEASE_SECONDS)
