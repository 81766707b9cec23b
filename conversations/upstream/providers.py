"""Providers: where each conversation's model is served, with which key, and who may use it.

The default provider is the environment's (OPENAI_BASE_URL, OPENAI_API_KEY):
every model it lists is open to every member, as before providers existed.
Providers staff add in the admin serve only the models staff enabled, each
open to everyone or to members of chosen groups.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.cache import cache
from django.db.models import Q

from conversations.models import Provider, ProviderModel, memo
from conversations.models.memo import Memo
from conversations.upstream.catalogue import list_models
from conversations.upstream.client import Endpoint, UpstreamError

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_LENGTH = 8192
# Context lengths of known model families, first match wins (a staff member can change each).
KNOWN_CONTEXT_LENGTHS = [
    (r"gpt-4\.1", 1_047_576), (r"gpt-4o", 128_000), (r"gpt-4-turbo", 128_000), (r"gpt-4-32k", 32_768),
    (r"gpt-4", 8_192), (r"gpt-3\.5-turbo", 16_385), (r"^o[134](-|$)", 200_000), (r"gpt-5", 400_000),
    (r"claude", 200_000), (r"gemini", 1_000_000), (r"deepseek", 65_536), (r"qwen3", 32_768),
    (r"qwen2\.5", 32_768), (r"qwen", 32_768), (r"llama-?3\.[123]", 128_000), (r"llama-?3", 8_192),
    (r"mixtral", 32_768), (r"mistral", 32_768), (r"gemma-?3", 128_000), (r"gemma", 8_192),
    (r"phi-?4", 16_384), (r"phi-?3", 128_000),
]
# Model names whose families take image parts, and families known to take text only. A name
# in neither (a local or new model) is given the benefit of the doubt: its server answers.
IMAGE_FAMILIES = re.compile(r"gpt-4o|gpt-4\.1|gpt-4-turbo|gpt-5|^o[134]|claude-3|gemini|llava|vision|-vl|pixtral|gemma-?3",
                            re.IGNORECASE)
TEXT_ONLY_FAMILIES = re.compile(r"gpt-3\.5|^gpt-4(-\d|$)|llama|mistral|mixtral|qwen|deepseek|phi|gemma", re.IGNORECASE)


def context_length_for(model: str) -> int:
    name = model.lower()
    return next((tokens for pattern, tokens in KNOWN_CONTEXT_LENGTHS if re.search(pattern, name)),
                DEFAULT_CONTEXT_LENGTH)


def takes_images(model: str) -> bool:
    return bool(IMAGE_FAMILIES.search(model)) or not TEXT_ONLY_FAMILIES.search(model)


def endpoint_for(provider: Provider | None) -> Endpoint:
    """Where requests for a conversation with this provider go (None: the default provider)."""
    if provider is None:
        return Endpoint.default()
    return Endpoint(provider.base_url.rstrip("/"), provider.api_key, provider=provider.name,
                    allow_private=provider.allow_private_address)


@dataclass(frozen=True)
class Choice:
    """A model a member may pick: its id on its provider, and what the page shows of it."""

    model: str
    provider: Provider | None
    context_length: int
    images: bool

    def as_dict(self) -> dict:
        return {"id": self.model, "provider": self.provider.name if self.provider else "",
                "context_length": self.context_length, "images": self.images}


def _enabled_for(member):
    """The enabled models of enabled providers this member may use (no groups: everyone)."""
    rows = ProviderModel.objects.filter(enabled=True, provider__enabled=True).select_related("provider")
    return rows.filter(Q(groups__isnull=True) | Q(groups__in=member.groups.all())).distinct()


def default_models() -> tuple[list[str], UpstreamError | None]:
    """What the default provider lists, cached: a slow or down server costs one bounded wait per
    period, and the default model is offered whatever it says. Also the error, if it failed."""
    endpoint = Endpoint.default()
    key = "models:" + hashlib.sha256(f"{endpoint.base_url}\0{endpoint.api_key}".encode()).hexdigest()[:24]
    cached = cache.get(key)
    if cached is None:
        try:
            cached = {"names": async_to_sync(list_models)(endpoint), "error": None}
            cache.set(key, cached, settings.MODEL_LIST_CACHE_SECONDS)
        except UpstreamError as error:
            log.info("the default model server's list is unavailable (%s); offering the default model", error)
            cached = {"names": [], "error": {"code": error.code, "detail": error.detail}}
            cache.set(key, cached, 30)
    names = list(cached["names"])
    if settings.DEFAULT_MODEL not in names:
        names.insert(0, settings.DEFAULT_MODEL)
    failure = cached["error"]
    return names, (UpstreamError(failure["code"], **failure["detail"]) if failure else None)


def choices_for(member) -> list[Choice]:
    """Every model the member may use: the providers' enabled ones, then the default provider's."""
    choices = [Choice(row.name, row.provider, row.context_length, row.supports_images) for row in _enabled_for(member)]
    names, _error = default_models()
    choices += [Choice(name, None, context_length_for(name), takes_images(name)) for name in names]
    return choices


def resolve(member, model: str, provider: Provider | None = None) -> Choice | None:
    """The member's choice of `model` (on `provider`, or wherever it is served), or None if not allowed.

    Without a provider, a model a provider serves to this member is taken from it; a
    model providers serve only to others is refused; any other name goes to the default
    provider, as before providers existed. The enabled models are read once per
    `MEMO_SECONDS` per process (models/memo.py); the member's groups only when a row
    for this model is kept for some groups. Usually no query at all.
    """
    rows = [row for row in _enabled_models().get(model, ())
            if provider is None or row.model.provider_id == provider.pk]
    groups = _group_ids(member) if any(row.group_ids for row in rows) else frozenset()
    allowed = next((row.model for row in rows if not row.group_ids or row.group_ids & groups), None)
    if allowed is not None:
        return Choice(allowed.name, allowed.provider, allowed.context_length, allowed.supports_images)
    if rows or provider is not None:
        return None  # served only to other members, or no longer enabled on its provider
    return Choice(model, None, context_length_for(model), takes_images(model))


@dataclass(frozen=True)
class _Enabled:
    model: ProviderModel
    group_ids: frozenset[int]  # empty: everyone


_enabled = Memo("providers.enabled")


def _enabled_models() -> dict[str, list[_Enabled]]:
    """Every enabled model of an enabled provider, by name, in provider-name order (one query per period)."""

    def read() -> dict[str, list[_Enabled]]:
        through = ProviderModel.groups.through
        rows = (ProviderModel.objects.filter(enabled=True, provider__enabled=True)
                .select_related("provider").order_by("provider__name", "pk"))
        groups: dict[int, set[int]] = {}
        for model_id, group_id in through.objects.filter(providermodel__in=rows).values_list("providermodel_id",
                                                                                             "group_id"):
            groups.setdefault(model_id, set()).add(group_id)
        by_name: dict[str, list[_Enabled]] = {}
        for row in rows:
            by_name.setdefault(row.name, []).append(_Enabled(row, frozenset(groups.get(row.pk, ()))))
        return by_name

    return _enabled.get("all", read)


def _group_ids(member) -> frozenset[int]:
    return frozenset(member.groups.values_list("pk", flat=True))


def refresh_models(provider: Provider) -> tuple[int, int]:
    """Ask the provider which models it serves; add the new ones (disabled, with family defaults).

    Returns (added, known). Raises UpstreamError when the provider cannot be asked.
    """
    names = async_to_sync(list_models)(endpoint_for(provider))
    known = set(provider.models.values_list("name", flat=True))
    new = [ProviderModel(provider=provider, name=name, enabled=False, context_length=context_length_for(name),
                         supports_images=takes_images(name)) for name in names if name not in known]
    ProviderModel.objects.bulk_create(new)  # sends no signals
    memo.changed()
    return len(new), len(known)
