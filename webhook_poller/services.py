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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import httpx
import structlog
from aiolimiter import AsyncLimiter
from pydantic import SecretStr

from . import net, plugins
from .clock import Clock, SystemClock
from .config import PollingSettings, Settings
from .errors import ConfigError, StoreUnavailable
from .interfaces import (
    BlobStorage,
    BuildsCallbackTargets,
    ChecksCredentials,
    Closeable,
    JobStore,
    Notifier,
    PluginContext,
    ProviderAdapter,
)
from .links import LinkSigner
from .live import ChangeFeed
from .metrics import Metrics
from .policy import first_poll_delay_s
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


@runtime_checkable
class SharedBudget(Protocol):
    """A store that keeps the provider request budget and the 429 pause for every instance
    (the Redis store). Times are seconds; a store without these methods keeps both per
    process."""

    async def budget_take(self, section: str, rate: float, burst: int = 1) -> float: ...

    async def budget_pause(self, section: str, seconds: float) -> float: ...


@runtime_checkable
class SharedBatchBudget(SharedBudget, Protocol):
    """A :class:`SharedBudget` that also takes for several waiters in one round trip."""

    async def budget_take_many(
        self, section: str, rate: float, burst: int, count: int, ahead_s: float
    ) -> tuple[list[float], float]: ...


