"""Presets: named sets of model, system prompt and parameters a new conversation starts from.

A member keeps their own; a preset without an owner is the team's, published
by staff in the admin and read-only to members.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class PresetQuerySet(models.QuerySet):
    def visible_to(self, member) -> PresetQuerySet:
        """The member's own presets and the team's; never another member's."""
        if not member.is_authenticated:
            return self.none()
        return self.filter(Q(owner=member) | Q(owner__isnull=True))


class Preset(models.Model):
    # A UUID like conversations: a member's own presets are private, and ids travel in URLs.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null: a team preset, which staff publish in the admin.
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="presets", editable=False)
    name = models.CharField(_("name"), max_length=100)
    # Blank: the member's default model, else the team's.
    model = models.CharField(_("model"), max_length=200, blank=True)
    # Where `model` is served: a provider staff added, or null for the default (OPENAI_BASE_URL).
    provider = models.ForeignKey("conversations.Provider", null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="+", verbose_name=_("provider"))
    system_prompt = models.TextField(_("system prompt"), blank=True)
    # Chat Completions parameters, validated by chat/params.clean_params.
    params = models.JSONField(_("parameters"), default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = PresetQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = _("preset")
        verbose_name_plural = _("presets")
        constraints = [
            # One name per member, and one per team: a list where two entries look alike helps nobody.
            models.UniqueConstraint(fields=["owner", "name"], name="one_preset_name_per_member"),
            models.UniqueConstraint(fields=["name"], condition=Q(owner__isnull=True), name="one_team_preset_name"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_team(self) -> bool:
        return self.owner_id is None
