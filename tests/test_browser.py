"""The chat page in a real headless Chromium, against the app as a real daphne
process (this test's Postgres, Redis and the fake upstream).

Chromium is Debian's (`apt-get install chromium`); Playwright never downloads
a browser here. Without /usr/bin/chromium these tests fail: CI installs it.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from channels.layers import channel_layers
from playwright.sync_api import Page, expect, sync_playwright

from conversations.models import Conversation, Message
from tests.conftest import DaphneProcess

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)

# Runs before every page's own scripts: records each text the assistant
# message bodies show, and whether that message was streaming at the time.
RECORD_ASSISTANT_TEXTS = """
window.__seen = [];
new MutationObserver(() => {
  for (const li of document.querySelectorAll("#messages li.message.assistant")) {
    const body = li.querySelector(".body");
    if (!body) continue;
    const entry = {id: li.dataset.id, text: body.textContent, streaming: li.classList.contains("streaming")};
    const last = window.__seen[window.__seen.length - 1];
    if (!last || last.id !== entry.id || last.text !== entry.text || last.streaming !== entry.streaming) {
      window.__seen.push(entry);
    }
  }
}).observe(document, {childList: true, subtree: true, characterData: true, attributes: true});
"""


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium with "
            "`apt-get update && apt-get install -y chromium` (Playwright's own browser download is not used).",
            pytrace=False,
        )
    # Playwright's sync API keeps its event loop marked as running in this thread
    # between calls (it is idle: calls switch greenlets). Django's async-safety
    # check would then refuse every ORM call of these tests and the test database
    # flush. Allow it in this process while this module runs; the app process
    # does not get it (see `server`).
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield launched
            finally:
                launched.close()
    finally:
        if previous is None:
            os.environ.pop(ASYNC_UNSAFE, None)
        else:
            os.environ[ASYNC_UNSAFE] = previous


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Replaces conftest's async fixture of that name for this module.

    pytest-asyncio cannot run an async fixture while Playwright's loop is marked
    as running, and this test process never uses the channel layer here: only
    the daphne process does.
    """
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def server(app_env):
    env = {key: value for key, value in app_env.items() if key != ASYNC_UNSAFE}
    process = DaphneProcess(env)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def page(browser, server):
    """A fresh browser profile on the app, failing the test on any uncaught page error."""
    context = browser.new_context(base_url=server.origin, viewport={"width": 1200, "height": 800})
    context.add_init_script(RECORD_ASSISTANT_TEXTS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def sign_in(page: Page, name: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(f"pw-{name}-123")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:\d+/$"))


def open_new_conversation(page: Page) -> Conversation:
    page.click("#new-conversation")
    expect(page).to_have_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    wait_for_snapshot(page)
    conversation_id = page.locator("#chat").get_attribute("data-conversation-id")
    return Conversation.objects.get(pk=conversation_id)


def wait_for_snapshot(page: Page) -> None:
    """The status line says "Connecting…" until the socket's snapshot arrives."""
    expect(page.locator("#status")).to_have_text("")


def ask(page: Page, question: str) -> None:
    box = page.locator("#input")
    box.click()
    box.press_sequentially(question)
    box.press("Enter")
    expect(box).to_have_value("")  # sent (the page clears it only once the socket took it)


def assistant(page: Page):
    return page.locator("#messages li.message.assistant")


def wait_until_finished(page: Page) -> None:
    expect(assistant(page)).to_have_count(1)
    expect(assistant(page)).not_to_have_class(re.compile(r"\bstreaming\b"))
    expect(assistant(page)).to_have_class(re.compile(r"\bcomplete\b"))


def shown_text(page: Page) -> str:
    return assistant(page).locator(".body").text_content()


def test_a_question_streams_into_the_page_and_matches_the_stored_reply(page, alice, upstream):
    sign_in(page, "alice")
    conversation = open_new_conversation(page)
    question = 'hello fake:{"tokens": 30, "delay": 0.02}'

    ask(page, question)
    expect(page.locator("#messages li.message.user .body")).to_have_text(question)
    expect(assistant(page).locator(".body")).to_contain_text("You said: hello")
    wait_until_finished(page)

    text = shown_text(page)
    row = Message.objects.get(conversation=conversation, role=Message.Role.ASSISTANT)
    assert row.status == Message.Status.COMPLETE
    assert text == row.content == upstream.requests[-1]["streamed_text"]
    assert text.startswith("You said: hello ") and text.endswith(" w29 ")

    # It arrived in pieces, each a prefix of the final text, while the message was streaming.
    seen = [entry for entry in page.evaluate("window.__seen") if entry["id"] == str(row.id)]
    partial = [entry["text"] for entry in seen if entry["streaming"] and entry["text"]]
    assert len(set(partial)) >= 2, f"expected several deltas, saw {partial}"
    assert all(text.startswith(piece) for piece in partial)

    conversation.refresh_from_db()
    assert conversation.title.startswith("hello")
    expect(page.locator("#title")).to_have_text(conversation.title)
    expect(page).to_have_title(f"{conversation.title} · Team chat")
    # The sidebar's entry for this conversation follows without a reload.
    expect(page.locator(".conversation-list li.current a")).to_have_text(conversation.title)
    stop_button = page.locator("#stop")
    expect(stop_button).to_be_hidden()


def test_model_output_and_titles_are_text_never_html(page, alice, upstream):
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    sign_in(page, "alice")
    conversation = open_new_conversation(page)
    reply = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> **bold**'
    question = "<img src=x onerror=window.__pwned=3> hi fake:" + json.dumps({"text": reply})

    ask(page, question)
    wait_until_finished(page)

    assert shown_text(page) == reply
    expect(assistant(page).locator(".body")).to_contain_text("<img")
    expect(page.locator("#messages li.message.user .body")).to_have_text(question)
    assert Message.objects.get(conversation=conversation, role=Message.Role.ASSISTANT).content == reply
    conversation.refresh_from_db()
    assert conversation.title.startswith("<img src=x onerror=window.__pwned=3>")
    expect(page.locator("#title")).to_have_text(conversation.title)
    expect(page.locator(".conversation-list li.current a")).to_have_text(conversation.title)

    def assert_inert() -> None:
        assert page.evaluate("typeof window.__pwned") == "undefined"
        expect(page.locator("#messages img")).to_have_count(0)
        expect(page.locator("#messages script")).to_have_count(0)
        expect(page.locator("img")).to_have_count(0)
        assert not [url for url in fetched if url.endswith("/x")], fetched

    assert_inert()

    # The title as the server renders it: in #title, the sidebar and <title>.
    page.reload()
    wait_for_snapshot(page)
    wait_until_finished(page)
    assert shown_text(page) == reply
    expect(page.locator("#title")).to_have_text(conversation.title)
    current = page.locator(".conversation-list li.current a")
    expect(current).to_have_text(conversation.title)
    expect(current).to_contain_text("<img src=x onerror=window.__pwned=3>")
    expect(page.locator(".sidebar img")).to_have_count(0)
    expect(page).to_have_title(f"{conversation.title} · Team chat")
    assert_inert()

    # And on the conversation list page.
    page.goto("/")
    expect(page.locator(".conversation-list a")).to_have_text([conversation.title])
    expect(page.locator("img")).to_have_count(0)
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_reloading_while_a_reply_streams_shows_it_exactly_once(page, alice, upstream):
    sign_in(page, "alice")
    conversation = open_new_conversation(page)

    ask(page, 'slow fake:{"tokens": 80, "delay": 0.03}')
    expect(assistant(page)).to_have_class(re.compile(r"\bstreaming\b"))
    expect(assistant(page).locator(".body")).to_contain_text(" w3 ")
    page.reload()

    wait_for_snapshot(page)
    wait_until_finished(page)
    text = shown_text(page)
    row = Message.objects.get(conversation=conversation, role=Message.Role.ASSISTANT)
    assert row.status == Message.Status.COMPLETE
    assert text == row.content == upstream.requests[-1]["streamed_text"]
    assert text.count("You said:") == 1 and text.endswith(" w79 ")
    assert len(upstream.requests) == 1

    # The reloaded page (a fresh window.__seen) really joined the reply mid-stream.
    seen = page.evaluate("window.__seen")
    assert any(entry["streaming"] for entry in seen), f"the reply had already ended at the reload: {seen}"
    assert all(text.startswith(entry["text"]) for entry in seen)


def test_an_anonymous_visit_is_sent_to_the_login_page(page):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#new-conversation")).to_have_count(0)


def test_signing_out_in_another_tab_takes_this_tab_to_the_sign_in_page(page, alice, upstream):
    sign_in(page, "alice")
    conversation = open_new_conversation(page)

    other = page.context.new_page()  # the same browser: the same session cookie
    other.goto("/")
    other.get_by_role("button", name="Sign out").click()
    expect(other).to_have_url(re.compile(r"/accounts/login/"))

    # The first tab's socket is closed (4401) without it sending anything; the page goes to sign in.
    expect(page).to_have_url(re.compile(rf"/accounts/login/\?next=%2Fc%2F{conversation.id}%2F$"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
