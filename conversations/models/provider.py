"""Model servers staff add in the admin, the models they enable, and who may use them.

The server configured by OPENAI_BASE_URL stays: it is the default provider,
not a row. A conversation without a provider uses it.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations.models import secrets


class Provider(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    base_url = models.CharField(_("base URL"), max_length=500,
                                help_text=_("The OpenAI-compatible API root, e.g. https://api.openai.com/v1"))
    # The API key, encrypted (models/secrets.py); write-only in the admin, never shown again.
    api_key_encrypted = models.TextField(blank=True, editable=False)
    allow_private_address = models.BooleanField(
        _("allow a private address"), default=False,
        help_text=_("Let the server connect to this provider on a loopback or private network address "
                    "(a model server on your own network). Leave off for anything on the internet."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        return secrets.decrypt(self.api_key_encrypted)

    def set_api_key(self, plain: str) -> None:
        self.api_key_encrypted = secrets.encrypt(plain)

    @property
    def has_api_key(self) -> bool:
        return bool(self.api_key_encrypted)


class ProviderModel(models.Model):
    """A model one provider serves, as staff enabled it for members."""

    provider = models.ForeignKey(Provider, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(_("model"), max_length=200, help_text=_("The model's id on the provider."))
    enabled = models.BooleanField(_("enabled"), default=False)
    context_length = models.PositiveIntegerField(_("context length (tokens)"))
    supports_images = models.BooleanField(_("takes images"), default=False)
    # Empty: every member may use it. Otherwise only members of these groups.
    groups = models.ManyToManyField(Group, blank=True, related_name="+", verbose_name=_("only for these groups"))

    class Meta:
        ordering = ["provider__name", "name"]
        constraints = [models.UniqueConstraint(fields=["provider", "name"], name="one_row_per_provider_model")]

    def __str__(self) -> str:
        return f"{self.provider.name} / {self.name}"


class Quota(models.Model):
    """Limits on what a member spends; the row without a member is the team's default.

    Blank: no limit. A member's own row, where it sets a limit, wins over the default.
    """

    member = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                  related_name="quota")
    tokens_per_day = models.PositiveBigIntegerField(_("tokens per day"), null=True, blank=True)
    tokens_per_month = models.PositiveBigIntegerField(_("tokens per month"), null=True, blank=True)
    requests_per_minute = models.PositiveIntegerField(_("requests per minute"), null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["member"], condition=models.Q(member__isnull=True),
                                               name="one_team_default_quota")]

    def __str__(self) -> str:
        return str(self.member) if self.member_id else str(_("team default"))
