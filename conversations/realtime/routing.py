from django.urls import path

from conversations.realtime.consumers import ConversationConsumer, MemberConsumer

websocket_urlpatterns = [
    path("ws/conversations/<str:conversation_id>/", ConversationConsumer.as_asgi()),
    path("ws/member/", MemberConsumer.as_asgi()),
]
