"""The member's own settings as JSON: language, theme, default model and default preset.

`GET /api/account/` reads them; `PATCH` changes the fields it names, each
validated (a language this site speaks, a theme, a model the member may use,
a preset of their own or the team's), and saves nothing if one is wrong.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.http import JsonResponse
from django.utils.translation import gettext

from conversations.chat import presets
from conversations.models import Member
from conversations.upstream import providers
from conversations.web.api import invalid_form, member_api, read_json, require_http_methods

FIELDS = ("language", "theme", "default_model", "default_preset")


class AccountSettingsForm(forms.Form):
    language = forms.ChoiceField(required=False, choices=[("", ""), *settings.LANGUAGES])
    theme = forms.ChoiceField(required=False, choices=Member.Theme.choices)
    default_model = forms.CharField(max_length=200, required=False)
    default_preset = forms.CharField(required=False)

    def __init__(self, data: dict, member):
        self.member = member
        self.given = [name for name in FIELDS if name in data]
        self.unknown = sorted(set(data) - set(FIELDS))
        # A string for each, or null for the default preset (none): forms would turn 5 into "5".
        self.wrong_types = [name for name in self.given
                            if not isinstance(data[name], str) and not (name == "default_preset" and data[name] is None)]
        super().__init__(data)

    def clean(self):
        for name in self.wrong_types:
            self.add_error(name, gettext("Must be a string or null.") if name == "default_preset"
                           else gettext("Must be a string."))
        if self.unknown:
            raise forms.ValidationError(gettext("Unknown field(s): %(names)s") % {"names": ", ".join(self.unknown)})
        return super().clean()

    def clean_default_model(self):
        model = self.cleaned_data["default_model"]
        if model and providers.resolve(self.member, model) is None:
            raise forms.ValidationError(gettext("This model is not available to you."))
        return model

    def clean_default_preset(self):
        value = self.data.get("default_preset")
        if "default_preset" in self.wrong_types or not value:
            return None
        try:
            return presets.get_preset(self.member, value)
        except presets.PresetNotFound:
            raise forms.ValidationError(gettext("No such preset.")) from None

    def save(self) -> None:
        # An update, not save(): a saved member has their sockets re-check their sign-in, needlessly here.
        values = {name: self.cleaned_data[name] for name in self.given}
        Member.objects.filter(pk=self.member.pk).update(**values)
        for name, value in values.items():
            setattr(self.member, name, value)


def account_dict(member: Member) -> dict:
    return {
        "language": member.language,
        "theme": member.theme,
        "default_model": member.default_model,
        "default_preset": str(member.default_preset_id) if member.default_preset_id else None,
    }


@member_api
@require_http_methods(["GET", "PATCH"])
def account(request):
    """The member's settings; a PATCH changes the ones it names and answers like GET."""
    if request.method == "PATCH":
        form = AccountSettingsForm(read_json(request), request.user)
        if not form.is_valid():
            return invalid_form(form)
        if form.given:
            form.save()
    return JsonResponse(account_dict(request.user))
