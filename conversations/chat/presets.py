"""Presets: a member's own and the team's, and where a new conversation starts from.

A member reads their own presets and the team's and changes only their own;
another member's are not found. Team presets are changed by staff in the admin.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from conversations.models import Member, Preset, Provider
from conversations.upstream import providers

# A member's own presets; more is a script, not a person.
MAX_OWN_PRESETS = 200
EDITABLE = ("name", "model", "provider", "system_prompt", "params")


class PresetNotFound(Exception):
    """No such preset for this member (also: another member's)."""


class ReadOnly(Exception):
    """A team preset: members read it, staff change it in the admin."""


class PresetInvalid(ValueError):
    """A change the rows refuse: `field` names what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def visible(member):
    """The member's own presets and the team's, own first, each by name."""
    return (Preset.objects.visible_to(member).select_related("provider")
            .order_by("owner_id", "name"))  # NULL (the team's) sorts last in Postgres


def get_preset(member, preset_id, *, own: bool = False) -> Preset:
    """One of the member's presets or a team one; `own`: the member's own, or ReadOnly for a team one."""
    try:
        preset_id = preset_id if isinstance(preset_id, uuid.UUID) else uuid.UUID(str(preset_id))
    except ValueError:
        raise PresetNotFound from None
    preset = Preset.objects.visible_to(member).select_related("provider").filter(pk=preset_id).first()
    if preset is None:
        raise PresetNotFound
    if own and preset.is_team:
        raise ReadOnly
    return preset


def preset_dict(preset: Preset) -> dict:
    return {
        "id": str(preset.id),
        "name": preset.name,
        "model": preset.model,
        "provider": preset.provider.name if preset.provider_id else "",
        "system_prompt": preset.system_prompt,
        "params": preset.params,
        "team": preset.is_team,
        "created_at": preset.created_at.isoformat(),
        "updated_at": preset.updated_at.isoformat(),
    }


def create_preset(member, *, name: str, model: str = "", provider: Provider | None = None,
                  system_prompt: str = "", params: dict | None = None) -> Preset:
    """A new preset of the member's own (fields validated by the caller)."""
    with transaction.atomic():
        # The member's row lock serialises their creations, so the count below cannot be raced past.
        Member.objects.select_for_update().filter(pk=member.pk).first()
        if Preset.objects.filter(owner=member).count() >= MAX_OWN_PRESETS:
            raise PresetInvalid("name", _("You have %(limit)s presets already; delete one first.")
                                % {"limit": MAX_OWN_PRESETS})
        preset = Preset(owner=member, name=name, model=model, provider=provider if model else None,
                        system_prompt=system_prompt, params=params or {})
        _save(preset)
    return preset


def update_preset(member, preset_id, changes: dict) -> Preset:
    """Apply validated `changes` (any of EDITABLE) to one of the member's own presets."""
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        preset = get_preset(member, preset_id, own=True)
        for name, value in changes.items():
            setattr(preset, name, value)
        if not preset.model:
            preset.provider = None
        preset.updated_at = timezone.now()
        _save(preset)
    return preset


def delete_preset(member, preset_id) -> None:
    """Delete one of the member's own presets; a member whose default it was has none."""
    with transaction.atomic():
        get_preset(member, preset_id, own=True).delete()


def _save(preset: Preset) -> None:
    try:
        with transaction.atomic():
            preset.save()
    except IntegrityError:  # the one constraint a valid preset can meet: its name
        raise PresetInvalid("name", _("You have a preset with this name already.")) from None


@dataclass(frozen=True)
class Start:
    """What a new conversation starts with."""

    model: str
    provider: Provider | None
    system_prompt: str
    params: dict


def default_preset(member) -> Preset | None:
    """The member's default preset, if they chose one and may still read it."""
    if not member.default_preset_id:
        return None
    return Preset.objects.visible_to(member).select_related("provider").filter(pk=member.default_preset_id).first()


def preset_model(member, preset: Preset) -> providers.Choice | None:
    """The preset's model as this member may use it; None when it has none or the member may not."""
    if not preset.model:
        return None
    return providers.resolve(member, preset.model, preset.provider)


def starting_point(member, preset: Preset | None, *, with_model: bool = True) -> Start:
    """Where a new conversation starts: the preset (else the member's default preset) for the
    prompt and parameters; its model, else the member's default model, else the team's.

    A preset's model the member may not use (a group's model, a provider since disabled)
    falls through to the default model: the page checks an explicit preset before this.
    `with_model=False`: the caller has its model (the answer's is then blank).
    """
    if preset is None:
        preset = default_preset(member)
    if not with_model:
        return Start("", None, preset.system_prompt if preset else "", dict(preset.params) if preset else {})
    choice = preset_model(member, preset) if preset is not None else None
    if choice is not None:
        model, provider = choice.model, choice.provider
    else:
        model, provider = member.default_model or settings.DEFAULT_MODEL, None
    if preset is None:
        return Start(model, provider, "", {})
    return Start(model, provider, preset.system_prompt, dict(preset.params))
