# Settle application image: one image for the gateway, the Celery workers, beat,
# Flower and the one-shot `settle migrate`. Every process is `settle serve NAME`
# (command lines defined once, in settle/processes.py). The default command runs the
# gateway: one process per core (SETTLE_WEB_PROCESSES); docker-compose.yml picks the
# other processes.
#
#   docker build -t settle .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=... -e REDIS_URL=... \
#       -e SETTLE_JWT_SECRET=... -e SETTLE_WEBHOOK_ENCRYPTION_KEY=... \
#       -e SETTLE_METRICS_TOKEN=... -e SETTLE_AUDIT_KEY=... settle
#
# Optional: SETTLE_BROKER_URL=amqp://... makes RabbitMQ the broker (Redis otherwise).
#
# The image is production unless told otherwise (SETTLE_ENVIRONMENT=production):
# without those secrets every process refuses to start rather than run with the
# publicly known development keys.

# ---------------------------------------------------------------------------
# builder: install Settle and its runtime dependencies into /opt/venv
# ---------------------------------------------------------------------------
FROM python:3.12-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore keeps .venv, var/, .git, .env and caches out of the context.
COPY . .
# A regular (non-editable) install without the dev extras: pip builds the
# wheel and byte-compiles everything into the venv, so the runtime stage
# needs neither the sources nor write access to site-packages.
RUN pip install .

# ---------------------------------------------------------------------------
# runtime: the venv only, run by an unprivileged user
# ---------------------------------------------------------------------------
FROM python:3.12-slim AS runtime

# Containers listen on every interface (the dev default is 127.0.0.1), and beat keeps
# its schedule where the unprivileged user may write.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SETTLE_ENVIRONMENT=production \
    SETTLE_HTTP_HOST=0.0.0.0 \
    SETTLE_HTTP_PORT=8000 \
    SETTLE_FLOWER_ADDRESS=0.0.0.0 \
    SETTLE_BEAT_SCHEDULE=/tmp/celerybeat-schedule \
    SETTLE_AUDIT_CHECKPOINT_PATH=/var/lib/settle/audit/checkpoints.jsonl

RUN groupadd --system --gid 10001 settle \
    && useradd --system --uid 10001 --gid settle --create-home --home-dir /home/settle \
       --shell /usr/sbin/nologin settle \
    && install -d -o settle -g settle -m 0700 /var/lib/settle/audit \
    && install -d -o settle -g settle -m 0700 /var/lib/settle/metrics

# Owned by root and read-only for `settle`: the processes cannot modify their own code.
COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER settle

EXPOSE 8000

# Liveness of the gateway (the default command). Compose disables it for the
# services that override the command and listen on no HTTP port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# The supervisor forwards SIGTERM to its gateway processes and exits 0 once they stopped.
CMD ["settle", "serve", "web"]
