"""The small JSON API of the contract: thin views over forms and models.

Session-authenticated; unsafe methods need the CSRF token (Django's
middleware); every error is JSON: {"error": {"code", "message"[, "fields"]}}.
"""

from __future__ import annotations

import json
from functools import wraps

from django import forms
from django.conf import settings
from django.db.models import Q
from django.http import HttpResponse, JsonResponse
from django.utils.text import slugify
from django.utils.translation import gettext
from django.views import defaults

from conversations.chat import exports, presets
from conversations.chat.access import NotFound, get_conversation
from conversations.chat.conversations import create_conversation, delete_conversation, update_conversation
from conversations.chat.errors import describe
from conversations.chat.params import ParamsError, clean_params
from conversations.chat.serializers import conversation_dict
from conversations.chat.snapshots import branch_dicts
from conversations.models import Conversation, Message, Provider
from conversations.upstream import providers

LIST_LIMIT = 200


def error(status: int, code: str, message: str, **extra) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **extra}}, status=status)


def member_api(view):
    """JSON 401 for anonymous callers, JSON 404 for anything not theirs."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return error(401, "unauthenticated", gettext("Sign in first."))
        try:
            return view(request, *args, **kwargs)
        except NotFound:
            return error(404, "not_found", gettext("No such conversation."))
        except BadBody as exc:
            return error(400, "invalid", str(exc))

    return wrapper


def not_found(request, exception=None):
    """Django's 404 handler: a JSON error under /api/, as every API answer is; Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error(404, "not_found", gettext("There is nothing at this address."))
    return defaults.page_not_found(request, exception)


class BadBody(Exception):
    pass


def require_http_methods(allowed: list[str]):
    """Like Django's decorator, but the 405 is JSON like every other API error."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in allowed:
                response = error(405, "method_not_allowed", gettext("Use %(methods)s.") % {"methods": ", ".join(allowed)})
                response["Allow"] = ", ".join(allowed)
                return response
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def read_json(request) -> dict:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        raise BadBody(gettext("The body must be a JSON object.")) from None
    if not isinstance(data, dict):
        raise BadBody(gettext("The body must be a JSON object."))
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \u escape: Postgres cannot store it
        raise BadBody(gettext("The body must be valid Unicode.")) from None
    return data


class ConversationForm(forms.Form):
    STRINGS = ("title", "model", "provider", "system_prompt")  # a number or a list here is an error, not a text

    title = forms.CharField(max_length=200, required=False)
    model = forms.CharField(max_length=200, required=False)
    provider = forms.CharField(max_length=100, required=False)
    system_prompt = forms.CharField(required=False, strip=False, max_length=settings.MAX_MESSAGE_CHARS)
    params = forms.JSONField(required=False)

    def __init__(self, data: dict, member):
        self.member = member
        wrong_types = [
            name for name in self.STRINGS
            if name in data and not isinstance(data[name], str)
        ]
        if data.get("params") is not None and not isinstance(data["params"], dict):
            wrong_types.append("params")  # forms.JSONField would parse a string or take [] as empty
        unknown = sorted(set(data) - set(self.base_fields))
        super().__init__(data)
        self.present = [name for name in self.base_fields if name in data]
        self.wrong_types, self.unknown = wrong_types, unknown

    def clean(self):
        for name in self.wrong_types:
            self.add_error(name, gettext("Must be an object or null.") if name == "params" else gettext("Must be a string."))
        if self.unknown:
            raise forms.ValidationError(gettext("Unknown field(s): %(names)s") % {"names": ", ".join(self.unknown)})
        cleaned = super().clean()
        if "model" in self.present or "provider" in self.present:
            self._choose_model(cleaned)
        return cleaned

    def _choose_model(self, cleaned: dict) -> None:
        """The model and where it is served: a provider's name, or "" for the default one."""
        model = cleaned.get("model") or ""
        if not model:
            return  # an empty model keeps (PATCH) or takes (POST) the default
        provider = None
        name = cleaned.get("provider") or ""
        if name:
            provider = Provider.objects.filter(name=name, enabled=True).first()
            if provider is None:
                self.add_error("provider", gettext("No such provider."))
                return
        choice = providers.resolve(self.member, model, provider)
        if choice is None:
            self.add_error("model", gettext("This model is not available to you."))
            return
        cleaned["provider"] = choice.provider

    def clean_params(self):
        try:
            return clean_params(self.cleaned_data.get("params") or {})
        except ParamsError as exc:
            raise forms.ValidationError(str(exc)) from None


