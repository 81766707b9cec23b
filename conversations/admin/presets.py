"""Team presets: named sets of model, system prompt and parameters staff publish to every member.

Members' own presets are theirs (the JSON API); this page lists and edits the
team's only, the presets without an owner.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from conversations.chat.params import ParamsError, clean_params
from conversations.models import Preset, ProviderModel


class TeamPresetForm(forms.ModelForm):
    params = forms.JSONField(label=_("parameters"), required=False, initial=dict,
                             help_text=_('Chat Completions parameters, e.g. {"temperature": 0.2}.'))

    class Meta:
        model = Preset
        fields = ("name", "model", "provider", "system_prompt", "params")
        help_texts = {
            "model": _("Leave empty for each member's default model."),
            "provider": _("Where the model is served; empty: the default model server."),
        }

    def clean_params(self):
        try:
            return clean_params(self.cleaned_data.get("params") or {})
        except ParamsError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self):
        cleaned = super().clean()
        model, provider = cleaned.get("model"), cleaned.get("provider")
        if provider is not None:
            if not model:
                self.add_error("model", _("A provider needs a model."))
            elif not ProviderModel.objects.filter(provider=provider, name=model).exists():
                self.add_error("model", _("This provider does not serve this model (add it under the provider)."))
        return cleaned

    def validate_unique(self):
        # The team's names are unique among team presets (a constraint with a condition); say so here.
        super().validate_unique()
        name = self.cleaned_data.get("name")
        taken = Preset.objects.filter(owner__isnull=True, name=name).exclude(pk=self.instance.pk)
        if name and taken.exists():
            self.add_error("name", _("A team preset with this name exists already."))


@admin.register(Preset)
class TeamPresetAdmin(admin.ModelAdmin):
    form = TeamPresetForm
    list_display = ("name", "model", "provider", "updated_at")
    list_select_related = ("provider",)
    search_fields = ("name", "model", "system_prompt")
    readonly_fields = ("created_at", "updated_at")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(owner__isnull=True)

    def save_model(self, request, obj, form, change):
        obj.owner = None
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)
