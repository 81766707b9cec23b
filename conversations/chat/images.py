"""Images members attach: decoded, bounded, re-encoded without metadata, stored, and sent upstream
as `data:` URLs.

Every image is taken apart and rebuilt: its type is what Pillow decodes, not
what the name or the browser says; its bytes and pixels are bounded before it
is decoded whole (a decompression bomb stops at the header); it is turned the
way its EXIF says, scaled down to MAX_IMAGE_SIDE, and written anew as PNG (if
it has transparency) or JPEG, which drops EXIF, GPS, ICC profiles and comments.
Messages refer to a stored image by its owner-only address (`/api/uploads/<id>`);
the model server gets its bytes inline, so it never fetches a URL the SSRF
guard could not see.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import uuid
import warnings

from django.conf import settings
from django.core.files.base import ContentFile
from PIL import Image, ImageOps, UnidentifiedImageError

from conversations.models import Attachment

ACCEPTED_FORMATS = {"PNG", "JPEG", "WEBP", "GIF"}
UPLOAD_URL = re.compile(r"^/api/uploads/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")
DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,(.*)$", re.IGNORECASE | re.DOTALL)


class ImageRefused(Exception):
    """Not an image we take: `code` (invalid or too_large) and a detail for the words."""

    def __init__(self, code: str, reason: str, **detail):
        super().__init__(reason)
        self.code = code
        self.detail = {"reason": reason, **detail}


def store(owner, data: bytes) -> Attachment:
    """Check, re-encode and store one image for `owner`; ImageRefused says why not."""
    if len(data) > settings.MAX_IMAGE_BYTES:
        raise ImageRefused("too_large", "image_bytes", limit=settings.MAX_IMAGE_BYTES)
    image = _decode(data)
    if image.width * image.height > settings.MAX_IMAGE_PIXELS:
        raise ImageRefused("too_large", "image_pixels", limit=settings.MAX_IMAGE_PIXELS)
    image = ImageOps.exif_transpose(image)  # turned as the camera meant, before EXIF is dropped
    image.thumbnail((settings.MAX_IMAGE_SIDE, settings.MAX_IMAGE_SIDE))
    alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    out = io.BytesIO()
    if alpha:
        image.convert("RGBA").save(out, format="PNG", optimize=True)
        content_type, suffix = "image/png", ".png"
    else:
        image.convert("RGB").save(out, format="JPEG", quality=88, optimize=True)
        content_type, suffix = "image/jpeg", ".jpg"
    encoded = out.getvalue()
    attachment = Attachment(owner=owner, content_type=content_type, width=image.width, height=image.height,
                            size=len(encoded))
    attachment.file.save(f"image{suffix}", ContentFile(encoded), save=False)
    attachment.save()
    return attachment


def _decode(data: bytes) -> Image.Image:
    """The image's first frame, fully decoded; ImageRefused for anything else or too big."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            probe = Image.open(io.BytesIO(data))
            if probe.format not in ACCEPTED_FORMATS:
                raise ImageRefused("invalid", "image_type")
            if probe.width * probe.height > settings.MAX_IMAGE_PIXELS:
                raise ImageRefused("too_large", "image_pixels", limit=settings.MAX_IMAGE_PIXELS)
            probe.verify()  # checks the structure; the object cannot be used after
            image = Image.open(io.BytesIO(data))
            image.seek(0)
            image.load()
        except ImageRefused:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRefused("too_large", "image_pixels", limit=settings.MAX_IMAGE_PIXELS) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            raise ImageRefused("invalid", "image_unreadable") from None
    return image


def store_data_urls(owner, parts: list | None) -> list | None:
    """Parts with every `data:` image stored as an attachment and referred to by its address."""
    if not parts:
        return parts
    stored = []
    for part in parts:
        if part["type"] == "image_url" and (found := DATA_URL.match(part["image_url"]["url"])):
            try:
                data = base64.b64decode(found.group(1), validate=True)
            except (binascii.Error, ValueError):
                raise ImageRefused("invalid", "image_unreadable") from None
            attachment = store(owner, data)
            part = {"type": "image_url", "image_url": {**part["image_url"], "url": attachment.url}}
        stored.append(part)
    return stored


def attachment_ids(parts: list | None) -> list[uuid.UUID]:
    return [uuid.UUID(found.group(1)) for part in parts or () if part.get("type") == "image_url"
            and (found := UPLOAD_URL.match(part["image_url"]["url"]))]


def check_owned(owner, parts: list | None) -> None:
    """Every stored image a message refers to must be its author's."""
    ids = set(attachment_ids(parts))
    if ids and Attachment.objects.filter(owner=owner, pk__in=ids).count() != len(ids):
        raise ImageRefused("invalid", "image_not_found")


def inline(parts: list, attachments: dict) -> list:
    """The parts as the model server gets them: stored images as `data:` URLs."""
    sent = []
    for part in parts:
        found = part.get("type") == "image_url" and UPLOAD_URL.match(part["image_url"]["url"])
        if found:
            attachment = attachments.get(uuid.UUID(found.group(1)))
            if attachment is None:
                continue  # deleted since: the text still goes
            with attachment.file.open("rb") as handle:
                data = base64.b64encode(handle.read()).decode()
            part = {"type": "image_url", "image_url": {**part["image_url"],
                                                       "url": f"data:{attachment.content_type};base64,{data}"}}
        sent.append(part)
    return sent
