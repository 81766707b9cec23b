"""Error codes, and the words for them in the reader's language.

What is stored (Message.error_code, Message.error_detail) and what travels
carries a code of the protocol and a detail object, never English:
`{"reason": ..., "status": ..., "retry_after": ..., "limit": ..., "upstream_message": ...}`,
each key only when it applies. `describe()` makes the words when they are
shown, in the active language (translation.override with the member's), so
the same stored error reads in English or Chinese.

The codes (docs/protocol.md, "Error codes"): the contract's, plus
`interrupted` for a reply whose process stopped before it finished.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import formats, timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

CODES = (
    "busy", "invalid", "not_found", "upstream_auth", "upstream_rate_limited", "upstream_unavailable",
    "upstream_error", "timeout", "too_large", "quota", "usage_limit", "rate_limited", "interrupted",
)

# What a code says when its detail names no reason of its own.
_BY_CODE = {
    "busy": gettext_lazy("A reply is still streaming in this conversation: wait for it or stop it."),
    "invalid": gettext_lazy("That request is not valid."),
    "not_found": gettext_lazy("No such conversation."),
    "upstream_auth": gettext_lazy(
        "The model server refused the server's credentials; an administrator must check the API key."),
    "upstream_rate_limited": gettext_lazy("The model server is rate limiting requests; try again shortly."),
    "upstream_unavailable": gettext_lazy("Could not connect to the model server."),
    "upstream_error": gettext_lazy("The model server reported an error."),
    "timeout": gettext_lazy("The model server stopped sending; the reply timed out."),
    "too_large": gettext_lazy("That is more than the server accepts."),
    "quota": gettext_lazy("The model account has run out of quota."),
    "usage_limit": gettext_lazy("You have reached a usage limit your team set."),
    "rate_limited": gettext_lazy("You are sending too fast; wait a moment."),
    "interrupted": gettext_lazy("The server stopped before this reply finished; the text so far is kept."),
}

# (code, reason) -> words; %(name)s placeholders come from the detail.
_BY_REASON = {
    ("busy", "draining"): gettext_lazy("This server is restarting; send again in a moment."),
    ("not_found", "message"): gettext_lazy("No such message in this conversation."),
    ("not_found", "signed_out"): gettext_lazy("You are signed out: sign in again to continue."),
    ("not_found", "deleted"): gettext_lazy("This conversation was deleted."),
    ("upstream_rate_limited", "retry_after"): gettext_lazy(
        "The model server is rate limiting requests; try again in %(retry_after)s seconds."),
    ("upstream_unavailable", "connect_timeout"): gettext_lazy(
        "The model server did not accept the connection in time."),
    ("upstream_unavailable", "status"): gettext_lazy("The model server is unavailable (HTTP %(status)s)."),
    ("upstream_unavailable", "blocked"): gettext_lazy(
        "The model server's address is not allowed (%(blocked)s). "
        "An operator can allow it with UPSTREAM_ALLOWED_HOSTS."),
    ("upstream_unavailable", "models"): gettext_lazy("Could not reach the model server."),
    ("upstream_error", "not_a_stream"): gettext_lazy(
        "The model server answered with something other than a stream."),
    ("upstream_error", "broke_off"): gettext_lazy("The connection to the model server broke off mid-reply."),
    ("upstream_error", "transport"): gettext_lazy("The request to the model server failed (%(kind)s)."),
    ("upstream_error", "no_done"): gettext_lazy(
        "The model server's stream ended before the reply was complete."),
    ("upstream_error", "malformed_chunk"): gettext_lazy("The model server sent a malformed chunk."),
    ("upstream_error", "no_choices"): gettext_lazy("The model server sent an answer without choices."),
    ("upstream_error", "redirect"): gettext_lazy(
        "The model server answered with a redirect (HTTP %(status)s), which is not followed; "
        "an administrator must check the model server's base URL."),
    ("upstream_error", "rejected"): gettext_lazy("The model server rejected the request (HTTP %(status)s)."),
    ("upstream_error", "model_list"): gettext_lazy("The model server sent an unreadable model list."),
    ("upstream_error", "internal"): gettext_lazy("The reply failed because of an error on the server."),
    ("timeout", "status"): gettext_lazy("The model server timed out."),
    ("too_large", "context"): gettext_lazy("The conversation is too long for this model."),
    ("too_large", "reply"): gettext_lazy(
        "The reply passed the server's limit of %(limit)s characters and was cut there."),
    ("too_large", "frame"): gettext_lazy("Frames are limited to %(limit)s bytes."),
    ("too_large", "message"): gettext_lazy("Messages are limited to %(limit)s characters."),
    ("too_large", "parts"): gettext_lazy("A message can have at most %(limit)s parts."),
    ("usage_limit", "tokens_per_day"): gettext_lazy(
        "You have used today's %(limit)s tokens, the limit your team set. It resets at %(resets_at)s."),
    ("usage_limit", "tokens_per_month"): gettext_lazy(
        "You have used this month's %(limit)s tokens, the limit your team set. It resets at %(resets_at)s."),
    ("usage_limit", "requests_per_minute"): gettext_lazy(
        "You have sent %(limit)s requests this minute, the limit your team set; "
        "try again in %(retry_after)s seconds."),
    ("invalid", "model_not_allowed"): gettext_lazy(
        "The model %(model)s is not available to you; pick another in the conversation's settings."),
    ("invalid", "model_without_images"): gettext_lazy(
        "The model %(model)s does not take images; pick one that does, or send text only."),
    ("invalid", "image_type"): gettext_lazy("Images must be PNG, JPEG, WebP or GIF."),
    ("invalid", "image_missing"): gettext_lazy("Send the image as the form field 'file'."),
    ("invalid", "image_unreadable"): gettext_lazy("This image cannot be read; it may be damaged."),
    ("invalid", "image_not_found"): gettext_lazy("That image is not one of yours, or it was deleted."),
    ("too_large", "image_bytes"): gettext_lazy("Images are limited to %(limit)s bytes."),
    ("too_large", "image_pixels"): gettext_lazy("Images are limited to %(limit)s pixels."),
    ("rate_limited", "frames"): gettext_lazy(
        "You are sending too fast; wait %(retry_after)s seconds before the next request."),
    ("interrupted", "not_saved"): gettext_lazy(
        "The reply could not be saved because the database was unavailable; "
        "the text saved before that is kept."),
    ("interrupted", "restart"): gettext_lazy(
        "The server restarted before this reply finished; the text so far is kept."),
}


def describe(code: str, detail: dict | None = None) -> str:
    """The words for an error, in the active language, with the upstream's own message after ours."""
    detail = _readable(detail or {})
    template = _BY_REASON.get((code, detail.get("reason"))) or _BY_CODE.get(code) or _BY_CODE["upstream_error"]
    try:
        text = str(template) % detail if "%(" in str(template) else str(template)
    except (KeyError, TypeError, ValueError):
        text = str(_BY_CODE.get(code, _BY_CODE["upstream_error"]))
    said = detail.get("upstream_message")
    if said:
        text = _("%(ours)s The model server said: %(theirs)s") % {"ours": text, "theirs": said}
    return text


def _readable(detail: dict) -> dict:
    """A reset time as the reader's local time (the site's time zone), not an ISO string."""
    resets = detail.get("resets_at")
    if not isinstance(resets, str):
        return detail
    try:
        when = timezone.localtime(datetime.fromisoformat(resets))
    except ValueError:
        return detail
    return {**detail, "resets_at": formats.date_format(when, "DATETIME_FORMAT")}


def frame(code: str, detail: dict | None = None, *, message_id: str | None = None, text: str | None = None) -> dict:
    """An `error` frame: the code, the words, the detail (for a client's own words), the reply it concerns."""
    result = {"type": "error", "code": code, "message": text if text is not None else describe(code, detail)}
    if detail:
        result["detail"] = detail
    if message_id:
        result["message_id"] = message_id
    return result
