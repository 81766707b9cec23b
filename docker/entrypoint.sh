#!/bin/sh
# Default command of the image: apply migrations, create the first staff member from
# ADMIN_USERNAME / ADMIN_PASSWORD (nothing when unset or when it exists), then serve HTTP
# and websockets. Any other command replaces this one, e.g.
#   docker compose run --rm web python manage.py purge_conversations
set -e

python manage.py migrate --noinput
python manage.py ensure_staff

# daphne through chatsite/server.py, which drops a websocket that stops reading
# (WS_SEND_BUFFER_BYTES). exec replaces the shell, so the server itself receives
# SIGTERM from `docker stop`.
exec python -m chatsite.server -b 0.0.0.0 -p 8000 chatsite.asgi:application
