"""The member: Django's user under our own model, so it can grow with the product.

A project's own user model is Django's advice for a new project: changing
AUTH_USER_MODEL once there is data is a migration nobody wants. Members'
settings (language, theme, default model) and quotas hang off it.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models, transaction
from django.dispatch import Signal
from django.utils.translation import gettext_lazy as _

# Sent inside the transaction of a bulk update that may end members' sign-in
# (deactivation, a new password): `ids`, the members it touched. accounts/
# tells their sockets once the transaction commits (a row's save() has post_save).
members_changed = Signal()

# Fields whose change must reach a member's open sockets at once.
SIGN_IN_FIELDS = frozenset({"is_active", "password"})


def opaque_member_id(member_id) -> str:
    """What the model server is told as `user`: stable for the member, and says nothing of them
    (an HMAC of the id under SECRET_KEY: not the name, not the email, not guessable)."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"member:{member_id}".encode(), hashlib.sha256)
    return "member-" + digest.hexdigest()[:24]


class MemberQuerySet(models.QuerySet):
    def update(self, **kwargs) -> int:
        """QuerySet.update, which also announces a change of sign-in fields.

        Django sends no signal for a bulk update, so deactivating members with
        `Member.objects.filter(...).update(is_active=False)` would leave their
        sockets open until their next frame.
        """
        if not SIGN_IN_FIELDS & kwargs.keys():
            return super().update(**kwargs)
        with transaction.atomic(using=self.db):
            ids = list(self.values_list("pk", flat=True))
            count = super().update(**kwargs)
            if ids:
                members_changed.send(sender=self.model, ids=ids)
        return count


class MemberManager(UserManager.from_queryset(MemberQuerySet)):
    pass


class Member(AbstractUser):
    class Theme(models.TextChoices):
        SYSTEM = "", _("Follow the system")
        LIGHT = "light", _("Light")
        DARK = "dark", _("Dark")

    # Blank: follow the browser (Accept-Language). Otherwise one of settings.LANGUAGES.
    language = models.CharField(max_length=16, blank=True)
    theme = models.CharField(max_length=8, blank=True, choices=Theme.choices)
    # The model new conversations start with; blank: the team's default (settings.DEFAULT_MODEL).
    default_model = models.CharField(max_length=200, blank=True)
    # The preset new conversations start from (its own or a team one); null: none, the default model.
    default_preset = models.ForeignKey("conversations.Preset", null=True, blank=True, on_delete=models.SET_NULL,
                                       related_name="+")

    objects = MemberManager()

    @property
    def opaque_id(self) -> str:
        return opaque_member_id(self.pk)

    @property
    def chosen_language(self) -> str | None:
        """The language the member chose on their account page, if this site speaks it."""
        return self.language if self.language in dict(settings.LANGUAGES) else None

    class Meta(AbstractUser.Meta):
        verbose_name = "member"
        verbose_name_plural = "members"
        swappable = "AUTH_USER_MODEL"
