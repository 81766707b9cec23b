"""Team operations in the admin: providers and their models, quotas, and what replies cost.

Provider keys are write-only: the form takes a new key and never shows the
stored one (nor any part of it); the list says only whether one is set.
"""

from __future__ import annotations

import csv
from datetime import date, datetime, time, timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations.chat.errors import describe
from conversations.chat.usage_report import report
from conversations.models import Provider, ProviderModel, Quota, Usage
from conversations.upstream import netguard, providers
from conversations.upstream.client import UpstreamError


class ProviderForm(forms.ModelForm):
    api_key = forms.CharField(
        label=_("API key"), required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_("Write-only: the stored key is never shown. Leave empty to keep it."),
    )
    clear_api_key = forms.BooleanField(label=_("Remove the stored key"), required=False)

    class Meta:
        model = Provider
        fields = ("name", "base_url", "api_key", "clear_api_key", "allow_private_address", "enabled")

    def clean_base_url(self):
        url = self.cleaned_data["base_url"].strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise forms.ValidationError(_("The base URL must start with http:// or https://."))
        return url

    def clean(self):
        cleaned = super().clean()
        url = cleaned.get("base_url")
        if url and not cleaned.get("allow_private_address"):
            # The same guard as every connection; a private address needs the switch, set on purpose.
            netguard.validate_public_url(url)
        return cleaned

    def save(self, commit=True):
        provider = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            provider.set_api_key("")
        elif self.cleaned_data.get("api_key"):
            provider.set_api_key(self.cleaned_data["api_key"])
        provider.updated_at = timezone.now()
        if commit:
            provider.save()
        return provider


class ProviderModelInline(admin.TabularInline):
    model = ProviderModel
    extra = 0
    fields = ("name", "enabled", "context_length", "supports_images", "groups")

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        kwargs["widget"] = forms.CheckboxSelectMultiple  # a team has a few groups: ticks, not two lists
        return super().formfield_for_manytomany(db_field, request, **kwargs)


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    list_display = ("name", "base_url", "enabled", "allow_private_address", "key_set", "models_enabled")
    list_filter = ("enabled",)
    search_fields = ("name", "base_url")
    inlines = [ProviderModelInline]
    actions = ["fetch_models"]

    @admin.display(boolean=True, description=_("key set"))
    def key_set(self, provider: Provider) -> bool:
        return provider.has_api_key

    @admin.display(description=_("models enabled"))
    def models_enabled(self, provider: Provider) -> int:
        return provider.models.filter(enabled=True).count()

    @admin.action(description=_("Fetch the models it serves (new ones are added disabled)"))
    def fetch_models(self, request, queryset):
        for provider in queryset:
            try:
                added, known = providers.refresh_models(provider)
            except UpstreamError as error:
                self.message_user(request, _("%(provider)s: %(error)s") % {
                    "provider": provider.name, "error": describe(error.code, error.detail)}, messages.ERROR)
                continue
            self.message_user(request, _("%(provider)s: %(added)d new models, %(known)d already listed.") % {
                "provider": provider.name, "added": added, "known": known}, messages.SUCCESS)


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ("__str__", "tokens_per_day", "tokens_per_month", "requests_per_minute")
    list_select_related = ("member",)
    autocomplete_fields = ("member",)
    search_fields = ("member__username",)


class RangeForm(forms.Form):
    start = forms.DateField(label=_("from"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=_("to"), required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def range(self) -> tuple[date, date]:
        today = timezone.localdate()
        data = self.cleaned_data if self.is_valid() else {}
        end = data.get("end") or today
        start = data.get("start") or end - timedelta(days=29)
        return (start, end) if start <= end else (end, start)


@admin.register(Usage)
class UsageAdmin(admin.ModelAdmin):
    """One row per reply, read-only; the report (a chart, tables and CSV) is this page's companion."""

    list_display = ("created_at", "member", "provider", "model", "prompt_tokens", "completion_tokens",
                    "estimated", "status", "ttft_ms", "duration_ms")
    list_filter = ("estimated", "status", "provider", "model", "created_at")
    list_select_related = ("member",)
    search_fields = ("member__username", "model")
    date_hierarchy = "created_at"
    show_full_result_count = False
    change_list_template = "admin/conversations/usage/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        view = self.admin_site.admin_view(self.report_view)
        return [path("report/", view, name="conversations_usage_report"), *super().get_urls()]

    def report_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = RangeForm(request.GET or None)
        start, end = form.range()
        since = timezone.make_aware(datetime.combine(start, time.min))
        until = timezone.make_aware(datetime.combine(end + timedelta(days=1), time.min))
        figures = report(since, until)
        if request.GET.get("format") == "csv":
            return self._csv(figures, start, end)
        context = {
            **self.admin_site.each_context(request),
            "title": _("Usage"),
            "opts": self.model._meta,
            "form": form,
            "start": start,
            "end": end,
            "figures": figures,
            "chart": figures.chart(),
            "csv_url": f"{reverse('admin:conversations_usage_report')}?start={start}&end={end}&format=csv",
        }
        return TemplateResponse(request, "admin/conversations/usage/report.html", context)

    @staticmethod
    def _csv(figures, start: date, end: date) -> HttpResponse:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="usage-{start}-{end}.csv"'
        writer = csv.writer(response)
        writer.writerow(["by", "name", "requests", "prompt_tokens", "completion_tokens", "total_tokens",
                         "estimated_requests"])
        for kind, rows in (("member", figures.by_member), ("model", figures.by_model)):
            for row in rows:
                writer.writerow([kind, row.name, row.requests, row.prompt_tokens, row.completion_tokens,
                                 row.total_tokens, row.estimated])
        return response