class ProviderGate:
    """Per provider section: a request budget, a pause after 429, a minimum poll spacing.

    With a :class:`SharedBudget` (the Redis store) the budget and the pause hold for every
    instance on that store: a request goes once Redis lets it take from the section's bucket
    (``max_requests_per_s``, a burst of :attr:`BURST`), and no instance takes while a pause
    set by any of them on a 429 lasts. One waiter per process asks Redis at a time, the others
    queue behind it. Without a shared budget (SQLite), or while Redis is unreachable, both are
    this process's own.

    ``builtin`` holds the plug-in's own defaults for the section (its ``Options`` model:
    KIE's 30 s spacing and 10 requests per second); ``options`` the keys set in the config.
    A built-in value never overrides a polling key the user set.
    """

    #: Polling keys a provider section may override (a fast model can be polled sooner).
    OVERRIDABLE = ("interval_s", "first_poll_delay_s", "delayed_interval_s")
    #: Requests the shared budget lets through at once: 1, so requests are spaced evenly and
    #: any 1 s window holds at most max_requests_per_s + 1 (one at each edge).
    BURST = 1
    #: With a batch-capable shared budget, the waiters queued in this process take their
    #: requests in one Redis call, each sent at its own slot at most this far ahead: one
    #: round trip per request capped an instance at one request per Redis round trip (about
    #: 450 polls/s). Short, so a 429 pause set meanwhile is missed no longer than a request
    #: already under way would miss it.
    RESERVE_AHEAD_S = 0.001

    def __init__(
        self,
        section: str,
        options: Mapping[str, Any],
        polling: PollingSettings,
        shared: SharedBudget | None = None,
        builtin: Mapping[str, Any] | None = None,
    ) -> None:
        self.section = section
        builtin = dict(builtin or {})
        options = {**builtin, **options}
        # A family's own polling key overrides polling.* for it; a built-in one (the demo's
        # 2 s) never beats a polling.* key the user set.
        overrides = {
            k: float(options[k])
            for k in self.OVERRIDABLE
            if options.get(k) is not None
            and not (k in polling.model_fields_set and options[k] == builtin.get(k))
        }
        self.polling = polling.model_copy(update=overrides) if overrides else polling
        # A first delay the user set rules; a built-in one is only a cap (one interval).
        explicit = "first_poll_delay_s" in polling.model_fields_set or options.get(
            "first_poll_delay_s"
        ) not in (None, builtin.get("first_poll_delay_s"))
        self.first_poll_delay_s = first_poll_delay_s(self.polling, explicit=explicit)
        self.rate = float(options.get("max_requests_per_s") or 0)
        # max_rate=rate per 1 s with a small bucket spreads requests instead of bursting.
        self.limiter = AsyncLimiter(max(self.rate, 0.001), 1.0) if self.rate > 0 else None
        # A built-in spacing (KIE's 30 s) never overrides an interval the user chose: it is
        # capped at that interval. A min_interval_s the user set rules.
        min_interval = float(options.get("min_interval_s") or 0.0)
        builtin_min = builtin.get("min_interval_s")
        user_interval = "interval_s" in polling.model_fields_set or "interval_s" in overrides
        if user_interval and options.get("min_interval_s") == builtin_min:
            min_interval = min(min_interval, self.polling.interval_s)
        self.min_interval_s = min_interval
        # Jobs that expect a push poll at push_fallback_interval_s; an interval_s the user
        # set rules over its default, as it does over the built-in spacing above.
        user_fallback = "push_fallback_interval_s" in polling.model_fields_set
        self.push_interval_s = (
            self.polling.interval_s
            if user_interval and not user_fallback
            else polling.push_fallback_interval_s
        )
        self.paused_until = 0.0
        self.shared = shared
        self._shared_down = False
        self._pending: set[asyncio.Task[None]] = set()
        self._turn = asyncio.Lock()
        self._waiters: list[asyncio.Future[float]] = []
        self._taker: asyncio.Task[None] | None = None

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        if self.shared is not None:
            task = asyncio.get_running_loop().create_task(self._share_pause(self.shared, seconds))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _share_pause(self, shared: SharedBudget, seconds: float) -> None:
        try:
            await shared.budget_pause(self.section, seconds)
        except StoreUnavailable:
            self._unshared()

    async def acquire(self) -> None:
        wait = self.paused_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.shared is not None:
            try:
                await self._acquire_shared(self.shared)
            except StoreUnavailable:
                self._unshared()
            else:
                self._shared_down = False
                return
        if self.limiter is not None:
            await self.limiter.acquire()

    async def _acquire_shared(self, shared: SharedBudget) -> None:
        if self.rate <= 0:  # no budget: only the shared pause
            await self._wait_shared(lambda: shared.budget_pause(self.section, 0))
            return
        if isinstance(shared, SharedBatchBudget):
            await self._take_batched(shared)
            return
        async with self._turn:
            await self._wait_shared(lambda: shared.budget_take(self.section, self.rate, self.BURST))

    async def _take_batched(self, shared: SharedBatchBudget) -> None:
        """Queue for a slot; one task at a time asks Redis for every waiter queued."""
        slot: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        if self._taker is None or self._taker.done():
            self._taker = asyncio.create_task(self._take_for_waiters(shared))
        delay = await slot
        if delay > 0:
            await asyncio.sleep(delay)

    async def _take_for_waiters(self, shared: SharedBatchBudget) -> None:
        while True:
            self._waiters = [w for w in self._waiters if not w.done()]  # drop the cancelled
            if not self._waiters:
                return
            try:
                delays, wait = await shared.budget_take_many(
                    self.section, self.rate, self.BURST, len(self._waiters), self.RESERVE_AHEAD_S
                )
            except Exception as exc:  # each waiter decides (StoreUnavailable: its own budget)
                for waiter in self._waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                self._waiters = []
                return
            if not delays:
                await asyncio.sleep(wait)
                continue
            granted, self._waiters = self._waiters[: len(delays)], self._waiters[len(delays) :]
            for waiter, delay in zip(granted, delays, strict=True):
                if not waiter.done():  # a cancelled waiter's slot goes unused
                    waiter.set_result(delay)

    @staticmethod
    async def _wait_shared(ask: Callable[[], Awaitable[float]]) -> None:
        """Ask Redis until it says go (0); between asks, sleep as long as it says."""
        wait = await ask()
        while wait > 0:
            await asyncio.sleep(wait)
            wait = await ask()

    def _unshared(self) -> None:
        if not self._shared_down:
            self._shared_down = True
            log.warning("rate_budget_unshared", provider=self.section, reason="store_unreachable")


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
    #: Create-call budgets per provider section (submission.SubmitGate), made on first use.
    submit_gates: dict[str, Any] = field(default_factory=dict)
    #: The notifier class that targets a request's ``callbackUrl`` (checked at build time).
    callback_targets: BuildsCallbackTargets | None = None
    #: The time the scheduler and the delivery outbox read (a fake one in unit tests).
    clock: Clock = field(default_factory=SystemClock)

    def gate_for(self, adapter_name: str) -> ProviderGate:
        return self.gates[adapter_name]

    def missing_credentials(self, adapter_name: str) -> str | None:
        """What the adapter still needs configured before it can poll (its own hook)."""
        adapter = self.adapters.get(adapter_name)
        missing = adapter.missing_credentials() if isinstance(adapter, ChecksCredentials) else None
        return str(missing) if missing else None

    def callback_notifier(self, url: str) -> Notifier:
        """The one-off target of a request's ``callbackUrl``."""
        if self.callback_targets is None:
            self.callback_targets = callback_targets()
        return self.callback_targets.for_callback(url, self.context)

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
        await close_plugins(self)
        await self.sessions.close()
        await self.http.aclose()
        await self.provider_http.aclose()
        await self.blobs.close()
        await self.store.close()


