"""Images: each upload decoded, bounded, re-encoded without metadata and stored for its owner only;
sent upstream as data: URLs; refused clearly (and before anything is stored) when it is not an
image, too big, someone else's, or the model takes no images."""

from __future__ import annotations

import base64
import io
import json
import os
import uuid

import pytest
from channels.db import database_sync_to_async
from PIL import Image, PngImagePlugin
from PIL.ExifTags import Base as ExifBase

from conversations.models import Attachment, Message
from tests.conftest import follow_reply, open_tab

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path


def png_with_text(size=(64, 48), alpha=False) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "alice@example.com")  # metadata that must not survive
    image = Image.new("RGBA" if alpha else "RGB", size, (200, 30, 30, 128) if alpha else (200, 30, 30))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (80, 60), (10, 120, 200))
    exif = Image.Exif()
    exif[ExifBase.Make] = "PhoneMaker"
    exif[ExifBase.Orientation] = 6  # turned: stored sideways
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}  # GPS
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def read_file(attachment: Attachment) -> bytes:
    with attachment.file.open("rb") as handle:
        return handle.read()


def upload(member, data: bytes, name="image.png"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return member.client.post("/api/uploads/", {"file": SimpleUploadedFile(name, data)})


def test_an_upload_is_re_encoded_without_its_metadata(alice):
    answer = upload(alice, jpeg_with_gps(), "holiday.jpg")
    assert answer.status_code == 201, answer.content
    data = answer.json()
    stored = Attachment.objects.get(pk=data["id"])
    assert (data["url"], data["content_type"]) == (f"/api/uploads/{stored.id}", "image/jpeg")
    assert (stored.width, stored.height) == (60, 80)  # turned upright as its EXIF said, before EXIF went
    with stored.file.open("rb") as handle:
        again = Image.open(io.BytesIO(handle.read()))
    assert again.format == "JPEG" and not again.getexif() and "exif" not in again.info
    assert "holiday" not in stored.file.name and "alice" not in stored.file.name

    answer = upload(alice, png_with_text(alpha=True))
    stored = Attachment.objects.get(pk=answer.json()["id"])
    with stored.file.open("rb") as handle:
        again = Image.open(io.BytesIO(handle.read()))
    assert again.format == "PNG" and again.mode == "RGBA" and "Author" not in again.info


def test_a_large_image_is_scaled_down(alice, settings):
    settings.MAX_IMAGE_SIDE = 100
    stored = Attachment.objects.get(pk=upload(alice, png_with_text(size=(400, 200))).json()["id"])
    assert (stored.width, stored.height) == (100, 50)


@pytest.mark.parametrize(("data", "name", "code", "reason"), [
    (b"<svg onload=alert(1)></svg>", "x.svg", "invalid", "image_unreadable"),
    (b"<html><script>alert(1)</script></html>", "x.png", "invalid", "image_unreadable"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "x.png", "invalid", "image_unreadable"),
])
def test_what_is_not_an_image_is_refused(alice, data, name, code, reason):
    answer = upload(alice, data, name)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code
    assert answer.json()["error"]["detail"]["reason"] == reason and answer.json()["error"]["message"]
    assert not Attachment.objects.exists()


def test_an_image_of_another_type_is_refused(alice):
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="BMP")
    answer = upload(alice, out.getvalue(), "x.bmp")
    assert answer.json()["error"]["detail"]["reason"] == "image_type"


def test_too_many_bytes_or_pixels_is_too_large(alice, settings):
    settings.MAX_IMAGE_BYTES = 2000
    noise = io.BytesIO()
    Image.frombytes("RGB", (100, 100), os.urandom(30_000)).save(noise, format="PNG")  # does not compress
    answer = upload(alice, noise.getvalue())
    assert answer.status_code == 413 and answer.json()["error"]["detail"]["reason"] == "image_bytes"
    settings.MAX_IMAGE_BYTES = 10_000_000
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")  # 64 million pixels in a few kilobytes
    assert len(bomb.getvalue()) < 100_000
    answer = upload(alice, bomb.getvalue())
    assert answer.status_code == 413 and answer.json()["error"]["detail"]["reason"] == "image_pixels"
    assert not Attachment.objects.exists()


