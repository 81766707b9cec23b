"""WSGI entry point for management tools; the app itself is served over ASGI (daphne)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
application = get_wsgi_application()
