"""Images members attach to their messages, checked and re-encoded, readable by their owner only."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def _path(attachment: Attachment, filename: str) -> str:
    # Random names: a file's path says nothing of its owner or its original name.
    return f"attachments/{timezone.now():%Y/%m}/{attachment.id.hex}{filename[filename.rfind('.'):]}"


class Attachment(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments")
    file = models.FileField(upload_to=_path)
    content_type = models.CharField(max_length=32)  # image/png or image/jpeg: what it was re-encoded as
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size = models.PositiveIntegerField()  # bytes, as stored
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [models.Index(fields=["owner", "-created_at"], name="attachment_owner_recent")]

    def __str__(self) -> str:
        return f"{self.content_type} {self.width}×{self.height}"

    @property
    def url(self) -> str:
        """How messages refer to it (and the page fetches it): the owner-only API address."""
        return f"/api/uploads/{self.id}"
