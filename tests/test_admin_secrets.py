"""No secret of the server's appears in any admin page, download or review page.

The secrets are listed in one place, `server_secrets()`: the default upstream key,
each provider's key (plain and encrypted) and the keys that encrypt them, and
SECRET_KEY; a new kind of secret is added there.
Every page of every model registered in the admin is visited (its list, its add
page, the change page of each of its objects), with the staff review pages,
the exports and the joining pages, as a superuser who may read everything.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib import admin
from django.test import Client, RequestFactory
from django.urls import reverse

from conversations.accounts import invites
from conversations.models import AuditEntry, Message, Provider, ProviderModel
from tests.review_data import make_tree

pytestmark = pytest.mark.django_db(transaction=True)


def server_secrets() -> list[str]:
    """Every secret the server holds that a page must never show: the default upstream key,
    every provider's key (in plain and as stored), and the keys that protect them."""
    found = [settings.OPENAI_API_KEY, settings.SECRET_KEY, *settings.PROVIDER_KEY_SECRETS]
    for provider in Provider.objects.all():
        found += [provider.api_key, provider.api_key_encrypted]
    assert all(len(secret) >= 16 for secret in found), "a short secret would match by chance"
    return found


def registered_pages(superuser) -> list[str]:
    """The list, add and change pages of every model in the admin that a superuser may open."""
    request = RequestFactory().get("/admin/")
    request.user = superuser
    pages = ["/admin/", "/admin/password_change/"]
    for model, model_admin in admin.site._registry.items():
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages.append(reverse(f"{name}_changelist"))
        if model_admin.has_add_permission(request):
            pages.append(reverse(f"{name}_add"))
        for obj in model_admin.get_queryset(request).order_by()[:20]:
            pages.append(reverse(f"{name}_change", args=[obj.pk]))
    return pages


def test_no_admin_page_shows_a_secret(reviewer, alice, upstream, settings):
    settings.SIGNUP_ENABLED = True
    provider = Provider(name="Team gateway", base_url="https://gateway.example/v1")
    provider.set_api_key("sk-provider-SECRET-key-9876543210")
    provider.save()
    ProviderModel.objects.create(provider=provider, name="gpt-tree", enabled=True, context_length=8192)
    tree = make_tree(alice.user)
    Message.objects.filter(pk=tree.r1.pk).update(request={**tree.r1.request, "provider": provider.name})
    AuditEntry.record("view", actor=reviewer.user, owner=alice.user, conversation_id=tree.conversation.id)
    _invite, token = invites.create_invite(reviewer.user, note="for dave")
    conversation_list = reverse("admin:conversations_conversation_changelist")
    shown = {url: reviewer.client.get(url, follow=True) for url in registered_pages(reviewer.user) + [
        f"{conversation_list}{tree.conversation.id}/transcript/", f"{conversation_list}?q=marmalade",
        f"/admin/conversations/member/{alice.user.pk}/password/",
    ]}
    for action in ("export_json", "export_markdown"):
        shown[action] = reviewer.client.post(conversation_list, {
            "action": action, "_selected_action": [tree.conversation.id], "index": 0})
    shown["invite added"] = reviewer.client.post("/admin/conversations/invite/add/", {"note": "x", "days": 3},
                                                 follow=True)
    shown["invite page"] = Client().get(f"/accounts/invite/{token}/")
    shown["signup page"] = Client().get("/accounts/signup/")
    assert len(shown) > 20
    for where, page in shown.items():
        assert page.status_code == 200, (where, page.status_code)
        for secret in server_secrets():
            assert secret.encode() not in page.content, f"{where} shows a secret"
