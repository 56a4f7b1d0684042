# webhook-poller: slim, non-root, with a health check.
# Build:  docker build -t webhook-poller .
# Run:    docker run -p 8080:8080 -e WEBHOOK_POLLER_SERVER__AUTH_TOKEN=... -v wp-data:/app/data webhook-poller
# The container listens on 0.0.0.0, so it refuses to start without server.auth_token
# (or server.allow_unauthenticated: true when something else guards access).
#
# Data folder: the app runs as uid 10001. A named volume (-v wp-data:/app/data) takes the
# image's ownership and just works; a bind-mounted host folder keeps its host owner, so give
# it to that uid first (`sudo chown -R 10001 ./data`) or run as yourself
# (`--user "$(id -u):$(id -g)"`).

# Python 3.11 slim (Debian bookworm), pinned by digest so a rebuild starts from the same
# bytes. The digest is the one published for this tag; it was taken from a public pin file,
# not pulled here: check it with `docker buildx imagetools inspect python:3.11.10-slim-bookworm`
# and bump tag and digest together to pick up base-image security fixes.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# 1. Dependencies, at the versions the tests ran with (constraints.txt). This layer depends on
#    pyproject.toml and constraints.txt only, so a source change does not rebuild it.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write('\n'.join(deps))" \
    && pip wheel --no-cache-dir --wheel-dir /wheels -r requirements.txt -c constraints.txt \
    && cp constraints.txt /wheels/constraints.txt
# 2. The package itself, without dependencies (they are wheels already).
COPY README.md LICENSE MANIFEST.in config.example.yaml ./
COPY webhook_poller ./webhook_poller
COPY adapters ./adapters
COPY notifiers ./notifiers
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WEBHOOK_POLLER_SERVER__HOST=0.0.0.0 \
    WEBHOOK_POLLER_SERVER__PORT=8080
RUN groupadd --gid 10001 app \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin app
COPY --from=build /wheels /wheels
# Only the wheels built above, each at its pinned version; the package name resolves to the
# one wheel of it in /wheels.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-index --find-links=/wheels -c /wheels/constraints.txt \
        webhook-poller \
    && rm -rf /wheels
WORKDIR /app
RUN mkdir -p /app/data && chown 10001:10001 /app/data
USER 10001:10001
VOLUME ["/app/data"]
EXPOSE 8080
# Checks the port the server is told to use (WEBHOOK_POLLER_SERVER__PORT), so
# `-e WEBHOOK_POLLER_SERVER__PORT=9000` keeps the container healthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('WEBHOOK_POLLER_SERVER__PORT') or '8080'; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
# exec form: the server is PID 1 and receives SIGTERM for a clean shutdown.
CMD ["webhook-poller", "serve"]
