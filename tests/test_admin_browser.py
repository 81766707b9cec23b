"""The staff's pages in a real headless Chromium, served by a real daphne process: no
Content-Security-Policy violation, no console error, no page error, and hostile text inert.

The CSP allows scripts only from this site, none inline (settings.CONTENT_SECURITY_POLICY);
the admin's own pages and ours (the transcript, the audit log, invites, the joining pages)
must work under it. Chromium reports each violation as a console error and a
`securitypolicyviolation` event; both are collected on every page.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from conversations.accounts import invites
from conversations.models import AuditEntry, Message
from tests import browser as ui
from tests.browser import ASYNC_UNSAFE
from tests.conftest import DaphneProcess
from tests.review_data import make_tree

pytestmark = pytest.mark.django_db(transaction=True)

# The browser fixtures (tests/browser.py), used here by name; this module's server allows signup.
browser, fresh_channel_layer = ui.browser, ui.fresh_channel_layer

RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(e.violatedDirective + " " + (e.blockedURI || "inline")));
"""
HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


@pytest.fixture
def server(app_env):
    env = {key: value for key, value in app_env.items() if key != ASYNC_UNSAFE}
    env["SIGNUP_ENABLED"] = "true"
    process = DaphneProcess(env)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(base_url=server.origin, viewport={"width": 1280, "height": 900})
    context.add_init_script(RECORD_VIOLATIONS)
    tab = context.new_page()
    tab.problems = []
    tab.on("pageerror", lambda error: tab.problems.append(f"page error: {error}"))
    # A resource that fails to load is a console error too; the browser's own /favicon.ico is not ours.
    tab.on("console", lambda message: message.type == "error" and "Failed to load resource" not in message.text
           and tab.problems.append(f"console: {message.text}"))
    tab.on("response", lambda response: response.status >= 400 and not response.url.endswith("/favicon.ico")
           and tab.problems.append(f"{response.status}: {response.url}"))
    yield tab
    context.close()


def visit(page: Page, path: str) -> None:
    """Open a page and insist it broke no rule: no violation, console error or page error, nothing run."""
    response = page.goto(path)
    assert response is not None and response.ok, (path, response and response.status)
    page.wait_for_load_state("load")
    violations = page.evaluate("window.__violations")
    assert violations == [], f"{path}: CSP violations {violations}"
    assert page.problems == [], f"{path}: {page.problems}"
    assert page.evaluate("typeof window.__pwned") == "undefined", f"{path}: hostile text ran"


def test_the_staff_pages_keep_the_content_security_policy(page, alice):
    get_user_model().objects.create_superuser("boss", password="pw-boss-123")
    tree = make_tree(alice.user, title=HOSTILE)
    Message.objects.filter(pk=tree.r1.pk).update(content=HOSTILE)
    AuditEntry.record("view", actor_name="boss", owner=alice.user, conversation_id=tree.conversation.id)
    _invite, token = invites.create_invite(None, note=HOSTILE)

    page.goto("/admin/login/")
    page.get_by_label("Username").fill("boss")
    page.get_by_label("Password").fill("pw-boss-123")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/admin/$"))

    conversation_list = "/admin/conversations/conversation/"
    transcript = f"{conversation_list}{tree.conversation.id}/transcript/"
    entry = AuditEntry.objects.order_by("id").first()
    for path in ("/admin/", conversation_list, f"{conversation_list}?q=marmalade&status=errors", transcript,
                 "/admin/conversations/auditentry/", f"/admin/conversations/auditentry/{entry.pk}/change/",
                 "/admin/conversations/member/", f"/admin/conversations/member/{alice.user.pk}/change/",
                 f"/admin/conversations/member/{alice.user.pk}/password/", "/admin/conversations/member/add/",
                 "/admin/conversations/invite/", "/admin/conversations/invite/add/"):
        visit(page, path)

    # The transcript works without script: "what the model saw" opens as plain HTML.
    visit(page, transcript)
    seen = page.locator(f'details[data-seen-for="{tree.r2b.id}"]')
    seen.locator("summary").click()
    expect(seen.locator("li.sent").first).to_be_visible()
    expect(page.locator("#content-main img")).to_have_count(0)
    assert page.evaluate("window.__violations") == [] and page.problems == []

    # The admin's own scripts run under the policy: "select all" ticks every row's box.
    visit(page, conversation_list)
    page.locator("#action-toggle").check()
    expect(page.locator("input.action-select").first).to_be_checked()
    assert page.problems == []

    # Making an invite shows its link on the next page.
    visit(page, "/admin/conversations/invite/add/")
    page.locator("#id_note").fill("for a browser")
    page.locator("input[name=_save]").click()
    expect(page.locator("ul.messagelist")).to_contain_text("/accounts/invite/")
    assert page.evaluate("window.__violations") == [] and page.problems == []

    # The joining pages, signed out.
    page.context.clear_cookies()
    visit(page, f"/accounts/invite/{token}/")
    visit(page, "/accounts/signup/")
