"""The presets API: a member's own presets and the team's, read; their own, written.

`/api/presets/` lists and creates; `/api/presets/<id>/` reads, changes and
deletes. A team preset is read-only here (403; staff change it in the admin);
another member's is not found (404), exactly like an id that does not exist.
"""

from __future__ import annotations

from functools import wraps

from django import forms
from django.http import HttpResponse, JsonResponse
from django.utils.translation import gettext

from conversations.chat import presets
from conversations.web.api import (
    ConversationForm,
    error,
    invalid_form,
    member_api,
    read_json,
    require_http_methods,
)


class PresetForm(ConversationForm):
    """A preset's fields, validated as a conversation's are: the model is one the member may use."""

    STRINGS = ("name", "model", "provider", "system_prompt")
    title = None
    name = forms.CharField(max_length=100, required=False)

    def __init__(self, data: dict, member, *, creating: bool):
        super().__init__(data, member)
        self.creating = creating

    def clean(self):
        cleaned = super().clean()
        if ("name" in self.present or self.creating) and "name" not in self.errors and not cleaned.get("name"):
            self.add_error("name", gettext("A preset needs a name."))
        if "provider" in self.present and "model" not in self.present:
            self.add_error("provider", gettext("Send the model with its provider."))
        return cleaned

    def changes(self) -> dict:
        """The fields the body named, as the engine takes them."""
        data = self.cleaned_data
        found = {name: data[name] for name in ("name", "system_prompt", "params") if name in self.present}
        if "model" in self.present:  # "" is a preset without a model of its own
            found["model"] = data["model"]
            found["provider"] = data.get("provider") or None
        return found


def preset_api(view):
    """The preset errors as JSON: 404 for another member's or a missing one, 403 for a team preset."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except presets.PresetNotFound:
            return error(404, "not_found", gettext("No such preset."))
        except presets.ReadOnly:
            return error(403, "forbidden", gettext("Team presets are read-only; staff change them in the admin."))
        except presets.PresetInvalid as invalid:
            return error(400, "invalid", str(invalid), fields={invalid.field: [str(invalid)]})

    return wrapper


@member_api
@require_http_methods(["GET", "POST"])
@preset_api
def preset_list(request):
    if request.method == "POST":
        form = PresetForm(read_json(request), request.user, creating=True)
        if not form.is_valid():
            return invalid_form(form)
        preset = presets.create_preset(request.user, **form.changes())
        return JsonResponse(presets.preset_dict(preset), status=201)
    return JsonResponse([presets.preset_dict(p) for p in presets.visible(request.user)], safe=False)


@member_api
@require_http_methods(["GET", "PATCH", "DELETE"])
@preset_api
def preset_detail(request, preset_id):
    if request.method == "DELETE":
        presets.delete_preset(request.user, preset_id)
        return HttpResponse(status=204)
    if request.method == "PATCH":
        presets.get_preset(request.user, preset_id, own=True)  # 404 or 403 before the body's errors
        form = PresetForm(read_json(request), request.user, creating=False)
        if not form.is_valid():
            return invalid_form(form)
        preset = presets.update_preset(request.user, preset_id, form.changes())
    else:
        preset = presets.get_preset(request.user, preset_id)
    return JsonResponse(presets.preset_dict(preset))
