"""The audit log in the admin: superusers read it; nobody adds, changes or deletes an entry."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from conversations.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "actor_name", "action", "owner_name", "conversation", "detail")
    list_filter = ("action", "at", "actor_name")
    search_fields = ("actor_name", "owner_name")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # the log only grows: no count per filter choice
    list_per_page = 100
    fields = ("at", "actor_name", "actor_id", "action", "owner_name", "owner_id", "conversation_id", "detail")

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("conversation"))
    def conversation(self, obj):
        if obj.conversation_id is None:
            return "—"
        url = reverse("admin:conversations_conversation_transcript", args=[obj.conversation_id])
        return format_html('<a href="{}">{}</a>', url, str(obj.conversation_id))
