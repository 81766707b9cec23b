"""The chat page in a real headless Chromium, against the app as a real daphne process
(this test's Postgres, Redis and the fake upstream): a new chat, streaming Markdown,
reloads, several tabs, and untrusted text. Fixtures and helpers: tests/browser.py."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from conversations.models import Conversation, Message
from tests import browser as ui
from tests.browser import (
    ask,
    last_reply,
    sign_in,
    start_conversation,
    wait_until_finished,
    words,
)
from tests.conftest import DaphneProcess

# The browser fixtures (tests/browser.py), used here by name.
browser, fresh_channel_layer, page, server, tabs = ui.browser, ui.fresh_channel_layer, ui.page, ui.server, ui.tabs

pytestmark = pytest.mark.django_db(transaction=True)

MARKDOWN_REPLY = (
    "Here is the code:\n\n```python\ndef double(x):\n    return x * 2  # twice\n```\n\n"
    "Inline $e^{i\\pi}+1=0$ and \\(a^2+b^2\\) and\n\n$$\\int_0^1 x\\,dx$$\n\nand \\[x=\\frac{1}{2}\\]\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n- [x] done\n- [ ] to do\n\nSee [the docs](https://example.com/docs).\n"
)


def test_a_new_chat_starts_on_the_first_send_and_streams_markdown(page, alice, upstream):
    sign_in(page, "alice")
    expect(page.locator("#input")).to_be_focused()
    expect(page.locator("#messages")).to_have_attribute("aria-live", "polite")
    # Looking around creates nothing.
    page.reload()
    page.goto("/")
    assert not Conversation.objects.exists()

    conversation = start_conversation(page, "show me fake:" + json.dumps({"text": MARKDOWN_REPLY, "delay": 0.01}))
    reply = last_reply(page)
    wait_until_finished(page)

    # It streamed: several partial texts were on screen while the reply was streaming.
    seen = page.evaluate("window.__seen")
    assert len({entry["text"] for entry in seen if entry["streaming"]}) >= 2, seen

    code = reply.locator(".code-block")
    expect(code.locator(".code-lang")).to_have_text("python")
    expect(code.locator(".copy-code")).to_be_visible()
    expect(code.locator("code .hljs-keyword").first).to_have_text("def")  # highlighted once closed
    # All four delimiters are typeset by KaTeX (two inline, two display).
    expect(reply.locator(".katex")).to_have_count(4)
    expect(reply.locator(".katex-display")).to_have_count(2)
    expect(reply.locator("table td")).to_have_text(["1", "2"])
    expect(reply.locator("input.task-list-item-checkbox")).to_have_count(2)
    link = reply.get_by_role("link", name="the docs")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")

    stored = Message.objects.get(conversation=conversation, role=Message.Role.ASSISTANT)
    assert stored.content == MARKDOWN_REPLY
    conversation.refresh_from_db()
    expect(page.locator("#title")).to_have_text(conversation.title)
    expect(page.locator("#conversation-list li.current a")).to_have_text(conversation.title)
    assert Conversation.objects.count() == 1

    # Reload: the same conversation, rendered the same way.
    page.reload()
    wait_until_finished(page)
    expect(last_reply(page).locator(".katex")).to_have_count(4)
    expect(last_reply(page).locator(".code-block code .hljs-keyword").first).to_have_text("def")
    expect(page.locator("#messages li.message.user .body")).to_contain_text("show me")


def test_reloading_while_a_reply_streams_shows_it_exactly_once(page, alice, upstream):
    sign_in(page, "alice")
    conversation = start_conversation(page, 'slow fake:{"tokens": 80, "delay": 0.03}')
    expect(last_reply(page)).to_have_class(re.compile(r"\bstreaming\b"))
    expect(last_reply(page).locator(".body")).to_contain_text(" w3")
    page.reload()

    wait_until_finished(page)
    row = Message.objects.get(conversation=conversation, role=Message.Role.ASSISTANT)
    assert row.status == Message.Status.COMPLETE
    text = last_reply(page).locator(".body").text_content()
    assert words(text) == words(row.content) == words(upstream.requests[-1]["streamed_text"])
    assert text.count("You said:") == 1 and words(text).endswith(" w79")
    assert len(upstream.requests) == 1

    # The reloaded page really joined the reply mid-stream, and every text it showed was a prefix.
    seen = page.evaluate("window.__seen")
    assert any(entry["streaming"] for entry in seen), f"the reply had already ended at the reload: {seen}"
    assert all(words(text).startswith(words(entry["text"])) for entry in seen)


def test_two_tabs_show_the_same_reply_and_a_rename_reaches_the_other_sidebar(tabs, alice, upstream):
    first = tabs.new()
    sign_in(first, "alice")
    conversation = start_conversation(first, 'hello fake:{"tokens": 5}')
    wait_until_finished(first)

    second = tabs.new(storage_state=first.context.storage_state())
    second.goto(f"/c/{conversation.id}/")
    wait_until_finished(second)
    first.locator("#input").fill('again fake:{"tokens": 60, "delay": 0.02}')
    first.locator("#input").press("Enter")
    wait_until_finished(second, count=2)
    wait_until_finished(first, count=2)
    stored = Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT).order_by("created_at")
    expected = words(stored.last().content)
    assert words(last_reply(first).locator(".body").text_content()) == expected
    assert words(last_reply(second).locator(".body").text_content()) == expected

    # Rename in the first tab's sidebar; the second tab's sidebar and title follow.
    item = first.locator(f'#conversation-list li[data-id="{conversation.id}"]')
    item.locator("button.rename").click()
    box = first.locator("#conversation-list input.rename-box")
    box.fill("Renamed <b>here</b>")
    box.press("Enter")
    other = second.locator(f'#conversation-list li[data-id="{conversation.id}"] a')
    expect(other).to_have_text("Renamed <b>here</b>")
    expect(second.locator("#title")).to_have_text("Renamed <b>here</b>")
    expect(second.locator("#conversation-list b")).to_have_count(0)
    conversation.refresh_from_db()
    assert conversation.title == "Renamed <b>here</b>"


def test_model_output_and_titles_run_nothing(page, alice, upstream):
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    sign_in(page, "alice")
    reply = (
        '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
        '<svg onload="window.__pwned=3"></svg> [x](javascript:window.__pwned=4) '
        '[y](JaVaScRiPt:window.__pwned=5) ![z](javascript:window.__pwned=6) **bold**'
    )
    question = "<img src=x onerror=window.__pwned=7> hi fake:" + json.dumps({"text": reply})
    conversation = start_conversation(page, question)
    wait_until_finished(page)

    body = last_reply(page).locator(".body")
    expect(body.locator("strong")).to_have_text("bold")
    expect(body).to_contain_text("<img src=x onerror=")  # shown as text
    body.get_by_text("[x](javascript:window.__pwned=4)").click()  # not a link: text, and inert
    for link in body.locator("a").all():
        link.click()

    def assert_inert() -> None:
        assert page.evaluate("typeof window.__pwned") == "undefined"
        expect(page.locator("#messages img")).to_have_count(0)
        expect(page.locator("#messages script")).to_have_count(0)
        expect(page.locator("#messages svg[onload]")).to_have_count(0)
        expect(page.locator('#messages a[href^="javascript"], #messages a[href^="JaVaScRiPt"]')).to_have_count(0)
        assert not [url for url in fetched if url.endswith("/x")], fetched

    assert_inert()
    conversation.refresh_from_db()
    expect(page.locator("#title")).to_have_text(conversation.title)
    expect(page.locator("#conversation-list li.current a")).to_have_text(conversation.title)

    page.reload()  # the title as the server renders it, and the stored reply
    wait_until_finished(page)
    expect(page).to_have_title(re.compile(re.escape(conversation.title)))
    expect(page.locator("#title")).to_have_text(conversation.title)
    assert_inert()


def test_an_anonymous_visit_is_sent_to_the_login_page(page):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.locator("#id_username")).to_be_visible()


def test_signing_out_in_another_tab_takes_this_tab_to_the_sign_in_page(page, alice, upstream):
    sign_in(page, "alice")
    conversation = start_conversation(page, 'hi fake:{"tokens": 2}')

    other = page.context.new_page()  # the same browser: the same session cookie
    other.goto("/")
    other.locator("form[action='/accounts/logout/'] button").click()
    expect(other).to_have_url(re.compile(r"/accounts/logout/|/accounts/login/"))

    # The first tab's socket is closed (4401) without it sending anything; the page goes to sign in.
    expect(page).to_have_url(re.compile(rf"/accounts/login/\?next=%2Fc%2F{conversation.id}%2F$"))
    expect(page.locator("#id_username")).to_be_visible()


def test_a_restarted_server_is_reconnected_to_quietly_and_the_page_catches_up(page, alice, upstream, server, app_env):
    sign_in(page, "alice")
    conversation = start_conversation(page, 'hello fake:{"tokens": 3}')
    wait_until_finished(page)
    connection = page.locator("#connection")
    expect(connection).to_have_text("")

    server.stop()
    expect(connection).to_have_text("Reconnecting…")
    # Meanwhile another tab (here: the database directly) adds nothing; the page must catch up
    # from the new snapshot: rename the conversation while the page is away.
    Conversation.objects.filter(pk=conversation.pk).update(title="Renamed while away")
    restarted = DaphneProcess({k: v for k, v in app_env.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}, port=server.port)
    try:
        expect(connection).to_have_text("")
        expect(page.locator("#title")).to_have_text("Renamed while away")
        ask(page, 'again fake:{"tokens": 3}')
        wait_until_finished(page, count=2)
    finally:
        restarted.stop()
