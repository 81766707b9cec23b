"""Pages: the chat (a new chat at `/`, a conversation at `/c/<id>/`) and the account page. Thin by design."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django.views.i18n import set_language as django_set_language

from conversations.chat import quotas
from conversations.chat.access import NotFound, get_conversation
from conversations.chat.serializers import conversation_dict
from conversations.models import Conversation, Member
from conversations.web.forms import AccountForm, offered_models

SIDEBAR_LIMIT = 200


def _page_data(request, conversation: Conversation | None) -> dict:
    """What the script starts with (passed with json_script: data, never executed)."""
    owned = Conversation.objects.owned_by(request.user).order_by("-updated_at")[:SIDEBAR_LIMIT]
    return {
        "conversation": conversation_dict(conversation) if conversation else None,
        "conversations": [conversation_dict(c) for c in owned],
        "default_model": request.user.default_model or settings.DEFAULT_MODEL,
        "max_message_chars": settings.MAX_MESSAGE_CHARS,
    }


@login_required
def new_chat(request):
    """A new chat: nothing is created until the first message is sent."""
    return render(request, "conversations/chat.html", {"page_data": _page_data(request, None)})


@login_required
def conversation_page(request, conversation_id):
    try:
        conversation = get_conversation(request.user, conversation_id)
    except NotFound:
        raise Http404(_("No such conversation.")) from None
    return render(request, "conversations/chat.html", {
        "conversation": conversation, "page_data": _page_data(request, conversation),
    })


@login_required
def account(request):
    models = offered_models(request.user)
    if request.method == "POST":
        form = AccountForm(request.POST, instance=request.user, models=models)
        if form.is_valid():
            form.save()
            response = redirect("account")
            remember_language(response, form.cleaned_data["language"])
            translation.activate(form.cleaned_data["language"] or translation.get_language())
            messages.success(request, _("Your settings are saved."))
            return response
    else:
        form = AccountForm(instance=request.user, models=models)
    return render(request, "account.html", {"form": form, "usage": quotas.summary(request.user)})


def remember_language(response, language: str) -> None:
    """Django's language cookie follows the member's choice, so it applies at once (blank: the browser's)."""
    if language:
        response.set_cookie(
            settings.LANGUAGE_COOKIE_NAME, language, max_age=settings.LANGUAGE_COOKIE_AGE,
            path=settings.LANGUAGE_COOKIE_PATH, samesite=settings.LANGUAGE_COOKIE_SAMESITE,
            secure=settings.LANGUAGE_COOKIE_SECURE, httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
        )
    else:
        response.delete_cookie(settings.LANGUAGE_COOKIE_NAME, path=settings.LANGUAGE_COOKIE_PATH)


@require_POST
def set_language(request):
    """Django's set_language (cookie and redirect), which also remembers the choice for a signed-in member."""
    response = django_set_language(request)
    language = request.POST.get("language", "")
    if request.user.is_authenticated and language in dict(settings.LANGUAGES):
        Member.objects.filter(pk=request.user.pk).update(language=language)
    return response
