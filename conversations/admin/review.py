"""Staff review: the conversation list, read-only transcripts and exports, every reading audited.

Metadata (owner, model, counts, tokens, dates, status) is for any staff member
who may view conversations. Content (titles, messages, what the model saw)
needs `accounts.review.may_read_content`: the switch and the permission. The
transcript and the exports are the only doors to content here, and each
opening writes an audit entry in the transaction that reads it. Nothing of a
member's is editable: there is no add, change or delete, and the change page
is the transcript.
"""

from __future__ import annotations

import json
import uuid

from django.contrib import admin
from django.contrib.admin import RelatedOnlyFieldListFilter, SimpleListFilter
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import BooleanField, Count, Exists, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import slugify, smart_split, unescape_string_literal
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from conversations.accounts.review import may_read_content, refusal
from conversations.chat import exports, transcripts
from conversations.models import AuditEntry, Conversation, Message, Usage


class StatusFilter(SimpleListFilter):
    title = _("status")
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [
            ("errors", _("has errors")),
            ("interrupted", _("interrupted")),
            ("failed", _("has errors or interrupted")),
            ("clean", _("no errors, not interrupted")),
        ]

    def queryset(self, request, queryset):
        match self.value():
            case "errors":
                return queryset.filter(has_errors=True)
            case "interrupted":
                return queryset.filter(has_interrupted=True)
            case "failed":
                return queryset.filter(Q(has_errors=True) | Q(has_interrupted=True))
            case "clean":
                return queryset.filter(has_errors=False, has_interrupted=False)
        return queryset


