"""Members as staff manage them, and invite links.

Staff create members and set their passwords here (Django's user admin on
the project's own model). Deactivating a member, on the change page or with
the bulk action, cuts their open sockets at once (accounts/sessions.py hears
the save, and the members' own queryset announces the bulk update). Only
superusers grant staff rights, permissions or superuser status, or touch a
superuser's account: staff who manage people cannot make themselves more.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.urls import reverse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from conversations.accounts import invites
from conversations.models import Invite, Member

GRANTING_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")


@admin.register(Member)
class MemberAdmin(UserAdmin):
    list_display = ("username", "first_name", "last_name", "email", "is_active", "is_staff", "is_superuser",
                    "last_login")
    fieldsets = UserAdmin.fieldsets + (
        (_("Preferences"), {"fields": ("language", "theme", "default_model")}),
    )
    actions = ["deactivate", "activate"]

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and not request.user.is_superuser:
            readonly += GRANTING_FIELDS
        return readonly

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def _others(self, request, queryset):
        """The chosen members, less the staff member acting, and less superusers unless one acts."""
        queryset = queryset.exclude(pk=request.user.pk)
        if not request.user.is_superuser:
            queryset = queryset.exclude(is_superuser=True)
        return queryset

    @admin.action(permissions=["change"], description=_("Deactivate selected members (signs them out at once)"))
    def deactivate(self, request, queryset):
        # Member.objects' update announces the change: every open socket of theirs is cut now.
        count = self._others(request, queryset).filter(is_active=True).update(is_active=False)
        self.message_user(request, ngettext("%(count)d member deactivated.", "%(count)d members deactivated.",
                                            count) % {"count": count}, messages.SUCCESS)

    @admin.action(permissions=["change"], description=_("Activate selected members"))
    def activate(self, request, queryset):
        count = self._others(request, queryset).filter(is_active=False).update(is_active=True)
        self.message_user(request, ngettext("%(count)d member activated.", "%(count)d members activated.",
                                            count) % {"count": count}, messages.SUCCESS)


class InviteForm(forms.ModelForm):
    days = forms.IntegerField(
        label=_("valid for (days)"), min_value=1, max_value=365, initial=lambda: settings.INVITE_DAYS,
    )

    class Meta:
        model = Invite
        fields = ("note",)


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    form = InviteForm
    fields = ("note", "days")
    list_display = ("__str__", "state", "created_by", "created_at", "expires_at", "used_by", "used_at")
    list_select_related = ("created_by", "used_by")
    actions = ["revoke"]

    def has_change_permission(self, request, obj=None):
        return False  # an invite is made, used, revoked or left to expire; never edited

    def save_model(self, request, obj, form, change):
        invite, token = invites.create_invite(request.user, note=obj.note, days=form.cleaned_data["days"])
        obj.pk, obj.token = invite.pk, token

    def response_add(self, request, obj, post_url_continue=None):
        link = request.build_absolute_uri(reverse("invite", args=[obj.token]))
        self.message_user(request, gettext(
            "Invite link, shown this once (only a hash of it is stored): %(link)s — it works once, "
            "until it expires.") % {"link": link}, messages.SUCCESS)
        return self.response_post_save_add(request, obj)

    @admin.display(description=_("state"))
    def state(self, obj):
        return {"used": gettext("used"), "expired": gettext("expired or revoked"), "open": gettext("open")}[obj.state]

    @admin.action(permissions=["add"], description=_("Revoke selected invite links"))
    def revoke(self, request, queryset):
        count = invites.revoke(queryset)
        self.message_user(request, ngettext("%(count)d invite revoked.", "%(count)d invites revoked.",
                                            count) % {"count": count}, messages.SUCCESS)
