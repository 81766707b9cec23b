# The chat server: Django + Channels served by daphne (HTTP and websockets on port 8000).
# Build: docker build -t chat .   Run with its database and Redis: docker compose up
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user owns and runs the app.
RUN groupadd --system app && useradd --system --gid app --home-dir /app --no-create-home app \
    && mkdir /app && chown app:app /app
WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

# Only what the server needs (no .venv, .env, tests or local databases in the image).
COPY --chown=app:app manage.py ./
COPY --chown=app:app chatsite ./chatsite
COPY --chown=app:app conversations ./conversations
COPY --chown=app:app templates ./templates
COPY --chown=app:app static ./static
COPY --chown=app:app docker ./docker

RUN mkdir /app/media && chown app:app /app/media
USER app

# Settings refuse to start without SECRET_KEY, so collectstatic gets a throwaway one
# for this step only; it is not kept in the image.
RUN SECRET_KEY=collectstatic-build-only python manage.py collectstatic --noinput

EXPOSE 8000

# migrate, then daphne (through chatsite/server.py) on 0.0.0.0:8000 (see docker/entrypoint.sh).
CMD ["/bin/sh", "/app/docker/entrypoint.sh"]
