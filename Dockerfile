# webhook-poller: slim, non-root, with a health check.
# Build:  docker build -t webhook-poller .
# Run:    docker run -p 8080:8080 -e WEBHOOK_POLLER_SERVER__AUTH_TOKEN=... -v wp-data:/app/data webhook-poller
# The container listens on 0.0.0.0, so it refuses to start without server.auth_token
# (or server.allow_unauthenticated: true when something else guards access).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook_poller ./webhook_poller
COPY adapters ./adapters
COPY notifiers ./notifiers
# Wheels for the package and every dependency; the runtime stage installs only these.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WEBHOOK_POLLER_SERVER__HOST=0.0.0.0 \
    WEBHOOK_POLLER_SERVER__PORT=8080
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels webhook-poller \
    && rm -rf /wheels
WORKDIR /app
RUN mkdir -p /app/data && chown app:app /app/data
USER app
VOLUME ["/app/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"]
# exec form: the server is PID 1 and receives SIGTERM for a clean shutdown.
CMD ["webhook-poller", "serve"]