class LastActivityFilter(admin.DateFieldListFilter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = _("last activity")


def search_terms(search_term: str) -> list[str]:
    """The words and "quoted phrases" of a search, as Django's admin splits them."""
    terms = []
    for bit in smart_split(search_term.replace("\x00", "")):  # Postgres refuses NUL
        if bit.startswith(('"', "'")) and bit[0] == bit[-1] and len(bit) > 1:
            bit = unescape_string_literal(bit)
        if bit.strip():
            terms.append(bit)
    return terms


def content_search(queryset, terms: list[str]):
    """Conversations whose title or any message contains every term (case-insensitively).

    Each term is Django's `icontains` (UPPER(col) LIKE UPPER('%term%')), which the
    trigram indexes on UPPER(title) and UPPER(content) serve (migration 0008_review_audit_search). The ids
    matching a term are one subquery, the titles' UNION ALL the messages', which
    Postgres joins as a semi-join: no row per message, no DISTINCT, and never the
    plan an OR of the two invites, which re-scans the messages for each conversation
    once a common term's matches outgrow work_mem (docs/benchmarks.md, "Staff search").
    """
    for term in terms:
        titles = Conversation.objects.filter(title__icontains=term).order_by().values("pk")
        # Finished messages only: the index leaves streaming replies out (models/conversation.py).
        texts = (Message.objects.filter(content__icontains=term).exclude(status=Message.Status.STREAMING)
                 .order_by().values("conversation_id"))
        queryset = queryset.filter(pk__in=titles.union(texts, all=True))
    return queryset


def metadata_search(queryset, terms: list[str]):
    """Without content access: a member's name or a conversation's id."""
    for term in terms:
        matching = Q(owner__username__icontains=term)
        try:
            matching |= Q(pk=uuid.UUID(term))
        except ValueError:
            pass
        queryset = queryset.filter(matching)
    return queryset


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("title_link", "owner", "model", "message_count", "tokens_used", "last_activity", "status")
    list_display_links = None
    list_filter = (("owner", RelatedOnlyFieldListFilter), "model", ("updated_at", LastActivityFilter), StatusFilter)
    search_fields = ("title",)  # shows the box; get_search_results does the search
    search_help_text = _("Titles and message text (or, without access to content, member names and ids).")
    list_select_related = ("owner",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice would scan every conversation
    list_per_page = 50
    ordering = ("-updated_at",)
    actions = ["export_json", "export_markdown"]

    # Review, not rewriting: nothing of a member's can be added, changed or deleted here.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        messages = Message.objects.filter(conversation=OuterRef("pk")).order_by()
        usage = Usage.objects.filter(conversation_id=OuterRef("pk")).order_by().values("conversation_id")
        # Subqueries, not joins: Postgres computes them only for the page's rows.
        return super().get_queryset(request).annotate(
            message_count=Coalesce(Subquery(
                messages.values("conversation").annotate(n=Count("pk")).values("n")), 0),
            tokens_used=Coalesce(Subquery(
                usage.annotate(t=Sum(F("prompt_tokens") + F("completion_tokens"))).values("t")), 0),
            has_errors=Exists(messages.filter(status=Message.Status.ERROR)),
            has_interrupted=Exists(messages.filter(status=Message.Status.INTERRUPTED)),
            readable=Value(may_read_content(request.user), output_field=BooleanField()),
        )

    def get_search_results(self, request, queryset, search_term):
        terms = search_terms(search_term)
        if not terms:
            return queryset, False
        if may_read_content(request.user):
            return content_search(queryset, terms), False
        return metadata_search(queryset, terms), False

    def get_actions(self, request):
        actions = super().get_actions(request)
        if not may_read_content(request.user):
            actions.pop("export_json", None)
            actions.pop("export_markdown", None)
        return actions

    # The columns

    @admin.display(description=_("title"))
    def title_link(self, obj):
        if not obj.readable:
            return format_html('<span class="review-hidden">{} ({})</span>',
                               str(obj.pk)[:8], gettext("content hidden"))
        url = reverse("admin:conversations_conversation_transcript", args=[obj.pk])
        return format_html('<a href="{}">{}</a>', url, obj.title or gettext("(untitled)"))

    @admin.display(description=_("messages"))
    def message_count(self, obj):
        return obj.message_count

    @admin.display(description=_("tokens used"))
    def tokens_used(self, obj):
        return obj.tokens_used

    @admin.display(description=_("last activity"), ordering="updated_at")
    def last_activity(self, obj):
        return obj.updated_at

    @admin.display(description=_("status"))
    def status(self, obj):
        found = []
        if obj.has_errors:
            found.append(gettext("has errors"))
        if obj.has_interrupted:
            found.append(gettext("interrupted"))
        return ", ".join(found) or "—"

    # The transcript: the change page of a conversation, read-only and audited

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_transcript"
        return [
            path("<uuid:object_id>/transcript/", self.admin_site.admin_view(self.transcript_view), name=name),
        ] + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return self._to_transcript(object_id)

    def history_view(self, request, object_id, extra_context=None):
        return self._to_transcript(object_id)

    def _to_transcript(self, object_id):
        try:
            object_id = uuid.UUID(str(object_id))
        except ValueError:
            raise Http404(gettext("No such conversation.")) from None
        return HttpResponseRedirect(reverse("admin:conversations_conversation_transcript", args=[object_id]))

    def transcript_view(self, request, object_id):
        conversation = Conversation.objects.select_related("owner", "provider").filter(pk=object_id).first()
        if conversation is None:
            raise Http404(gettext("No such conversation."))
        if not self.has_view_permission(request, conversation):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "conversation": conversation,
            "title": gettext("Transcript"),
        }
        if not may_read_content(request.user):
            context["reason"] = refusal(request.user)
            return TemplateResponse(request, "admin/conversations/conversation/refused.html", context, status=403)
        with transaction.atomic():  # the reading and its record stand or fall together
            transcript = transcripts.read(conversation, request.GET.get("page") or 1)
            entry = AuditEntry.record(
                AuditEntry.Action.VIEW, actor=request.user, owner=conversation.owner,
                conversation_id=conversation.id, detail={"page": transcript.page.number},
            )
            context.update(
                title=conversation.title or gettext("(untitled)"),
                transcript=transcript,
                audit_entry=entry,
                page_range=transcript.page.paginator.get_elided_page_range(transcript.page.number),
                changelist_url=reverse("admin:conversations_conversation_changelist"),
                action_checkbox_name=admin.helpers.ACTION_CHECKBOX_NAME,
            )
            response = TemplateResponse(request, "admin/conversations/conversation/transcript.html", context)
            response.render()
        return response

    # Exports: one audit entry per conversation exported

    @admin.action(description=_("Export selected conversations as JSON"))
    def export_json(self, request, queryset):
        return self._export(request, queryset, "json")

    @admin.action(description=_("Export selected conversations as Markdown"))
    def export_markdown(self, request, queryset):
        return self._export(request, queryset, "md")

    def _export(self, request, queryset, kind: str) -> HttpResponse:
        if not may_read_content(request.user):
            raise PermissionDenied
        action = AuditEntry.Action.EXPORT_JSON if kind == "json" else AuditEntry.Action.EXPORT_MARKDOWN
        now = timezone.now()
        with transaction.atomic():
            chosen = list(queryset.select_related("owner").order_by("-updated_at"))
            for conversation in chosen:
                AuditEntry.record(action, actor=request.user, owner=conversation.owner,
                                  conversation_id=conversation.id, detail={"selected": len(chosen)})
            if kind == "json":
                data = exports.all_as_json(chosen, review=True)
                data["exported_by"] = request.user.get_username()
                body = json.dumps(data, ensure_ascii=False, indent=2)
                content_type = "application/json"
            else:
                body = exports.all_as_markdown(chosen, review=True)
                content_type = "text/markdown; charset=utf-8"
        if len(chosen) == 1:
            name = slugify(chosen[0].title)[:60] or "conversation"
        else:
            name = f"conversations-{now:%Y%m%d-%H%M%S}"
        response = HttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{name}.{kind}"'
        return response