class NewConversationForm(ConversationForm):
    """A new conversation may start from a preset (its own or the team's): `"preset": id`."""

    STRINGS = (*ConversationForm.STRINGS, "preset")
    preset = forms.CharField(required=False)

    def clean(self):
        cleaned = super().clean()
        cleaned["preset"] = None
        if self.data.get("preset") is None or "preset" in self.errors:
            return cleaned
        try:
            preset = presets.get_preset(self.member, self.data["preset"])
        except presets.PresetNotFound:
            self.add_error("preset", gettext("No such preset."))
            return cleaned
        if not cleaned.get("model") and preset.model and presets.preset_model(self.member, preset) is None:
            self.add_error("preset", gettext("This preset's model is not available to you."))
        cleaned["preset"] = preset
        return cleaned


def invalid_form(form: forms.BaseForm) -> JsonResponse:
    fields = {name: [str(e) for e in errors] for name, errors in form.errors.items()}
    if "params" in fields and isinstance(form.data.get("params"), dict):
        fields.update(param_errors(form.data["params"]))
    first = next(iter(fields.values()))[0]
    return error(400, "invalid", first, fields=fields)


def param_errors(params: dict) -> dict[str, list[str]]:
    """`params.<name>` for each parameter that fails on its own, so a settings form can show
    the server's words next to the field they are about (`params` keeps the first of them)."""
    found = {}
    for name, value in params.items():
        try:
            clean_params({name: value})
        except ParamsError as exc:
            found[f"params.{name}"] = [str(exc)]
    return found


@member_api
@require_http_methods(["GET", "POST"])
def conversations(request):
    if request.method == "POST":
        form = NewConversationForm(read_json(request), request.user)
        if not form.is_valid():
            return invalid_form(form)
        data = form.cleaned_data
        given = {name: data[name] for name in ("system_prompt", "params") if name in form.present}  # win over presets
        conversation = create_conversation(
            request.user, title=data["title"], model=data["model"], provider=data.get("provider") or None,
            preset=data["preset"], **given,
        )
        return JsonResponse(conversation_dict(conversation), status=201)
    found = Conversation.objects.owned_by(request.user)
    query = request.GET.get("q", "").replace("\x00", "").strip()  # Postgres refuses NUL
    if query:
        # Finished messages only, as the trigram index holds them (a streaming reply joins at its end).
        texts = (Message.objects.filter(conversation__owner=request.user, content__icontains=query)
                 .exclude(status=Message.Status.STREAMING).order_by().values("conversation_id"))
        found = found.filter(Q(title__icontains=query) | Q(pk__in=texts))
    found = found.order_by("-updated_at")[:LIST_LIMIT]
    return JsonResponse([conversation_dict(c) for c in found], safe=False)


@member_api
@require_http_methods(["GET", "PATCH", "DELETE"])
def conversation(request, conversation_id):
    if request.method == "DELETE":
        delete_conversation(request.user, conversation_id)
        return HttpResponse(status=204)
    if request.method == "PATCH":
        form = ConversationForm(read_json(request), request.user)
        if not form.is_valid():
            return invalid_form(form)
        changes = {name: form.cleaned_data[name] for name in form.present
                   if name not in ("model", "provider")}
        if form.cleaned_data.get("model"):  # an empty model keeps the one it has
            changes["model"] = form.cleaned_data["model"]
            changes["provider"] = form.cleaned_data.get("provider") or None
        conv = update_conversation(request.user, conversation_id, changes)
    else:
        conv = get_conversation(request.user, conversation_id)
    data = conversation_dict(conv)
    data["messages"] = branch_dicts(conv)
    return JsonResponse(data)


@member_api
@require_http_methods(["GET"])
def export(request, conversation_id):
    conv = get_conversation(request.user, conversation_id)
    kind = request.GET.get("format", "json")
    name = slugify(conv.title)[:60] or "conversation"
    if kind == "json":
        response = JsonResponse(exports.as_json(conv), json_dumps_params={"indent": 2, "ensure_ascii": False})
        filename = f"{name}.json"
    elif kind == "md":
        response = HttpResponse(exports.as_markdown(conv), content_type="text/markdown; charset=utf-8")
        filename = f"{name}.md"
    else:
        return error(400, "invalid", gettext("format must be json or md."))
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@member_api
@require_http_methods(["GET"])
def models(request):
    """The models this member may use, each with its provider; the default provider's list is cached."""
    choices = providers.choices_for(request.user)
    _names, failure = providers.default_models()
    answer = {
        "models": list(dict.fromkeys(choice.model for choice in choices)),  # names, as before providers
        "default": request.user.default_model or settings.DEFAULT_MODEL,
        "available": [choice.as_dict() for choice in choices],
    }
    if failure is not None:  # the default model server could not be asked: its default model is offered
        answer["unavailable"] = [{"provider": "", "code": failure.code,
                                  "message": describe(failure.code, failure.detail)}]
    return JsonResponse(answer)


def csrf_failure(request, reason=""):
    """JSON for API callers, Django's page for everyone else."""
    if request.path.startswith("/api/"):
        return error(403, "csrf", gettext("CSRF check failed: send the csrftoken cookie's value as X-CSRFToken."))
    from django.views.csrf import csrf_failure as default

    return default(request, reason)
