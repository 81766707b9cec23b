"""ASGI entry point: HTTP through Django, websockets through Channels."""

import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()  # set up Django before importing consumers

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from conversations.chat import broadcast  # noqa: E402
from conversations.outages import CloseOnDatabaseOutage  # noqa: E402
from conversations.realtime.origin import SameOriginValidator  # noqa: E402
from conversations.realtime.routing import websocket_urlpatterns  # noqa: E402

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": CloseOnDatabaseOutage(
            SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)


async def application(scope, receive, send):
    """The router, on the loop that sends what writes outside a socket announce (chat/broadcast.py)."""
    broadcast.bind_loop(asyncio.get_running_loop())
    return await router(scope, receive, send)