async def close_plugins(services: Services) -> None:
    """Close the clients the notifiers and adapters hold of their own (:class:`Closeable`)."""
    for item in (*services.notifiers, *services.adapters.values()):
        if isinstance(item, Closeable):
            await item.aclose()


#: The notifier plug-in that targets a request's ``callbackUrl``.
CALLBACK_NOTIFIER = "webhook"


def callback_targets() -> BuildsCallbackTargets:
    """The notifier class behind ``callbackUrl`` targets, checked for its capability."""
    cls = plugins.load("notifier", CALLBACK_NOTIFIER)
    if not isinstance(cls, BuildsCallbackTargets):
        raise ConfigError(f"notifier {CALLBACK_NOTIFIER!r} cannot target a callbackUrl")
    return cls


def build_services(settings: Settings) -> Services:
    """Construct (not open) every plug-in; unknown names fail here, naming the known ones."""
    http = net.build_client(
        allow_private=settings.security.allow_private_urls,
        timeout_s=30.0,
        allowed=settings.security.allowlist(),
    )
    provider_http = net.build_provider_client(concurrency=settings.polling.concurrency)
    context = PluginContext(settings=settings, http=http)

    store_cls = plugins.load("store", plugins.scheme_of(settings.store.url))
    store: JobStore = store_cls(settings.store.model_dump(), context)
    blob_cls = plugins.load("blob", plugins.scheme_of(settings.storage.url))
    blobs: BlobStorage = blob_cls(_plain(settings.storage.model_dump()), context)
    context.blobs = blobs

    adapters: dict[str, ProviderAdapter] = {}
    gates: dict[str, ProviderGate] = {}
    section_gates: dict[str, ProviderGate] = {}
    shared = store if isinstance(store, SharedBudget) else None
    routed = list(dict.fromkeys(settings.models.values()))
    # Every installed adapter is built, so intake's ``provider`` field can name one that no
    # ``models:`` pattern routes to; only the routed ones must load. The declarative adapter
    # is only ever built from a ``providers`` section that names it with ``type:``.
    unrouted = [n for n in plugins.available("adapter") if n not in routed and n != "declarative"]
    for adapter_name in [*routed, *unrouted]:
        try:
            cls, section = adapter_class(settings, adapter_name)
            options = settings.provider_options(section)
            if section == adapter_name and options.get("type"):
                options = _typed_options(cls, adapter_name, options)
            adapters[adapter_name] = cls(options, context)
        except Exception as exc:
            if adapter_name in routed:
                raise
            log.warning("adapter_skipped", adapter=adapter_name, error=str(exc)[:200])
            continue
        if section not in section_gates:
            builtin = plugins.option_defaults(cls)
            section_gates[section] = ProviderGate(
                section, options, settings.polling, shared, builtin
            )
        gates[adapter_name] = section_gates[section]

    notifiers = build_notifiers(settings, context)
    services = Services(
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
        callback_targets=callback_targets(),
    )
    for adapter_name in adapters:
        missing = services.missing_credentials(adapter_name)
        models = [p for p, a in settings.models.items() if a == adapter_name]
        if missing and models:  # routed; an unrouted one is only reached by intake's provider
            log.warning(
                "provider_key_missing",
                adapter=adapter_name,
                models=models,
                missing=missing,
                effect="jobs for these models are refused at intake with 422",
            )
    return services


def adapter_class(settings: Settings, adapter_name: str) -> tuple[Any, str]:
    """The class and config section behind a ``models:`` value.

    A value naming a ``providers`` section with a ``type`` (``type: declarative``) is that
    adapter class configured by that section; any other value is an adapter's entry point.
    """
    kind = settings.provider_options(adapter_name).get("type")
    if isinstance(kind, str) and kind:
        return plugins.load("adapter", kind), adapter_name
    cls = plugins.load("adapter", adapter_name)
    return cls, plugins.config_section(cls, adapter_name)


def _typed_options(cls: Any, adapter_name: str, options: dict[str, Any]) -> dict[str, Any]:
    """A ``type:`` section with its adapter's documented defaults filled in (the gate reads
    ``min_interval_s`` and ``max_requests_per_s`` from them) and its own name."""
    model = plugins.options_model(cls)
    if model is not None and "name" in model.model_fields:
        filled: dict[str, Any] = model.model_validate(options).model_dump(exclude_none=True)
        return {**filled, "name": adapter_name}
    return options


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
        out[key] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return out
