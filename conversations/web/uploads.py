"""Images a member uploads for their messages: `POST /api/uploads/`, and `GET /api/uploads/<id>` for
their owner alone (chat/images.py checks and re-encodes them)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.http import FileResponse, JsonResponse

from conversations.chat import images
from conversations.chat.access import NotFound
from conversations.chat.errors import describe
from conversations.models import Attachment
from conversations.web.api import error, member_api, require_http_methods


@member_api
@require_http_methods(["POST"])
def upload(request):
    uploaded = request.FILES.get("file")
    if uploaded is None:
        return error(400, "invalid", describe("invalid", {"reason": "image_missing"}))
    try:
        attachment = images.store(request.user, uploaded.read(settings.MAX_IMAGE_BYTES + 1))
    except images.ImageRefused as refused:
        return error(413 if refused.code == "too_large" else 400, refused.code,
                     describe(refused.code, refused.detail), detail=refused.detail)
    return JsonResponse({"id": str(attachment.id), "url": attachment.url, "content_type": attachment.content_type,
                         "width": attachment.width, "height": attachment.height, "size": attachment.size},
                        status=201)


@member_api
@require_http_methods(["GET"])
def download(request, attachment_id):
    try:
        attachment = Attachment.objects.get(pk=uuid.UUID(str(attachment_id)), owner=request.user)
    except (ValueError, Attachment.DoesNotExist):
        raise NotFound from None
    response = FileResponse(attachment.file.open("rb"), content_type=attachment.content_type)
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"  # an image, never a document
    return response