def test_only_the_owner_can_fetch_an_image(alice, bob):
    url = upload(alice, png_with_text()).json()["url"]
    mine = alice.client.get(url)
    body = b"".join(mine.streaming_content)
    mine.close()
    assert mine.status_code == 200 and mine["Content-Type"] == "image/jpeg"  # opaque: re-encoded as JPEG
    assert Image.open(io.BytesIO(body)).format == "JPEG"
    assert mine["X-Content-Type-Options"] == "nosniff" and "sandbox" in mine["Content-Security-Policy"]
    assert bob.client.get(url).status_code == 404
    from django.test import Client

    assert Client().get(url).status_code == 401


async def test_an_uploaded_image_goes_upstream_as_a_data_url(alice, upstream, sockets):
    answer = await database_sync_to_async(upload)(alice, png_with_text())
    url = answer.json()["url"]
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    parts = [{"type": "text", "text": "What colour is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    await tab.send(type="send", content=parts, client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    sent = upstream.requests[-1]["body"]["messages"][-1]["content"]
    attachment = await database_sync_to_async(Attachment.objects.get)()
    stored = await database_sync_to_async(read_file)(attachment)
    assert sent[1]["image_url"]["url"] == "data:image/jpeg;base64," + base64.b64encode(stored).decode()
    question = await database_sync_to_async(Message.objects.get)(role="user")
    assert question.content_parts == parts  # the member's message keeps the address, not the bytes


async def test_a_data_url_in_a_message_is_stored_like_an_upload(alice, upstream, sockets):
    data = "data:image/png;base64," + base64.b64encode(png_with_text()).decode()
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content=[{"type": "image_url", "image_url": {"url": data}}],
                   client_id=str(uuid.uuid4()))
    await follow_reply(tab.recv)
    attachment = await database_sync_to_async(Attachment.objects.get)()
    question = await database_sync_to_async(Message.objects.get)(role="user")
    assert question.content_parts == [{"type": "image_url", "image_url": {"url": attachment.url}}]
    sent = upstream.requests[-1]["body"]["messages"][-1]["content"][0]["image_url"]["url"]
    assert sent.startswith("data:image/jpeg;base64,") and sent != data  # re-encoded, metadata gone


async def test_someone_elses_image_is_refused_before_anything_is_stored(alice, bob, upstream, sockets):
    url = (await database_sync_to_async(upload)(bob, png_with_text())).json()["url"]
    conversation = await database_sync_to_async(alice.conversation)()
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content=[{"type": "image_url", "image_url": {"url": url}}],
                   client_id=str(uuid.uuid4()))
    error = await tab.until(lambda f: f["type"] == "error")
    assert (error["code"], error["detail"]["reason"]) == ("invalid", "image_not_found")
    assert upstream.requests == [] and not await database_sync_to_async(Message.objects.exists)()


async def test_a_model_that_takes_no_images_is_refused_before_anything_is_sent(alice, upstream, sockets):
    url = (await database_sync_to_async(upload)(alice, png_with_text())).json()["url"]
    conversation = await database_sync_to_async(alice.conversation)(model="gpt-3.5-turbo")
    tab = await open_tab(sockets, alice, conversation)
    await tab.send(type="send", content=[{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": url}}],
                   client_id=str(uuid.uuid4()))
    error = await tab.until(lambda f: f["type"] == "error")
    assert error["detail"] == {"reason": "model_without_images", "model": "gpt-3.5-turbo"}
    assert "gpt-3.5-turbo" in error["message"] and upstream.requests == []
    assert not await database_sync_to_async(Message.objects.exists)()
    assert json.dumps(error)
