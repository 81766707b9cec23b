"""Shared parts of the browser tests: Debian's Chromium through Playwright, the app as a real
daphne process (this test's Postgres, Redis and the fake upstream), and helpers that act as a
member would. Playwright never downloads a browser here; without /usr/bin/chromium the tests fail.
"""

from __future__ import annotations

import os
import re

import pytest
from channels.layers import channel_layers
from playwright.sync_api import Page, expect, sync_playwright

from conversations.models import Conversation
from tests.conftest import DaphneProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ASYNC_UNSAFE = "DJANGO_ALLOW_ASYNC_UNSAFE"
WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)
CONVERSATION_URL = re.compile(r"/c/([0-9a-f-]{36})/$")

# Runs before every page's own scripts: records each text the reply bodies show, and whether
# that message was streaming at the time.
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


def launch(playwright):
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's Chromium with "
            "`apt-get update && apt-get install -y chromium` (Playwright's own browser download is not used).",
            pytrace=False,
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps its event loop marked as running in this thread
    # between calls (it is idle: calls switch greenlets). Django's async-safety
    # check would then refuse every ORM call of these tests and the test database
    # flush. Allow it in this process while the module runs; the app process
    # does not get it (see `server`).
    previous = os.environ.get(ASYNC_UNSAFE)
    os.environ[ASYNC_UNSAFE] = "true"
    try:
        with sync_playwright() as playwright:
            launched = launch(playwright)
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
    """Replaces conftest's async fixture of that name for browser modules.

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


class Tabs:
    """Browser contexts on the app, each failing the test on an uncaught page error."""

    def __init__(self, browser, server):
        self.browser, self.server = browser, server
        self.contexts = []
        self.errors: list[str] = []

    def new(self, **options):
        options.setdefault("viewport", {"width": 1200, "height": 800})
        context = self.browser.new_context(base_url=self.server.origin, **options)
        context.add_init_script(RECORD_ASSISTANT_TEXTS)
        self.contexts.append(context)
        tab = context.new_page()
        self.watch(tab)
        return tab

    def watch(self, tab):
        tab.on("pageerror", lambda error: self.errors.append(str(error)))
        return tab

    def close(self):
        for context in self.contexts:
            context.close()


@pytest.fixture
def tabs(browser, server):
    opened = Tabs(browser, server)
    yield opened
    opened.close()
    assert not opened.errors, f"uncaught errors in the page: {opened.errors}"


@pytest.fixture
def page(tabs):
    """A fresh browser profile on the app."""
    return tabs.new()


def sign_in(page: Page, name: str) -> None:
    page.goto("/accounts/login/")
    page.locator("#id_username").fill(name)
    page.locator("#id_password").fill(f"pw-{name}-123")
    page.locator("form.stack button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"^http://127\.0\.0\.1:\d+/$"))


def ask(page: Page, question: str) -> None:
    """Type a question and press Enter; the box empties once the server has stored it."""
    expect(page.locator("#chat")).to_have_attribute("data-ready", "true")
    box = page.locator("#input")
    box.click()
    box.fill(question)
    box.press("Enter")
    expect(box).to_have_value("")


def start_conversation(page: Page, question: str) -> Conversation:
    """From a new chat: the first question creates the conversation, and the URL becomes its own."""
    ask(page, question)
    expect(page).to_have_url(CONVERSATION_URL)
    return Conversation.objects.get(pk=CONVERSATION_URL.search(page.url).group(1))


def replies(page: Page):
    return page.locator("#messages li.message.assistant")


def last_reply(page: Page):
    return replies(page).last


def wait_until_finished(page: Page, count: int = 1, status: str = "complete") -> None:
    expect(replies(page)).to_have_count(count)
    expect(last_reply(page)).not_to_have_class(re.compile(r"\bstreaming\b"))
    expect(last_reply(page)).to_have_class(re.compile(rf"\b{status}\b"))


def words(text: str) -> str:
    """Text with its whitespace folded: rendered Markdown keeps the words, not the spacing."""
    return " ".join(text.split())
