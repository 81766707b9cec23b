from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from conversations.accounts import throttle as login_throttle
from conversations.web import account, api, imports, presets, signup, uploads, views

# A path that matches nothing under /api/ answers JSON too (the contract's errors).
handler404 = api.not_found

urlpatterns = [
    path("", views.new_chat, name="index"),
    path("c/<uuid:conversation_id>/", views.conversation_page, name="conversation"),
    path("account/", views.account, name="account"),
    path("api/conversations/", api.conversations, name="api_conversations"),
    path("api/conversations/<str:conversation_id>/", api.conversation, name="api_conversation"),
    path("api/conversations/<str:conversation_id>/export", api.export, name="api_export"),
    path("api/models/", api.models, name="api_models"),
    path("api/uploads/", uploads.upload, name="api_uploads"),
    path("api/uploads/<str:attachment_id>", uploads.download, name="api_upload"),
    path("api/presets/", presets.preset_list, name="api_presets"),
    path("api/presets/<str:preset_id>/", presets.preset_detail, name="api_preset"),
    path("api/account/", account.account, name="api_account"),
    path("api/export", imports.export_all, name="api_export_all"),
    path("api/import", imports.import_file, name="api_import"),
    # Django's sign-in page, throttled (the rest of django.contrib.auth.urls as is).
    path("accounts/login/", login_throttle.LoginView.as_view(), name="login"),
    # Joining: an invite link from staff, or self-signup when SIGNUP_ENABLED is on.
    path("accounts/invite/<str:token>/", signup.invite, name="invite"),
    path("accounts/signup/", signup.signup, name="signup"),
    path("accounts/", include("django.contrib.auth.urls")),
    # The script's words, in the page's language (a script file: no inline script, CSP holds).
    path("jsi18n/", JavaScriptCatalog.as_view(domain="djangojs"), name="javascript-catalog"),
    # The language switch: Django's set_language, which also remembers a signed-in member's choice.
    path("i18n/setlang/", views.set_language, name="set_language"),
    path("admin/", admin.site.urls),
]
