"""The chat page's part of Chat Completions fidelity, in a real headless Chromium: images
attached by button, paste and drop (and refused clearly), the context's cut, the "Thinking"
section, the token view of logprobs, presets, and export and import.
Fixtures and helpers: tests/browser.py."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect

from conversations.models import Conversation, Member, Message, Preset, Provider, ProviderModel
from tests import browser as ui
from tests.browser import (
    CONVERSATION_URL,
    ask,
    last_reply,
    sign_in,
    start_conversation,
    wait_until_finished,
)

# The browser fixtures (tests/browser.py), used here by name.
browser, fresh_channel_layer, page, server, tabs = ui.browser, ui.fresh_channel_layer, ui.page, ui.server, ui.tabs

pytestmark = pytest.mark.django_db(transaction=True)

MAX_IMAGE_BYTES = 20_000


@pytest.fixture
def app_env(app_env, tmp_path):
    """The app with a small image limit (an oversize file is quick to make) and its own media folder."""
    return {**app_env, "MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES), "MEDIA_ROOT": str(tmp_path / "media")}


def png(size=(40, 30), colour=(200, 30, 30), noise: bool = False) -> bytes:
    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise else Image.new("RGB", size, colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def attach_by_button(page, name: str, data: bytes, mime: str = "image/png") -> None:
    with page.expect_file_chooser() as chooser:
        page.locator("#attach").click()
    chooser.value.set_files([{"name": name, "mimeType": mime, "buffer": data}])


# A DataTransfer holding one file, made in the page (a real paste or drop carries one).
TRANSFER = """([name, mime, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: mime}));
  return transfer;
}"""


def paste_file(page, name: str, data: bytes, mime: str = "image/png") -> None:
    page.evaluate(f"""(args) => {{
      const transfer = ({TRANSFER})(args);
      document.getElementById("input").dispatchEvent(
        new ClipboardEvent("paste", {{clipboardData: transfer, bubbles: true, cancelable: true}}));
    }}""", [name, mime, base64.b64encode(data).decode()])


def drop_file(page, name: str, data: bytes, mime: str = "image/png") -> None:
    page.evaluate(f"""(args) => {{
      const transfer = ({TRANSFER})(args);
      const target = document.getElementById("input");
      for (const type of ["dragenter", "dragover", "drop"]) {{
        target.dispatchEvent(new DragEvent(type, {{dataTransfer: transfer, bubbles: true, cancelable: true}}));
      }}
    }}""", [name, mime, base64.b64encode(data).decode()])


def thumbnails(page):
    return page.locator("#attachments li.attachment")


def images_loaded(page, selector: str, count: int) -> None:
    """`count` images under `selector`, each decoded (the server served it and the CSP let it in)."""
    expect(page.locator(selector)).to_have_count(count)
    page.wait_for_function(
        "([selector, count]) => { const found = [...document.querySelectorAll(selector)];"
        " return found.length === count && found.every((img) => img.complete && img.naturalWidth > 0); }",
        arg=[selector, count])


def test_images_attached_by_button_paste_and_drop_reach_the_model_and_stay_with_the_message(page, alice, upstream):
    sign_in(page, "alice")
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    attach_by_button(page, "red.png", png(colour=(200, 30, 30)))
    paste_file(page, "green.png", png(colour=(30, 200, 30)))
    drop_file(page, "blue.png", png(colour=(30, 30, 200)))
    expect(thumbnails(page)).to_have_count(3)
    expect(page.locator("#attachments li.uploading")).to_have_count(0)
    images_loaded(page, "#attachments img", 3)
    expect(thumbnails(page).nth(1)).to_have_attribute("title", "green.png")

    # Removed before sending: it does not go.
    thumbnails(page).nth(1).locator("button.attachment-remove").click()
    expect(thumbnails(page)).to_have_count(2)

    conversation = start_conversation(page, "What colours are these?")
    expect(page.locator("#attachments")).to_be_hidden()
    wait_until_finished(page)
    question = page.locator("#messages li.message.user")
    images_loaded(page, "#messages li.message.user .message-images img", 2)
    srcs = question.locator(".message-images img").evaluate_all("els => els.map((el) => el.getAttribute('src'))")
    assert all(re.fullmatch(r"/api/uploads/[0-9a-f-]{36}", src) for src in srcs), srcs
    expect(question.locator(".body")).to_have_text("What colours are these?")

    sent = upstream.requests[-1]["body"]["messages"][-1]["content"]
    assert sent[0] == {"type": "text", "text": "What colours are these?"}
    urls = [part["image_url"]["url"] for part in sent if part["type"] == "image_url"]
    # Inline, as the server re-encoded them (an opaque image becomes a JPEG).
    assert len(urls) == 2 and all(re.match(r"data:image/(png|jpeg);base64,", url) for url in urls), urls
    colours = [Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB").getpixel((20, 15))
               for url in urls]
    strongest = [max(range(3), key=lambda channel: colour[channel]) for colour in colours]
    assert strongest == [0, 2], colours  # red (the button's) and blue (the drop's), in order
    stored = Message.objects.get(conversation=conversation, role=Message.Role.USER)
    assert [part["image_url"]["url"] for part in stored.content_parts if part["type"] == "image_url"] == srcs

    page.reload()  # the stored message, from the snapshot
    wait_until_finished(page)
    images_loaded(page, "#messages li.message.user .message-images img", 2)
    expect(page.locator("#messages .context-cut")).to_have_count(0)


def test_a_refused_image_or_model_says_why_and_keeps_the_text_and_images(page, alice, upstream):
    sign_in(page, "alice")
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    box = page.locator("#input")
    box.fill("Look at this")
    notice = page.locator("#notice")

    attach_by_button(page, "huge.png", png(size=(200, 200), noise=True))
    expect(notice).to_have_text(f"huge.png was not attached: Images are limited to {MAX_IMAGE_BYTES} bytes.")
    expect(thumbnails(page)).to_have_count(0)
    bmp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(bmp, format="BMP")
    drop_file(page, "scan.bmp", bmp.getvalue(), mime="image/bmp")
    expect(notice).to_have_text("scan.bmp was not attached: Images must be PNG, JPEG, WebP or GIF.")
    paste_file(page, "notes.txt", b"just some text, not an image", mime="text/plain")
    expect(notice).to_have_text("notes.txt was not attached: This image cannot be read; it may be damaged.")
    expect(thumbnails(page)).to_have_count(0)
    expect(box).to_have_value("Look at this")

    # A model that takes no images: refused before anything is stored; the text and the image stay.
    Member.objects.filter(pk=alice.user.pk).update(default_model="llama3")
    page.reload()
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    expect(page.locator("#model option:checked")).to_have_text("llama3")
    box.fill("Look at this")
    attach_by_button(page, "small.png", png())
    expect(page.locator("#attachments li.uploading")).to_have_count(0)
    box.press("Enter")
    expect(notice).to_have_text("The model llama3 does not take images; pick one that does, or send text only.")
    expect(box).to_have_value("Look at this")
    expect(thumbnails(page)).to_have_count(1)
    expect(page.locator("#send")).to_be_enabled()
    assert not Message.objects.exists()
    assert not upstream.requests


def test_the_cut_of_the_models_context_is_marked_where_it_fell(page, alice, upstream):
    # A model whose context holds about two turns (a provider's model, as staff set it up).
    provider = Provider(name="tiny", base_url=upstream.base_url, allow_private_address=True)
    provider.set_api_key(os.environ["OPENAI_API_KEY"])
    provider.save()
    ProviderModel.objects.create(provider=provider, name="tiny-context", enabled=True, context_length=300)
    Member.objects.filter(pk=alice.user.pk).update(default_model="tiny-context")
    sign_in(page, "alice")
    expect(page.locator("#model option:checked")).to_have_text("tiny-context · tiny")
    filler = "words " * 40
    conversation = start_conversation(page, f'question 0 {filler} fake:{{"tokens": 2}}')
    wait_until_finished(page)
    cut = page.locator("#messages .context-cut")
    expect(cut).to_have_count(0)  # everything fits so far
    for i in range(1, 4):
        ask(page, f'question {i} {filler} fake:{{"tokens": 2}}')
        wait_until_finished(page, count=i + 1)

    reply = Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT).latest("created_at")
    dropped, first = reply.request["dropped_messages"], reply.request["message_ids"][0]
    assert dropped > 0 and reply.request["provider"] == "tiny"
    expect(cut).to_have_count(1)
    expect(cut).to_have_text(f"Earlier messages were not sent to the model ({dropped} dropped to fit its context).")
    assert cut.evaluate("el => el.nextElementSibling.dataset.id") == first
    # The model server got exactly the messages after the cut.
    sent = upstream.requests[-1]["body"]["messages"]
    on_screen = page.locator("#messages li.message").evaluate_all("els => els.map((el) => el.dataset.id)")
    assert len(sent) == len(on_screen) - on_screen.index(first) - 1  # all but the streaming reply itself

    page.reload()  # from the snapshot
    wait_until_finished(page, count=4)
    expect(cut).to_have_count(1)
    assert cut.evaluate("el => el.nextElementSibling.dataset.id") == first


def test_thinking_is_open_while_the_model_thinks_and_folds_when_it_answers(page, alice, upstream):
    sign_in(page, "alice")
    thoughts = "Let me think about <i>this</i> step by step. " * 3
    # The answer waits four seconds after the thoughts: the page shows them meanwhile.
    start_conversation(page, "why? fake:" + json.dumps(
        {"reasoning": thoughts, "first_delay": 4, "delay": 0.05, "text": "Because **so**, and that is all."}))
    reply = last_reply(page)
    thinking = reply.locator("details.reasoning")
    expect(thinking).to_have_js_property("open", True)
    expect(thinking.locator("summary")).to_have_text("Thinking…")
    expect(thinking.locator(".reasoning-text")).to_have_text(thoughts)
    expect(reply).to_have_class(re.compile(r"\bstreaming\b"))

    expect(reply.locator(".body")).to_contain_text("Because")  # the answer starts: the thoughts fold away
    expect(thinking).to_have_js_property("open", False)
    expect(thinking.locator("summary")).to_have_text("Thinking")
    wait_until_finished(page)
    expect(thinking).to_have_js_property("open", False)
    expect(thinking.locator("i")).to_have_count(0)  # text, never HTML
    thinking.locator("summary").click()
    expect(thinking.locator(".reasoning-text")).to_be_visible()

    page.reload()  # from the snapshot: folded, there to open
    wait_until_finished(page)
    thinking = last_reply(page).locator("details.reasoning")
    expect(thinking).to_have_js_property("open", False)
    expect(thinking.locator("summary")).to_have_text("Thinking")
    thinking.locator("summary").click()
    expect(thinking.locator(".reasoning-text")).to_have_text(thoughts)


def test_token_probabilities_are_asked_for_in_settings_and_shown_token_by_token(page, alice, upstream):
    sign_in(page, "alice")
    conversation = start_conversation(page, 'hi fake:{"tokens": 2}')
    wait_until_finished(page)
    expect(last_reply(page).locator("button.tokens-toggle")).to_have_count(0)  # none asked for

    page.locator("#settings-open").click()
    dialog = page.locator("#settings")
    dialog.locator("#set-top_logprobs").fill("6")
    dialog.locator("#settings-save").click()
    expect(dialog.locator('[data-field="params.top_logprobs"] .field-error')).to_have_text("A whole number from 0 to 5.")
    dialog.locator("#set-top_logprobs").fill("3")
    dialog.locator("#settings-save").click()
    expect(dialog.locator('[data-field="params.top_logprobs"] .field-error')).to_have_text(
        "Alternatives need the token probabilities kept.")
    dialog.locator("#set-logprobs").check()
    # Token ids past any vocabulary: the page lets it through, the server's words show by the field.
    dialog.locator("#set-logit_bias").fill('{"99999999": 5}')
    dialog.locator("#settings-save").click()
    expect(dialog.locator('[data-field="params.logit_bias"] .field-error')).to_have_text(
        "logit_bias keys must be token ids (whole numbers, as strings)")
    dialog.locator("#set-logit_bias").fill('{"50256": -100}')
    dialog.locator("#settings-save").click()
    expect(dialog).to_be_hidden()
    conversation.refresh_from_db()
    assert conversation.params == {"logprobs": True, "top_logprobs": 3, "logit_bias": {"50256": -100}}

    ask(page, 'tokens fake:{"text": "one <b>two</b> three four"}')
    wait_until_finished(page, count=2)
    body = upstream.requests[-1]["body"]
    assert (body["logprobs"], body["top_logprobs"], body["logit_bias"]) == (True, 3, {"50256": -100})
    reply = last_reply(page)
    toggle = reply.locator("button.tokens-toggle")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(reply.locator(".body")).to_be_hidden()
    tokens = reply.locator(".token-view .token")
    expect(tokens).to_have_text(["one ", "<b>two</b> ", "three ", "four"])
    expect(reply.locator(".token-view b")).to_have_count(0)  # model output is text
    # Shaded by probability: the first token is certain (logprob 0), the third is not (-0.2).
    shades = tokens.evaluate_all("els => els.map((el) => el.style.backgroundColor)")
    assert shades[0] != shades[2], shades

    tip = page.locator("#token-tip")
    tokens.nth(1).hover()
    expect(tip).to_be_visible()
    expect(tip.locator(".token-tip-head")).to_have_text('"<b>two</b> "  90.5%')
    expect(tip.locator("li")).to_have_text(['"<b>two</b> ~0"  36.8%', '"<b>two</b> ~1"  13.5%', '"<b>two</b> ~2"  5%'])
    page.mouse.move(0, 0)
    expect(tip).to_be_hidden()
    tokens.nth(3).focus()  # the keyboard's way in
    expect(tip).to_be_visible()
    expect(tip.locator(".token-tip-head")).to_have_text('"four"  74.1%')
    expect(tokens.nth(3)).to_have_attribute("aria-describedby", "token-tip")

    toggle.click()
    expect(reply.locator(".body")).to_be_visible()
    expect(reply.locator(".token-view")).to_be_hidden()
    page.reload()  # from the snapshot
    wait_until_finished(page, count=2)
    last_reply(page).locator("button.tokens-toggle").click()
    expect(last_reply(page).locator(".token-view .token")).to_have_count(4)


def make_preset(owner, name, **fields) -> Preset:
    return Preset.objects.create(owner=owner.user if owner else None, name=name, **fields)


def test_a_new_chat_starts_from_the_chosen_preset_and_the_default_is_chosen_first(page, alice, upstream):
    translator = make_preset(alice, "Translator", model="preset-model", system_prompt="Translate into English.",
                             params={"temperature": 0.2})
    team = make_preset(None, "Team helper", system_prompt="Help the team.", params={"top_p": 0.5})
    sign_in(page, "alice")
    picker = page.locator("#preset")
    expect(picker).to_be_visible()
    expect(picker.locator("option:checked")).to_have_text("No preset")
    expect(picker.locator("optgroup")).to_have_count(2)
    picker.select_option(label="Translator")
    expect(page.locator("#model option:checked")).to_have_text("preset-model")
    page.locator("#settings-open").click()
    expect(page.locator("#set-system_prompt")).to_have_value("Translate into English.")
    expect(page.locator("#set-temperature")).to_have_value("0.2")
    page.locator("#settings-cancel").click()

    conversation = start_conversation(page, 'Bonjour fake:{"tokens": 2}')
    wait_until_finished(page)
    expect(picker).to_be_hidden()
    assert (conversation.model, conversation.system_prompt, conversation.params) == (
        "preset-model", "Translate into English.", {"temperature": 0.2})
    body = upstream.requests[-1]["body"]
    assert body["model"] == "preset-model" and body["temperature"] == 0.2
    assert body["messages"][0] == {"role": "system", "content": "Translate into English."}

    # The member's default preset is chosen when a new chat opens.
    Member.objects.filter(pk=alice.user.pk).update(default_preset=team)
    page.goto("/")
    expect(picker.locator("option:checked")).to_have_text("Team helper")
    expect(page.locator("#model option:checked")).to_have_text("fake-model")
    conversation = start_conversation(page, 'hello fake:{"tokens": 2}')
    wait_until_finished(page)
    assert (conversation.system_prompt, conversation.params) == ("Help the team.", {"top_p": 0.5})

    # "No preset" is no preset, the default one included; what the member sets wins over a preset.
    page.goto("/")
    expect(picker.locator("option:checked")).to_have_text("Team helper")
    picker.select_option(label="No preset")
    conversation = start_conversation(page, 'plain fake:{"tokens": 2}')
    wait_until_finished(page)
    assert (conversation.model, conversation.system_prompt, conversation.params) == ("fake-model", "", {})
    page.goto("/")
    expect(picker.locator("option:checked")).to_have_text("Team helper")
    page.locator("#settings-open").click()
    page.locator("#set-temperature").fill("1.5")
    page.locator("#settings-save").click()
    conversation = start_conversation(page, 'mine fake:{"tokens": 2}')
    wait_until_finished(page)
    assert (conversation.system_prompt, conversation.params) == ("Help the team.", {"top_p": 0.5, "temperature": 1.5})
    assert translator.pk  # untouched


def test_save_as_preset_keeps_the_conversations_settings_under_a_name(page, alice, upstream):
    make_preset(alice, "Taken")
    sign_in(page, "alice")
    start_conversation(page, 'hi fake:{"tokens": 2}')
    wait_until_finished(page)
    page.locator("#settings-open").click()
    dialog = page.locator("#settings")
    dialog.locator("#set-system_prompt").fill("Answer in haiku.")
    dialog.locator("#set-temperature").fill("0.7")
    dialog.locator("#set-logprobs").check()
    dialog.locator("#preset-save-open").click()
    naming = page.locator("#preset-save")
    expect(naming).to_be_visible()
    naming.locator("#preset-save-yes").click()
    expect(naming.locator('[data-field="name"] .field-error')).to_have_text("A preset needs a name.")
    naming.locator("#preset-name").fill("Taken")
    naming.locator("#preset-save-yes").click()  # the server's words: the name is used
    expect(naming.locator('[data-field="name"] .field-error')).not_to_be_empty()
    naming.locator("#preset-name").fill("Haiku <b>poet</b>")
    naming.locator("#preset-save-yes").click()
    expect(naming).to_be_hidden()
    expect(dialog.locator("#settings-status")).to_have_text("Saved as the preset “Haiku <b>poet</b>”.")
    preset = Preset.objects.get(owner=alice.user, name="Haiku <b>poet</b>")
    assert (preset.model, preset.system_prompt, preset.params) == (
        "fake-model", "Answer in haiku.", {"temperature": 0.7, "logprobs": True})

    page.goto("/")
    expect(page.locator("#preset option", has_text="Haiku <b>poet</b>")).to_have_count(1)


def test_the_account_page_lists_the_members_presets_to_make_default_or_delete(page, alice, bob, upstream):
    make_preset(alice, "Alpha", model="fake-model")
    beta = make_preset(alice, "Beta <i>x</i>", params={"temperature": 1})
    make_preset(None, "Team one")
    make_preset(bob, "Bob's own")
    sign_in(page, "alice")
    page.goto("/account/")
    rows = page.locator("#preset-list li")
    expect(rows.locator(".preset-name")).to_have_text(["Alpha", "Beta <i>x</i>", "Team one"])
    expect(rows.locator("i")).to_have_count(0)
    team = rows.filter(has_text="Team one")
    expect(team.locator("button.delete")).to_have_count(0)  # the team's: read-only

    rows.filter(has_text="Beta").locator("button.make-default").click()
    expect(rows.filter(has_text="Beta").locator(".default-badge")).to_have_text("Default")
    assert Member.objects.get(pk=alice.user.pk).default_preset_id == beta.id
    page.goto("/")
    expect(page.locator("#preset option:checked")).to_have_text("Beta <i>x</i>")

    page.goto("/account/")
    rows.filter(has_text="Beta").locator("button.delete").click()
    confirm = page.locator("#confirm-preset-delete")
    expect(confirm.locator(".confirm-name")).to_have_text("Beta <i>x</i>")
    confirm.get_by_role("button", name="Cancel").click()
    expect(rows).to_have_count(3)
    rows.filter(has_text="Beta").locator("button.delete").click()
    confirm.locator("#confirm-preset-delete-yes").click()
    expect(rows.locator(".preset-name")).to_have_text(["Alpha", "Team one"])
    assert not Preset.objects.filter(pk=beta.pk).exists()
    assert Member.objects.get(pk=alice.user.pk).default_preset_id is None


def test_the_export_menu_downloads_json_and_closes_on_escape_and_outside_clicks(page, alice, upstream):
    sign_in(page, "alice")
    expect(page.locator("#export")).to_be_hidden()  # a new chat has nothing to export
    conversation = start_conversation(page, 'export me fake:{"text": "The answer."}')
    wait_until_finished(page)
    opener, menu = page.locator("#export-open"), page.locator("#export-menu")
    opener.click()
    expect(menu).to_be_visible()
    expect(opener).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(opener).to_be_focused()
    expect(opener).to_have_attribute("aria-expanded", "false")
    opener.click()
    expect(menu).to_be_visible()
    page.locator("#scroller").click(position={"x": 10, "y": 10})
    expect(menu).to_be_hidden()

    opener.click()
    with page.expect_download() as download:
        menu.get_by_role("menuitem", name="Export as JSON").click()
    expect(menu).to_be_hidden()
    saved = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert download.value.suggested_filename.endswith(".json")
    assert (saved["format"], saved["id"]) == ("teamchat", str(conversation.id))
    assert [m["content"] for m in saved["messages"]][1] == "The answer."

    opener.click()
    with page.expect_download() as download:
        menu.get_by_role("menuitem", name="Export as Markdown").click()
    assert download.value.suggested_filename.endswith(".md")
    assert "The answer." in Path(download.value.path()).read_text(encoding="utf-8")


def teamchat_file(titles: list[str]) -> bytes:
    conversations = []
    for n, title in enumerate(titles):
        question, answer = f"00000000-0000-4000-8000-{2 * n:012d}", f"00000000-0000-4000-8000-{2 * n + 1:012d}"
        conversations.append({
            "id": f"10000000-0000-4000-8000-{n:012d}", "title": title, "model": "fake-model", "system_prompt": "",
            "params": {}, "created_at": "2026-01-02T03:04:05+00:00", "updated_at": "2026-01-02T03:04:05+00:00",
            "current_leaf_id": answer,
            "messages": [
                {"id": question, "role": "user", "content": f"question {n}", "status": "complete", "parent_id": None,
                 "created_at": "2026-01-02T03:04:05+00:00"},
                {"id": answer, "role": "assistant", "content": f"answer {n}", "status": "complete",
                 "parent_id": question, "created_at": "2026-01-02T03:04:06+00:00", "model": "fake-model",
                 "finish_reason": "stop", "usage": None},
            ],
        })
    return json.dumps({"format": "teamchat", "version": 1, "conversations": conversations}).encode()


def test_the_account_page_imports_a_file_and_says_what_is_wrong_with_a_bad_one(page, alice, upstream):
    sign_in(page, "alice")
    page.goto("/account/")
    chooser = page.locator("#import-file")
    problem, result = page.locator("#import-error"), page.locator("#import-result")

    chooser.set_input_files({"name": "other.json", "mimeType": "application/json", "buffer": b'{"something": "else"}'})
    page.locator("#import-submit").click()
    expect(problem).to_have_text(
        "Nothing was imported: This is not a file this server can import: it takes its own JSON export, "
        "chatgpt-web's exported history and ChatGPT's conversations.json.")
    expect(result).to_be_hidden()
    chooser.set_input_files({"name": "broken.json", "mimeType": "application/json", "buffer": b'{"format": "teamch'})
    page.locator("#import-submit").click()
    expect(problem).to_contain_text("Nothing was imported:")
    expect(problem).not_to_contain_text("This is not a file")  # a new answer for the new file
    assert not Conversation.objects.exists()

    chooser.set_input_files({"name": "mine.json", "mimeType": "application/json",
                             "buffer": teamchat_file(["First <b>trip</b>", "Second"])})
    page.locator("#import-submit").click()
    expect(result).to_be_visible()
    expect(problem).to_be_hidden()
    expect(result.locator("p")).to_have_text("Imported 2 conversations:")
    links = result.locator("a")
    expect(links).to_have_text(["First <b>trip</b>", "Second"])
    expect(result.locator("b")).to_have_count(0)
    imported = Conversation.objects.get(title="First <b>trip</b>", owner=alice.user)
    links.first.click()
    expect(page).to_have_url(re.compile(rf"/c/{imported.id}/$"))
    wait_until_finished(page)
    expect(last_reply(page).locator(".body")).to_have_text("answer 0")

    page.goto("/account/")
    with page.expect_download() as download:
        page.locator("#export-all-json").click()
    everything = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert sorted(c["title"] for c in everything["conversations"]) == ["First <b>trip</b>", "Second"]


def test_on_a_phone_in_dark_mode_and_in_chinese(tabs, alice, upstream):
    phone = tabs.new(viewport={"width": 375, "height": 740}, locale="zh-CN", color_scheme="dark",
                     is_mobile=True, has_touch=True)
    make_preset(alice, "译者", system_prompt="Translate.")
    sign_in(phone, "alice")
    expect(phone.locator("#chat")).to_have_attribute("data-ready", "true")
    expect(phone.locator("#attach")).to_have_attribute("aria-label", "附加图片")
    expect(phone.locator("#preset option:checked")).to_have_text("不使用预设")
    attach_by_button(phone, "photo.png", png(size=(300, 200)))
    expect(phone.locator("#attachments li.uploading")).to_have_count(0)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    assert phone.locator("#send").bounding_box()["x"] + phone.locator("#send").bounding_box()["width"] <= 375

    start_conversation(phone, "看看 fake:" + json.dumps({"reasoning": "想一想。", "text": "好的。"}))
    wait_until_finished(phone)
    expect(last_reply(phone).locator("details.reasoning summary")).to_have_text("思考过程")
    images_loaded(phone, "#messages li.message.user .message-images img", 1)
    phone.locator("#export-open").click()
    menu = phone.locator("#export-menu")
    expect(menu.get_by_role("menuitem")).to_have_text(["导出为 JSON", "导出为 Markdown"])
    box = menu.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375, box
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    assert CONVERSATION_URL.search(phone.url)
