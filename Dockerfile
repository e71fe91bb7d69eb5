# Replicator service image.
#   docker build -t replicator .
#   docker run -v $PWD/replicator.yaml:/etc/replicator/replicator.yaml:ro -p 9108:9108 replicator
# The default command is `replicator run --config /etc/replicator/replicator.yaml`. ENTRYPOINT and CMD
# are split so other subcommands run from the same image, e.g.
#   docker compose run --rm replicator status --config /etc/replicator/replicator.yaml
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the wheel needs (see .dockerignore): pyproject.toml names README.md as the readme, and
# hatchling packages replicator/. confluent-kafka and psycopg[binary] ship manylinux wheels, so no
# compiler is needed on slim.
COPY pyproject.toml README.md ./
COPY replicator ./replicator
RUN pip install . \
 && rm -rf /src \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin replicator \
 && mkdir -p /etc/replicator

WORKDIR /
USER replicator

# /metrics and /healthz on metrics.listen. The built-in default 127.0.0.1:9108 is unreachable from
# other containers; configs that say `listen: ${REPLICATOR_METRICS_LISTEN:-127.0.0.1:9108}` (as the
# sample does) pick up this image default instead.
ENV REPLICATOR_METRICS_LISTEN=0.0.0.0:9108
EXPOSE 9108

# slim has no curl: probe with the interpreter. Override REPLICATOR_HEALTH_URL if metrics.listen
# uses another port.
ENV REPLICATOR_HEALTH_URL=http://127.0.0.1:9108/healthz
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['REPLICATOR_HEALTH_URL'], timeout=4).status == 200 else 1)"]

ENTRYPOINT ["replicator"]
CMD ["run", "--config", "/etc/replicator/replicator.yaml"]
