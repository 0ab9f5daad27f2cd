# syntax=docker/dockerfile:1
# One image, every role: `serve` by default, the migrate job with MESSENGER_ROLE=migrator
# (or the command `python -m messenger migrate`), and `python -m messenger seed`.
#   docker build -t messenger .

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: the locked wheels, downloaded and checked against their hashes -------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /build
# Only the lock (scripts/lock): code changes do not rebuild this layer. Every pin is a
# published wheel whose SHA-256 is in the lock; a wheel compiled here would not match it, so
# this stage needs no compiler and --only-binary makes a missing wheel fail here, by name.
COPY requirements.lock ./
RUN pip download --dest /wheels --only-binary=:all: --require-hashes -r requirements.lock

# --- runtime: the interpreter, the wheels installed, the code; no compilers ----------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MESSENGER_ENV=production \
    PORT=4000

RUN groupadd --system --gid 10001 messenger \
    && useradd --system --uid 10001 --gid messenger --no-create-home --shell /usr/sbin/nologin messenger

# Dependencies in their own layer, installed from the build stage's wheels without copying
# them, each checked against the lock's hashes again.
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && pip install --no-index --find-links=/wheels --require-hashes -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock

# The code: `python -m messenger` runs from /app; its migrations are in messenger/migrations/.
WORKDIR /app
COPY messenger/ ./messenger/

USER 10001:10001
EXPOSE 4000

# Liveness of a serving instance; the one-off jobs disable it (compose) or exit before it runs.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '4000'), timeout=2)"]

# dumb-init is PID 1: it forwards SIGTERM to the service (which deregisters from Consul and
# drains) and reaps zombies.
ENTRYPOINT ["dumb-init", "--"]
CMD ["python", "-m", "messenger"]
