from django.contrib import admin
from django.urls import include, path

from conversations.accounts import throttle as login_throttle
from conversations.web import api, views

urlpatterns = [
    path("", views.index, name="index"),
    path("c/<uuid:conversation_id>/", views.conversation_page, name="conversation"),
    path("c/new/", views.new_conversation, name="new_conversation"),
    path("api/conversations/", api.conversations, name="api_conversations"),
    path("api/conversations/<str:conversation_id>/", api.conversation, name="api_conversation"),
    path("api/conversations/<str:conversation_id>/export", api.export, name="api_export"),
    path("api/models/", api.models, name="api_models"),
    # Django's sign-in page, throttled (the rest of django.contrib.auth.urls as is).
    path("accounts/login/", login_throttle.LoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
