#!/bin/sh
# Default command of the image: apply migrations, then serve HTTP and websockets.
# Any other command replaces this one, e.g.
#   docker compose run --rm web python manage.py createsuperuser
set -e

python manage.py migrate --noinput

# daphne through chatsite/server.py, which drops a websocket that stops reading
# (WS_SEND_BUFFER_BYTES). exec replaces the shell, so the server itself receives
# SIGTERM from `docker stop`.
exec python -m chatsite.server -b 0.0.0.0 -p 8000 chatsite.asgi:application
