"""Invite links: single-use, expiring, made by staff.

Only a hash of the link's token is stored, so reading the table (a backup,
a staff member's screen) gives no usable link: the link is shown once, when
it is made (accounts/invites.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class InviteQuerySet(models.QuerySet):
    def usable(self) -> InviteQuerySet:
        """Not used yet and not expired (or revoked: a revoked invite expires at once)."""
        return self.filter(used_at__isnull=True, expires_at__gt=timezone.now())


class Invite(models.Model):
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    note = models.CharField(_("note"), max_length=200, blank=True, help_text=_("Who it is for; shown only to staff."))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(editable=False)
    used_at = models.DateTimeField(null=True, blank=True, editable=False)
    used_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    objects = InviteQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("invite link")
        verbose_name_plural = _("invite links")

    def __str__(self) -> str:
        return self.note or f"Invite {self.pk}"

    @property
    def state(self) -> str:
        if self.used_at is not None:
            return "used"
        if self.expires_at <= timezone.now():
            return "expired"
        return "open"
