#!/bin/sh
# Default command of the image: apply migrations, then serve HTTP and websockets.
# Any other command replaces this one, e.g.
#   docker compose run --rm web python manage.py createsuperuser
set -e

python manage.py migrate --noinput

# exec replaces the shell, so daphne itself receives SIGTERM from `docker stop`.
exec daphne -b 0.0.0.0 -p 8000 chatsite.asgi:application
