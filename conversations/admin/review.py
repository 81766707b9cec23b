"""Staff review: conversations with their messages, read-only transcripts."""

from django.contrib import admin

from conversations.models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fk_name = "conversation"
    extra = 0
    can_delete = False
    fields = ("created_at", "role", "status", "content", "model", "finish_reason", "error_code", "error_detail", "request")
    readonly_fields = fields
    ordering = ("created_at",)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "model", "updated_at")
    list_filter = ("model", "updated_at")
    search_fields = ("title", "owner__username", "messages__content")
    list_select_related = ("owner",)
    readonly_fields = ("id", "owner", "current_leaf", "created_at", "updated_at")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "conversation", "role", "status", "model", "created_at")
    list_filter = ("role", "status", "model")
    search_fields = ("content", "conversation__title")
    list_select_related = ("conversation",)
    readonly_fields = [f.name for f in Message._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
