"""Moving conversations out: every conversation of a member as one file."""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.translation import gettext

from conversations.chat import exports
from conversations.models import Conversation
from conversations.web.api import error, member_api, require_http_methods


@member_api
@require_http_methods(["GET"])
def export_all(request):
    """Every conversation of the member, newest first: JSON (every branch) or Markdown (the branches on screen)."""
    kind = request.GET.get("format", "json")
    if kind not in ("json", "md"):
        return error(400, "invalid", gettext("format must be json or md."))
    conversations = list(Conversation.objects.owned_by(request.user).order_by("-updated_at"))
    name = f"conversations-{timezone.localdate().isoformat()}"
    if kind == "json":
        response = JsonResponse(exports.all_as_json(conversations),
                                json_dumps_params={"indent": 2, "ensure_ascii": False})
    else:
        response = HttpResponse(exports.all_as_markdown(conversations), content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}.{kind}"'
    return response
