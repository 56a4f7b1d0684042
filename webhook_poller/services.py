"""Wiring: build every plug-in the settings ask for, open them, close them.

One :class:`Services` object is made per process by the app's lifespan (or a test) and
handed to the scheduler and the HTTP routes; nothing here is a module global.
"""

from __future__ import annotations

import asyncio
import fnmatch
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
from aiolimiter import AsyncLimiter

from . import net, plugins
from .config import PollingSettings, Settings
from .errors import ConfigError
from .interfaces import BlobStorage, JobStore, Notifier, PluginContext, ProviderAdapter
from .links import LinkSigner
from .live import ChangeFeed
from .metrics import Metrics
from .sessions import SessionSource

log = structlog.get_logger(__name__)


class ModelRouter:
    """Model name -> adapter name through the ``models:`` glob patterns, first match wins."""

    def __init__(self, patterns: Mapping[str, str]) -> None:
        self.patterns = [(p.lower(), a) for p, a in patterns.items()]

    def adapter_for(self, model: str) -> str | None:
        name = model.strip().lower()
        for pattern, adapter in self.patterns:
            if fnmatch.fnmatchcase(name, pattern):
                return adapter
        return None

    def known(self) -> list[str]:
        return [p for p, _ in self.patterns]


class ProviderGate:
    """Per provider section: a request budget, a pause after 429, a minimum poll spacing."""

    #: Polling keys a provider section may override (a fast model can be polled sooner).
    OVERRIDABLE = ("interval_s", "first_poll_delay_s", "delayed_interval_s")

    def __init__(self, section: str, options: Mapping[str, Any], polling: PollingSettings) -> None:
        self.section = section
        overrides = {k: float(options[k]) for k in self.OVERRIDABLE if options.get(k) is not None}
        self.polling = polling.model_copy(update=overrides) if overrides else polling
        rate = float(options.get("max_requests_per_s") or 0)
        # max_rate=rate per 1 s with a small bucket spreads requests instead of bursting.
        self.limiter = AsyncLimiter(max(rate, 0.001), 1.0) if rate > 0 else None
        self.min_interval_s = float(options.get("min_interval_s") or 0.0)
        self.paused_until = 0.0

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        wait = self.paused_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.limiter is not None:
            await self.limiter.acquire()


@dataclass
class Services:
    """Everything the scheduler and routes share within one process."""

    settings: Settings
    store: JobStore
    blobs: BlobStorage
    router: ModelRouter
    adapters: dict[str, ProviderAdapter]
    gates: dict[str, ProviderGate]
    notifiers: list[Notifier]
    http: httpx.AsyncClient
    provider_http: httpx.AsyncClient
    sessions: SessionSource
    context: PluginContext
    instance_id: str = field(default_factory=lambda: f"inst-{uuid.uuid4().hex[:12]}")
    links: LinkSigner | None = None
    metrics: Metrics = field(default_factory=Metrics)
    changes: ChangeFeed = field(default_factory=ChangeFeed)

    def gate_for(self, adapter_name: str) -> ProviderGate:
        return self.gates[adapter_name]

    def callback_notifier(self, url: str) -> Notifier:
        cls = plugins.load("notifier", "webhook")
        notifier: Notifier = cls.for_callback(url, self.context)
        return notifier

    async def open(self) -> None:
        await self.store.open()
        await self.blobs.open()
        secret = self.settings.server.link_secret
        value = (
            secret.get_secret_value()
            if secret is not None
            else await self.store.get_or_create_secret("link_secret", secrets.token_urlsafe(32))
        )
        self.links = LinkSigner(value, self.settings.server.base_url())
        await self.sessions.open()

    async def close(self) -> None:
        for notifier in self.notifiers:
            closer = getattr(notifier, "aclose", None)
            if closer is not None:
                await closer()
        for adapter in self.adapters.values():
            closer = getattr(adapter, "aclose", None)
            if closer is not None:
                await closer()
        await self.sessions.close()
        await self.http.aclose()
        await self.provider_http.aclose()
        await self.blobs.close()
        await self.store.close()


def build_services(settings: Settings) -> Services:
    """Construct (not open) every plug-in; unknown names fail here, naming the known ones."""
    http = net.build_client(allow_private=settings.security.allow_private_urls, timeout_s=30.0)
    provider_http = httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=10.0),
        # httpcore checks every pooled connection on each request (a select() per idle
        # socket), so the pool is sized to the polls that can run at once, no bigger.
        limits=httpx.Limits(
            max_connections=settings.polling.concurrency,
            max_keepalive_connections=min(settings.polling.concurrency, 16),
        ),
        headers={"User-Agent": "webhook-poller"},
    )
    context = PluginContext(settings=settings, http=http)

    store_cls = plugins.load("store", plugins.scheme_of(settings.store.url))
    store: JobStore = store_cls(settings.store.model_dump(), context)
    blob_cls = plugins.load("blob", plugins.scheme_of(settings.storage.url))
    blobs: BlobStorage = blob_cls(_plain(settings.storage.model_dump()), context)
    context.blobs = blobs

    adapters: dict[str, ProviderAdapter] = {}
    gates: dict[str, ProviderGate] = {}
    section_gates: dict[str, ProviderGate] = {}
    routed = list(dict.fromkeys(settings.models.values()))
    # Every installed adapter is built, so intake's ``provider`` field can name one that no
    # ``models:`` pattern routes to; only the routed ones must load.
    for adapter_name in [*routed, *(n for n in plugins.available("adapter") if n not in routed)]:
        try:
            cls = plugins.load("adapter", adapter_name)
            section = getattr(cls, "config_section", adapter_name)
            options = settings.provider_options(section)
            adapters[adapter_name] = cls(options, context)
        except Exception as exc:
            if adapter_name in routed:
                raise
            log.warning("adapter_skipped", adapter=adapter_name, error=str(exc)[:200])
            continue
        if section not in section_gates:
            section_gates[section] = ProviderGate(section, options, settings.polling)
        gates[adapter_name] = section_gates[section]

    notifiers = build_notifiers(settings, context)
    return Services(
        settings=settings,
        store=store,
        blobs=blobs,
        router=ModelRouter(settings.models),
        adapters=adapters,
        gates=gates,
        notifiers=notifiers,
        http=http,
        provider_http=provider_http,
        sessions=SessionSource(settings, store),
        context=context,
    )


def build_notifiers(settings: Settings, context: PluginContext) -> list[Notifier]:
    counts: dict[str, int] = {}
    for item in settings.notifiers:
        counts[item["type"]] = counts.get(item["type"], 0) + 1
    seen: dict[str, int] = {}
    result: list[Notifier] = []
    names: set[str] = set()
    for item in settings.notifiers:
        kind = item["type"]
        seen[kind] = seen.get(kind, 0) + 1
        options = dict(item)
        if not options.get("name"):
            options["name"] = kind if counts[kind] == 1 else f"{kind}-{seen[kind]}"
        if options["name"] in names or options["name"] == "callback":
            raise ConfigError(f"notifiers: the name {options['name']!r} is used twice")
        names.add(options["name"])
        cls = plugins.load("notifier", kind)
        result.append(cls(options, context))
    return result


def _plain(options: dict[str, Any]) -> dict[str, Any]:
    """SecretStr values become strings for plug-ins that take plain options."""
    out = {}
    for key, value in options.items():
        getter = getattr(value, "get_secret_value", None)
        out[key] = getter() if callable(getter) else value
    return out
