"""The chat page's controls in a real headless Chromium: the composer (IME, refused text),
stop, errors that say what happened, regenerate and branches, settings, the sidebar, and the
page in Chinese, on a phone and in dark mode. Fixtures and helpers: tests/browser.py."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation, Member, Message
from tests import browser as ui
from tests.browser import (
    ask,
    last_reply,
    replies,
    sign_in,
    start_conversation,
    wait_until_finished,
)

# The browser fixtures (tests/browser.py), used here by name.
browser, fresh_channel_layer, page, server, tabs = ui.browser, ui.fresh_channel_layer, ui.page, ui.server, ui.tabs

pytestmark = pytest.mark.django_db(transaction=True)


def test_enter_during_ime_composition_sends_nothing(page, alice, upstream):
    sign_in(page, "alice")
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    box = page.locator("#input")
    box.click()
    ime = page.context.new_cdp_session(page)
    ime.send("Input.imeSetComposition", {"text": "ni", "selectionStart": 2, "selectionEnd": 2})
    expect(box).to_have_value("ni")
    page.keyboard.press("Enter")  # the IME's Enter: it picks a candidate, it must not send
    ime.send("Input.imeSetComposition", {"text": "你", "selectionStart": 1, "selectionEnd": 1})
    page.keyboard.press("Enter")
    ime.send("Input.insertText", {"text": "你好"})  # the composition is committed
    expect(box).to_have_value(re.compile(r"^你好\s*$"))
    assert not Conversation.objects.exists()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("#messages li")).to_have_count(0)

    page.keyboard.press("Enter")  # now Enter sends
    expect(box).to_have_value("")
    expect(page.locator("#messages li.message.user .body")).to_contain_text("你好")
    wait_until_finished(page)
    assert Message.objects.get(role=Message.Role.USER).content.strip() == "你好"


def test_shift_enter_adds_a_line_and_the_box_grows(page, alice, upstream):
    sign_in(page, "alice")
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    box = page.locator("#input")
    box.click()
    before = box.bounding_box()["height"]
    for line in ("one", "two", "three"):
        box.type(line)
        box.press("Shift+Enter")
    expect(box).to_have_value("one\ntwo\nthree\n")
    assert box.bounding_box()["height"] > before
    assert not Conversation.objects.exists()


def test_text_the_server_refuses_stays_in_the_box(page, alice, upstream):
    sign_in(page, "alice")
    start_conversation(page, 'long fake:{"tokens": 400, "delay": 0.03}')
    expect(last_reply(page)).to_have_class(re.compile(r"\bstreaming\b"))
    box = page.locator("#input")
    box.fill("a second question, while the first reply streams")
    box.press("Enter")
    expect(page.locator("#notice")).to_contain_text("A reply is still streaming")
    expect(box).to_have_value("a second question, while the first reply streams")
    page.locator("#stop").click()
    wait_until_finished(page, status="stopped")

    too_long = "x" * 100_001
    box.fill(too_long)
    box.press("Enter")
    expect(page.locator("#notice")).to_contain_text("Messages are limited to 100000 characters")
    expect(box).to_have_value(too_long)
    assert Message.objects.filter(role=Message.Role.USER).count() == 1


def test_stop_keeps_the_text_and_says_it_stopped(page, alice, upstream):
    sign_in(page, "alice")
    conversation = start_conversation(page, 'long fake:{"tokens": 400, "delay": 0.03}')
    expect(last_reply(page).locator(".body")).to_contain_text(" w3")
    stop = page.locator("#stop")
    expect(stop).to_be_visible()
    stop.click()
    wait_until_finished(page, status="stopped")
    expect(last_reply(page).locator(".note")).to_have_text("Stopped.")
    expect(stop).to_be_hidden()
    row = Message.objects.get(conversation=conversation, role=Message.Role.ASSISTANT)
    assert row.status == Message.Status.STOPPED
    assert " ".join(row.content.split()) == " ".join(last_reply(page).locator(".body").text_content().split())


def test_a_rate_limit_says_when_to_retry_and_branches_decide_what_the_model_sees(page, alice, upstream):
    sign_in(page, "alice")
    conversation = start_conversation(page, 'first fake:{"text": "FIRST-ANSWER"}')
    wait_until_finished(page)
    # The model server refuses once with a wait too long to retry by itself.
    ask(page, 'second fake:{"status": 429, "retry_after": 42, "fail_times": 1}')
    wait_until_finished(page, count=2, status="error")
    note = last_reply(page).locator(".note")
    expect(note).to_contain_text("try again in 42 seconds")
    expect(note).to_have_attribute("role", "alert")

    # Retry makes a second version of the reply, which succeeds.
    last_reply(page).locator("button.retry").click()
    wait_until_finished(page, count=2)
    expect(last_reply(page).locator(".branch-position")).to_have_text("2/2")
    expect(last_reply(page).locator(".body")).to_contain_text("You said: second")

    # Back to the first version (the failed one): the next question continues that branch.
    last_reply(page).locator("button.branch-prev").click()
    expect(last_reply(page).locator(".branch-position")).to_have_text("1/2")
    expect(last_reply(page)).to_have_class(re.compile(r"\berror\b"))
    ask(page, "third")
    wait_until_finished(page, count=3)
    sent = [m["content"] for m in upstream.requests[-1]["body"]["messages"]]
    assert "FIRST-ANSWER" in sent
    assert not any("You said: second" in text for text in sent), sent

    # And switching to the second version puts its reply in the context of the next question.
    replies(page).nth(1).locator("button.branch-next").click()
    expect(replies(page).nth(1).locator(".branch-position")).to_have_text("2/2")
    expect(replies(page)).to_have_count(2)
    ask(page, "fourth")
    wait_until_finished(page, count=3)
    sent = [m["content"] for m in upstream.requests[-1]["body"]["messages"]]
    assert any("You said: second" in text for text in sent), sent
    assert "third" not in sent
    # first, the failed second and its retry, third (on the failed branch), fourth (on the retried one)
    assert conversation.messages.filter(role=Message.Role.ASSISTANT).count() == 5


def test_edit_and_resend_makes_a_new_version_of_the_question(page, alice, upstream):
    sign_in(page, "alice")
    start_conversation(page, 'typo fake:{"tokens": 2}')
    wait_until_finished(page)
    question = page.locator("#messages li.message.user").first
    question.locator("button.edit").click()
    box = question.locator(".edit-box textarea")
    box.fill('fixed fake:{"tokens": 2}')
    box.press("Enter")
    expect(question).to_have_count(1)
    user = page.locator("#messages li.message.user")
    expect(user).to_have_count(1)
    expect(user.locator(".body")).to_have_text('fixed fake:{"tokens": 2}')
    expect(user.locator(".branch-position")).to_have_text("2/2")
    wait_until_finished(page)
    expect(last_reply(page).locator(".body")).to_contain_text("You said: fixed")
    assert upstream.requests[-1]["body"]["messages"][-1]["content"].startswith("fixed")


def test_settings_are_validated_here_and_by_the_server_next_to_each_field(page, alice, upstream):
    sign_in(page, "alice")
    conversation = start_conversation(page, 'hi fake:{"tokens": 2}')
    wait_until_finished(page)
    page.locator("#settings-open").click()
    dialog = page.locator("#settings")
    expect(dialog).to_be_visible()
    dialog.locator("#set-temperature").fill("3")
    dialog.locator("#set-stop").fill("a\nb\nc\nd\ne")
    dialog.locator("#settings-save").click()
    expect(dialog.locator('[data-field="params.temperature"] .field-error')).to_have_text("A number from 0 to 2.")
    expect(dialog.locator('[data-field="params.stop"] .field-error')).to_have_text("At most 4 stop sequences.")
    conversation.refresh_from_db()
    assert conversation.params == {}

    # The server's own check: a JSON schema without the shape it needs; its words show by the field.
    dialog.locator("#set-temperature").fill("0.5")
    dialog.locator("#set-stop").fill("END")
    dialog.locator("#set-response_format").select_option("json_schema")
    dialog.locator("#set-json_schema").fill('{"name": "x", "schema": {"type": "object"}}')
    dialog.locator("#set-system_prompt").fill("Answer briefly.")
    dialog.locator("#set-max_tokens").fill("64")
    dialog.locator("#settings-save").click()
    expect(dialog).to_be_hidden()
    conversation.refresh_from_db()
    assert conversation.system_prompt == "Answer briefly."
    assert conversation.params == {
        "temperature": 0.5, "stop": "END", "max_tokens": 64,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    }

    assert conversation.model == "fake-model"


def eventually(check, attempts: int = 200):
    """Wait for a condition the page causes on the server (polling the database, never timing it)."""
    from time import sleep
    for _ in range(attempts):
        if check():
            return
        sleep(0.1)
    assert check()


def test_new_chats_start_with_the_members_default_model_and_the_picker_changes_it(page, alice, upstream):
    Member.objects.filter(pk=alice.user.pk).update(default_model="older-model")
    sign_in(page, "alice")
    picker = page.locator("#model")
    expect(picker.locator("option:checked")).to_have_text("older-model")
    conversation = start_conversation(page, 'hi fake:{"tokens": 2}')
    wait_until_finished(page)
    assert conversation.model == "older-model"
    # /api/models/ offers the fake server's model beside the conversation's own.
    expect(picker.locator("option")).to_have_text(["fake-model", "older-model"])
    picker.select_option(label="fake-model")

    def changed():
        conversation.refresh_from_db()
        return conversation.model == "fake-model"

    eventually(changed)
    ask(page, "next")
    wait_until_finished(page, count=2)
    assert upstream.requests[-1]["body"]["model"] == "fake-model"


def test_the_server_message_shows_next_to_a_field_the_page_accepted(page, alice, upstream):
    sign_in(page, "alice")
    conversation = start_conversation(page, 'hi fake:{"tokens": 2}')
    wait_until_finished(page)
    page.locator("#settings-open").click()
    dialog = page.locator("#settings")
    # A whole number within the page's bounds as a JavaScript number, past the server's as sent.
    dialog.locator("#set-seed").fill("9223372036854775807")
    dialog.locator("#settings-save").click()
    error = dialog.locator('[data-field="params.seed"] .field-error')
    expect(error).to_have_text(re.compile(r"^seed must be a whole number from"))
    expect(dialog).to_be_visible()
    conversation.refresh_from_db()
    assert conversation.params == {}


def test_the_sidebar_groups_searches_and_deletes_after_confirming(page, alice, upstream):
    sign_in(page, "alice")
    start_conversation(page, 'apples are red fake:{"tokens": 2}')
    wait_until_finished(page)
    page.goto("/")
    start_conversation(page, 'bananas are yellow fake:{"tokens": 2}')
    wait_until_finished(page)
    items = page.locator("#conversation-list li")
    expect(items).to_have_count(2)
    expect(page.locator("#conversation-list h2")).to_have_text(["Today"])
    # Newest first.
    expect(items.first.locator("a")).to_contain_text("bananas")

    page.locator("#search").fill("apples")
    expect(items).to_have_count(1)
    expect(items.first.locator("a")).to_contain_text("apples")
    page.locator("#search").fill("")
    expect(items).to_have_count(2)

    apples = page.locator("#conversation-list li", has_text="apples")
    apples.locator("button.delete").click()
    confirm = page.locator("#confirm-delete")
    expect(confirm).to_be_visible()
    expect(confirm.locator(".confirm-name")).to_contain_text("apples")
    confirm.get_by_role("button", name="Cancel").click()
    expect(items).to_have_count(2)
    assert Conversation.objects.count() == 2
    apples.locator("button.delete").click()
    confirm.locator("#confirm-delete-yes").click()
    expect(items).to_have_count(1)
    assert list(Conversation.objects.values_list("title", flat=True)) == [items.first.locator("a").text_content()]


def test_the_page_in_chinese_on_a_phone_in_dark_mode(tabs, alice, upstream):
    phone = tabs.new(viewport={"width": 375, "height": 740}, locale="zh-CN", color_scheme="dark",
                     is_mobile=True, has_touch=True)
    phone.goto("/accounts/login/")
    expect(phone.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(phone.locator("h1")).to_have_text("登录")
    sign_in(phone, "alice")
    expect(phone.locator("#send")).to_have_text("发送")
    expect(phone.locator("#input")).to_have_attribute("placeholder", "输入消息（Enter 发送，Shift+Enter 换行）")
    # Dark, from the system (the member chose no theme).
    background = phone.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 24, 30)", background
    # Nothing is wider than the phone.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375

    start_conversation(phone, 'hello fake:{"status": 429, "retry_after": 42}')
    wait_until_finished(phone, status="error")
    expect(last_reply(phone).locator(".note")).to_contain_text("请在 42 秒后重试")
    expect(last_reply(phone).locator("button.retry")).to_have_text("重试")

    # The sidebar is a drawer on a phone.
    sidebar = phone.locator("#sidebar")
    assert not sidebar.evaluate("el => el.getBoundingClientRect().right > 0")
    phone.locator("#sidebar-toggle").click()
    expect(phone.locator("#sidebar-toggle")).to_have_attribute("aria-expanded", "true")
    expect(phone.locator("#conversation-list h2")).to_have_text(["今天"])
    phone.wait_for_function("() => document.getElementById('sidebar').getBoundingClientRect().left >= 0")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375


def test_the_theme_and_language_switches_are_remembered_for_the_member(page, alice, upstream):
    sign_in(page, "alice")
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "")
    toggle = page.locator("#theme-toggle")
    toggle.click()
    expect(html).to_have_attribute("data-theme", "light")
    toggle.click()
    expect(html).to_have_attribute("data-theme", "dark")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(21, 24, 30)"
    for _ in range(50):
        if Member.objects.get(username="alice").theme == "dark":
            break
        page.wait_for_timeout(100)
    assert Member.objects.get(username="alice").theme == "dark"

    page.locator("#language-select").select_option("zh-hans")
    expect(page.locator("#send")).to_have_text("发送")
    assert Member.objects.get(username="alice").language == "zh-hans"
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")  # applied by the server: no flash of light
    expect(html).to_have_attribute("lang", "zh-hans")


@pytest.mark.parametrize(("finish_reason", "words"), [
    ("length", "Cut short: the reply reached its length limit (max tokens)."),
    ("content_filter", "The model server's content filter stopped this reply."),
])
def test_a_reply_cut_by_length_or_filtered_says_so_and_offers_a_retry(page, alice, upstream, finish_reason, words):
    sign_in(page, "alice")
    start_conversation(page, "tell me fake:" + json.dumps({"tokens": 4, "finish_reason": finish_reason}))
    wait_until_finished(page)
    expect(last_reply(page).locator(".note")).to_have_text(words)
    last_reply(page).locator("button.retry").click()
    expect(last_reply(page).locator(".branch-position")).to_have_text("2/2")
    wait_until_finished(page)
    assert len(upstream.requests) == 2


def test_the_page_follows_the_stream_until_the_member_scrolls_up(page, alice, upstream):
    page.set_viewport_size({"width": 1000, "height": 500})
    sign_in(page, "alice")
    lines = "".join(f"Line {n} of a long answer.\n\n" for n in range(1, 400))
    start_conversation(page, "long fake:" + json.dumps({"text": lines, "delay": 0.01}))
    expect(last_reply(page).locator(".body")).to_contain_text("Line 60 ")
    scroller = page.locator("#scroller")
    at_bottom = "el => el.scrollHeight - el.scrollTop - el.clientHeight < 48"
    assert scroller.evaluate(at_bottom)  # following
    jump = page.locator("#jump")
    expect(jump).to_be_hidden()

    scroller.hover()
    page.mouse.wheel(0, -2000)  # the member scrolls up to read
    expect(jump).to_be_visible()
    expect(last_reply(page).locator(".body")).to_contain_text("Line 120 ")
    assert not scroller.evaluate(at_bottom)  # the stream did not pull the page back down

    jump.click()
    expect(jump).to_be_hidden()
    page.wait_for_function("() => { const el = document.getElementById('scroller');"
                           " return el.scrollHeight - el.scrollTop - el.clientHeight < 48; }")
    wait_until_finished(page)


def test_copy_puts_the_message_and_a_code_block_on_the_clipboard(tabs, alice, upstream):
    page = tabs.new()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page, "alice")
    reply = "Run this:\n\n```sh\nmake test\n```\n"
    start_conversation(page, "how? fake:" + json.dumps({"text": reply}))
    wait_until_finished(page)
    code_copy = last_reply(page).locator(".copy-code")
    code_copy.click()
    expect(code_copy).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "make test\n"
    copy_reply = last_reply(page).locator("button.copy-message")
    copy_reply.click()
    expect(copy_reply).to_have_text("Copied")  # shown once the clipboard has it
    assert page.evaluate("navigator.clipboard.readText()") == reply
    copy_question = page.locator("#messages li.message.user button.copy-message")
    copy_question.click()
    expect(copy_question).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()").startswith("how? fake:")


def test_reasoning_shows_apart_from_the_answer_as_text(page, alice, upstream):
    sign_in(page, "alice")
    thoughts = "First <b>think</b> about it, then answer."
    start_conversation(page, "why? fake:" + json.dumps({"reasoning": thoughts, "text": "Because **so**.", "delay": 0.01}))
    wait_until_finished(page)
    box = last_reply(page).locator("details.reasoning")
    expect(box).to_be_visible()
    expect(box.locator(".reasoning-text")).to_have_text(thoughts)
    expect(box.locator("b")).to_have_count(0)
    expect(last_reply(page).locator(".body strong")).to_have_text("so")
    page.reload()  # from the snapshot
    wait_until_finished(page)
    expect(last_reply(page).locator(".reasoning-text")).to_have_text(thoughts)
