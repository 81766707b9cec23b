"""Pages: the conversation list and the conversation itself. Thin by design."""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from conversations.chat.access import NotFound, get_conversation
from conversations.chat.conversations import create_conversation
from conversations.models import Conversation


@login_required
def index(request):
    conversations = Conversation.objects.owned_by(request.user).order_by("-updated_at")[:100]
    return render(request, "conversations/index.html", {"conversations": conversations})


@login_required
@require_POST
def new_conversation(request):
    conversation = create_conversation(request.user)
    return redirect("conversation", conversation_id=conversation.id)


@login_required
def conversation_page(request, conversation_id):
    try:
        conversation = get_conversation(request.user, conversation_id)
    except NotFound:
        raise Http404("No such conversation.") from None
    conversations = Conversation.objects.owned_by(request.user).order_by("-updated_at")[:100]
    return render(
        request,
        "conversations/conversation.html",
        {"conversation": conversation, "conversations": conversations},
    )
