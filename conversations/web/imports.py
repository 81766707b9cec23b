"""Moving conversations in and out: every conversation of a member as one file, and importing one.

`GET /api/export?format=json|md` downloads them all; `POST /api/import` takes a
file (multipart, field `file`) or a raw JSON body and answers 201 with what it
created, or 400 saying what is wrong and where, having created nothing.

An upload is bounded before it is read: a declared length over the limit is
refused at once, and the multipart parser's handler stops counting bytes past
it, so a large file is never parsed. That needs its own upload handler, which
Django allows only before the CSRF check reads the form: the view is exempt
from the middleware and runs the same check itself, after setting it.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler
from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.utils import timezone
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from conversations.chat import exports, imports
from conversations.models import Conversation
from conversations.web.api import error, member_api, require_http_methods

# Room for the multipart framing around the file (boundaries, headers of the part).
MULTIPART_OVERHEAD = 64 * 1024


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


class BoundedUpload(TemporaryFileUploadHandler):
    """Django's upload to a temporary file, which stops at the import limit."""

    def __init__(self, request, limit: int):
        super().__init__(request)
        self.limit = limit
        self.too_large = False

    def receive_data_chunk(self, raw_data, start):
        if start + len(raw_data) > self.limit:
            self.too_large = True
            raise StopUpload(connection_reset=False)  # the parser reads the rest of the body and drops it
        return super().receive_data_chunk(raw_data, start)


def refused(refusal: imports.ImportRefused) -> JsonResponse:
    return error(400, refusal.code, refusal.message, detail=refusal.detail)


@csrf_exempt  # checked below, once the upload handler is set (see the module's docstring)
@member_api
@require_http_methods(["POST"])
def import_file(request):
    limit = settings.IMPORT_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + MULTIPART_OVERHEAD:
        return refused(imports.file_too_large())
    if request.content_type == "application/x-www-form-urlencoded":
        return error(400, "invalid", gettext("Send the file as multipart/form-data (field file) or as a JSON body."))
    handler = BoundedUpload(request, limit)
    request.upload_handlers = [handler]
    try:
        return _checked_import(request, handler)
    except (MultiPartParserError, SuspiciousOperation):  # Django's own answer would be an HTML page
        return error(400, "invalid", gettext("The upload is not a valid multipart/form-data body."))


@csrf_protect
def _checked_import(request, handler: BoundedUpload):
    limit = settings.IMPORT_MAX_BYTES
    if request.content_type == "multipart/form-data":
        upload = request.FILES.get("file")
        if handler.too_large:
            return refused(imports.file_too_large())
        if upload is None:
            return error(400, "invalid", gettext("Choose a file to import (the form field is file)."),
                         fields={"file": [gettext("This field is required.")]})
        with upload:
            raw = upload.read(limit + 1)
    else:
        raw = request.read(limit + 1)
    try:
        imported = imports.parse(raw)
    except imports.ImportRefused as refusal:
        return refused(refusal)
    written = imports.write(request.user, imported)
    return JsonResponse({
        "format": imported.format,
        "imported": [{"id": str(conversation.id), "title": conversation.title, "messages": count}
                     for conversation, count in written],
    }, status=201)
