"""The pages (new chat, conversation, account, password, language switch) and the account API,
through Django's test client against the real database."""

from __future__ import annotations

import json

import pytest
from django.conf import settings

from conversations.models import Conversation, Member

pytestmark = pytest.mark.django_db


def page_data(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="page-data" type="application/json">') + len('<script id="page-data" type="application/json">')
    return json.loads(html[start:html.index("</script>", start)])


def test_a_new_chat_creates_nothing(alice):
    response = alice.client.get("/")
    assert response.status_code == 200
    assert not Conversation.objects.exists()
    data = page_data(response)
    assert data["conversation"] is None
    assert data["default_model"] == settings.DEFAULT_MODEL


def test_the_page_passes_its_data_as_json_never_as_script(alice):
    alice.conversation(title="</script><script>alert(1)</script>")
    response = alice.client.get("/")
    html = response.content.decode()
    assert "<script>alert(1)" not in html
    assert page_data(response)["conversations"][0]["title"] == "</script><script>alert(1)</script>"
    # No inline script at all: every <script> has a src, or is data.
    for tag in html.split("<script")[1:]:
        head = tag.split(">", 1)[0]
        assert "src=" in head or 'type="application/json"' in head, head
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_a_conversation_page_is_the_owners_only(alice, bob):
    conversation = alice.conversation(title="mine")
    assert alice.client.get(f"/c/{conversation.id}/").status_code == 200
    assert page_data(alice.client.get(f"/c/{conversation.id}/"))["conversation"]["title"] == "mine"
    assert bob.client.get(f"/c/{conversation.id}/").status_code == 404


def test_the_account_page_saves_language_theme_and_default_model(alice, upstream):
    response = alice.client.get("/account/")
    assert response.status_code == 200
    assert b"fake-model" in response.content  # the model server's list, as /api/models/ gives it
    response = alice.client.post("/account/", {"language": "zh-hans", "theme": "dark", "default_model": "fake-model"})
    assert response.status_code == 302
    member = Member.objects.get(pk=alice.user.pk)
    assert (member.language, member.theme, member.default_model) == ("zh-hans", "dark", "fake-model")
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"  # applies at once
    page = alice.client.get("/account/").content.decode()
    assert 'lang="zh-hans"' in page and 'data-theme="dark"' in page
    assert "你的设置已保存。" in page

    # Following the browser again clears the member's choice and the cookie.
    response = alice.client.post("/account/", {"language": "", "theme": "", "default_model": ""})
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == ""
    member.refresh_from_db()
    assert (member.language, member.theme, member.default_model) == ("", "", "")


def test_the_account_page_refuses_a_model_the_server_does_not_offer(alice, upstream):
    response = alice.client.post("/account/", {"language": "", "theme": "", "default_model": "no-such-model"})
    assert response.status_code == 200
    assert b"field-error" in response.content
    assert Member.objects.get(pk=alice.user.pk).default_model == ""


def test_without_the_model_server_the_default_model_is_free_text(alice, settings):
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # nothing listens there
    response = alice.client.get("/account/")
    assert b"could not be reached" in response.content
    alice.client.post("/account/", {"language": "en", "theme": "light", "default_model": "my-local-model"})
    assert Member.objects.get(pk=alice.user.pk).default_model == "my-local-model"


def test_the_review_notice_says_who_may_read_conversations(alice, settings):
    page = alice.client.get("/account/").content.decode()
    assert 'id="review-notice"' in page
    assert "Staff with the review permission can read your conversations in the review tool." in page
    assert "No one on staff has read your conversations." in page
    settings.STAFF_REVIEW_ENABLED = False
    page = alice.client.get("/account/").content.decode()
    assert "Staff review is switched off on this server" in page


def test_the_language_switch_sets_the_cookie_and_remembers_the_member(alice):
    response = alice.client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    assert Member.objects.get(pk=alice.user.pk).language == "zh-hans"
    assert "新对话" in alice.client.get("/").content.decode()


def test_the_language_switch_works_signed_out(client):
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/accounts/login/"})
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    assert "登录" in client.get("/accounts/login/").content.decode()


def test_the_member_language_wins_over_the_browser(alice):
    Member.objects.filter(pk=alice.user.pk).update(language="zh-hans")
    page = alice.client.get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'lang="zh-hans"' in page and "新对话" in page


def test_the_account_api_saves_the_theme(alice):
    response = alice.client.patch("/api/account/", json.dumps({"theme": "dark"}), content_type="application/json")
    assert response.status_code == 200
    assert response.json() == {"language": "", "theme": "dark", "default_model": "", "default_preset": None}
    assert Member.objects.get(pk=alice.user.pk).theme == "dark"


def test_the_account_api_answers_bad_input_with_json_errors(alice, client):
    response = alice.client.patch("/api/account/", json.dumps({"theme": "purple"}), content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid" and "theme" in response.json()["error"]["fields"]
    assert Member.objects.get(pk=alice.user.pk).theme == ""
    assert client.patch("/api/account/", "{}", content_type="application/json").status_code == 401


def test_the_account_api_needs_the_csrf_token(alice):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice.user)
    response = strict.patch("/api/account/", json.dumps({"theme": "dark"}), content_type="application/json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "csrf"


def test_params_errors_name_the_parameter(alice):
    conversation = alice.conversation()
    response = alice.client.patch(
        f"/api/conversations/{conversation.id}/",
        json.dumps({"params": {"temperature": 5, "top_p": 0.5, "stop": ["a"] * 5}}), content_type="application/json",
    )
    assert response.status_code == 400
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"params", "params.temperature", "params.stop"}
    assert fields["params.temperature"] == ["temperature must be a number from 0 to 2"]


@pytest.mark.parametrize("path", ["/accounts/password_change/", "/account/"])
def test_account_pages_need_a_member(client, path):
    response = client.get(path)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_password_change_page_is_the_apps(alice):
    page = alice.client.get("/accounts/password_change/").content.decode()
    assert "Changing your password signs you out of every other browser." in page
    assert 'name="new_password1"' in page
