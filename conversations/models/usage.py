"""What each reply cost: one row per reply, whatever way it ended.

Kept apart from the message so that deleting a conversation never deletes
what it spent (quotas and the usage page count it). Written in the same
transaction as the reply's final state (chat/replies.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Usage(models.Model):
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage")
    reply = models.OneToOneField(
        "conversations.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_record"
    )
    conversation_id = models.UUIDField(null=True, blank=True)  # kept when the conversation is deleted
    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=100, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    # True when the upstream reported no usage and the counts are our estimate (chat/tokens.py).
    estimated = models.BooleanField(default=False)
    status = models.CharField(max_length=16)  # how the reply ended: complete, stopped, error, interrupted
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)  # request sent -> first token
    duration_ms = models.PositiveIntegerField(null=True, blank=True)  # request sent -> end
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "usage"
        indexes = [
            models.Index(fields=["member", "-created_at"], name="usage_member_recent"),
            models.Index(fields=["conversation_id"], name="usage_conversation"),  # tokens per conversation
        ]

    def __str__(self) -> str:
        return f"{self.model}: {self.prompt_tokens}+{self.completion_tokens}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
