"""The audit log: who read which member's conversation, and when.

One row per staff reading of a transcript, per conversation exported, per
member's data exported and per retention purge. Rows are written in the same
transaction as the read they record, and are never changed or deleted: the
model refuses it, the admin offers no way to, and on Postgres (and SQLite) a
trigger added by the migration refuses UPDATE and DELETE for anyone else.

Who and whose are kept as ids and names, not foreign keys: the record must
outlive the member, the staff member and the conversation it names.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ImmutableAuditEntry(Exception):
    """An audit entry was about to be changed or deleted."""


class AuditQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise ImmutableAuditEntry("audit entries cannot be changed")

    def delete(self):
        raise ImmutableAuditEntry("audit entries cannot be deleted")

    def bulk_update(self, objs, fields, batch_size=None):
        raise ImmutableAuditEntry("audit entries cannot be changed")


class AuditEntry(models.Model):
    class Action(models.TextChoices):
        VIEW = "view", _("read the transcript")
        EXPORT_JSON = "export_json", _("exported as JSON")
        EXPORT_MARKDOWN = "export_md", _("exported as Markdown")
        MEMBER_EXPORT = "member_export", _("exported the member's data")
        PURGE = "purge", _("deleted past the retention period")

    at = models.DateTimeField(_("when"), default=timezone.now, editable=False)
    # The staff member (or, with no id, the operator command) that acted.
    actor_id = models.BigIntegerField(_("staff member's id"), null=True, blank=True, editable=False)
    actor_name = models.CharField(_("staff member"), max_length=150, editable=False)
    # The member whose data was read (none for a purge across members).
    owner_id = models.BigIntegerField(_("member's id"), null=True, blank=True, editable=False)
    owner_name = models.CharField(_("member"), max_length=150, blank=True, editable=False)
    conversation_id = models.UUIDField(_("conversation"), null=True, blank=True, editable=False)
    action = models.CharField(_("action"), max_length=32, choices=Action.choices, editable=False)
    # What else the action needs said: the transcript page read, how many conversations a purge took.
    detail = models.JSONField(_("detail"), default=dict, blank=True, editable=False)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("audit entry")
        verbose_name_plural = _("audit log")
        indexes = [
            models.Index(fields=["-at"], name="audit_recent"),
            models.Index(fields=["owner_id", "-at"], name="audit_owner_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.action}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ImmutableAuditEntry("audit entries cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ImmutableAuditEntry("audit entries cannot be deleted")

    @classmethod
    def record(cls, action: str, *, actor=None, actor_name: str = "", owner=None,
               conversation_id: uuid.UUID | None = None, detail: dict | None = None) -> AuditEntry:
        """Write one entry now (call it inside the transaction of the read it records)."""
        return cls.objects.create(
            action=action,
            actor_id=actor.pk if actor is not None else None,
            actor_name=actor.get_username() if actor is not None else actor_name,
            owner_id=owner.pk if owner is not None else None,
            owner_name=owner.get_username() if owner is not None else "",
            conversation_id=conversation_id,
            detail=detail or {},
        )
