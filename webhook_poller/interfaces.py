"""The four plug-in families and the value types they exchange with the core.

Each family is a ``typing.Protocol``: a plug-in does not inherit from us, it only has to
look right. Implementations are found through entry points (see :mod:`.plugins`):

=========================  ==================  =================================
entry-point group          protocol            built-ins
=========================  ==================  =================================
webhook_poller.adapters    ProviderAdapter     demo, kie-veo, kie-market
webhook_poller.notifiers   Notifier            log, webhook (+ the callback)
webhook_poller.stores      JobStore            sqlite (redis later)
webhook_poller.blobs       BlobStorage         file (s3 later)
=========================  ==================  =================================

Every plug-in class is constructed as ``cls(options, context)``: ``options`` is its own
block of the config file as a mapping, ``context`` a :class:`PluginContext`.

What a plug-in may do beyond its family's Protocol is a small ``runtime_checkable``
capability Protocol (``Submits``, ``Downloads``, ``HasRoutes``, ``Closeable`` ...): the
plug-in implements it or not, and the core asks ``isinstance``, never ``getattr``. The
table in docs/design.md lists each capability and who calls it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import (  # _ProtocolMeta: the metaclass a cached capability check extends
    TYPE_CHECKING,
    Any,
    ClassVar,
    Protocol,
    _ProtocolMeta,
    runtime_checkable,
)

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    from pydantic import BaseModel
    from starlette.routing import BaseRoute

    from .config import Settings
    from .model import Delivery, ErrorCode, Event, Job, VideoMetadata


class _CapabilityMeta(_ProtocolMeta):
    """``isinstance`` against a capability, answered once per plug-in class.

    On Python 3.11 a ``runtime_checkable`` check walks the Protocol's members on every call
    (10-30 us), and the core asks on every intake and every poll. What a plug-in class can do
    does not change, so the answer is kept per class (or per class object, for class-level
    capabilities). Only for capabilities whose members are methods or ClassVars: one with
    instance attributes (:class:`ReceivesBotUpdates`) is checked afresh each time.
    """

    def __instancecheck__(cls, instance: Any) -> bool:
        key = instance if isinstance(instance, type) else type(instance)
        # "_abc_" names are not protocol members, so the cache is not asked of plug-ins.
        cache: dict[type, bool] | None = cls.__dict__.get("_abc_capability_cache")
        if cache is None:
            cache = {}
            type.__setattr__(cls, "_abc_capability_cache", cache)
        found = cache.get(key)
        if found is None:
            found = cache[key] = super().__instancecheck__(instance)
        return found


# --- provider adapters -------------------------------------------------------------------


class PollStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ProviderTask:
    """What an adapter needs to know about the task it polls."""

    task_id: str
    model: str
    provider: str


@dataclass(frozen=True, slots=True)
class PollResult:
    """One normalized answer from a provider.

    ``detail`` is the provider's own text, for logs only. A succeeded result with no
    ``video_urls`` is polled again a few times before the job fails with output_missing.
    """

    status: PollStatus
    video_urls: tuple[str, ...] = ()
    error_code: ErrorCode | None = None
    detail: str | None = None
    progress: float | None = None


@runtime_checkable
class ProviderAdapter(Protocol):
    """Asks one provider API about one task.

    ``poll`` returns a :class:`PollResult` for every answer that says something about the
    task, raises ``ProviderUnavailable`` (or ``UnrecognizedResponse``) for poll-level
    trouble that says nothing about it (timeouts, 5xx, 429, unreadable bodies), and raises
    ``ProviderTaskFailed`` when the answer is final but not about the task (bad API key,
    no credits). It never lets a parsing error escape.

    Optional capabilities are the small Protocols below (:class:`Downloads`,
    :class:`Submits`, :class:`FindsTasks`, :class:`FollowsUp`, :class:`ReceivesCallbacks`,
    :class:`HasOwnCadence`, :class:`ChecksCredentials`, :class:`HasRoutes`,
    :class:`Closeable`): an adapter implements one or not, and the core asks ``isinstance``.
    Class attributes: ``config_section`` (:class:`HasConfigSection`; default the adapter
    name), ``Options`` (:class:`HasOptions`, see :mod:`.options`: the adapter's own keys
    and defaults, such as KIE's 30 s spacing and 10 requests per second) and
    ``result_link_ttl_s`` (how long the provider's result links live). A download answered
    403, 404 or 410 makes the core call ``poll`` once more for fresh links. The API key goes
    only to the provider's own host: ``download`` may add it for URLs on that host only.
    """

    name: str

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult: ...


@dataclass(frozen=True, slots=True)
class CallbackHint:
    """What a provider push says: which task it is about, and what it claims.

    ``status`` is the provider's claim, for logs only: a push is never trusted with a result.
    The core re-reads the task from the status endpoint (a poll now) before any result URL
    is used, because some signatures cover only the task id (KIE) and some pushes are not
    signed at all (Luma, MiniMax).
    """

    task_id: str
    status: PollStatus | None = None
    #: Other spellings of the same task id a caller may have posted (Gemini's ``v1beta/``).
    aliases: tuple[str, ...] = ()


@runtime_checkable
class ReceivesCallbacks(Protocol, metaclass=_CapabilityMeta):
    """An adapter whose provider can push to ``POST /callbacks/{provider}``.

    ``parse_callback`` reads the raw push (headers lower-cased) and returns the provider task
    id, or ``None`` when the body names no task; it never raises on what a provider sends.
    ``verify_callback`` answers whether the push may be acted on: ``True`` when its signature
    checks out, or when nothing is configured to check it with (the push stays a hint);
    ``False`` when a secret or key set is configured and the signature is missing or wrong.
    It may fetch public key material (fal's JWKS) with ``http``; it never raises either.
    """

    def parse_callback(self, headers: Mapping[str, str], body: bytes) -> CallbackHint | None: ...

    async def verify_callback(
        self,
        headers: Mapping[str, str],
        body: bytes,
        hint: CallbackHint,
        http: httpx.AsyncClient,
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    """What one model accepts, declared by the adapter that submits to it.

    An empty tuple means "not offered": a request naming any value for that field is refused
    (leaving the field out is always fine). Images: between ``min_images`` and
    ``max_images`` URLs in ``imageUrls``.
    """

    durations_s: tuple[int, ...] = ()
    aspect_ratios: tuple[str, ...] = ()
    resolutions: tuple[str, ...] = ()
    min_images: int = 0
    max_images: int = 0


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One provider task to start: the caller's checked ``POST /generate`` fields.

    ``index`` is the task's place among the job's ``count`` tasks (0..count-1);
    ``callback_url`` is where the provider may push the result (``None``: poll only).
    ``options`` holds the provider-specific fields, already checked against the adapter's
    ``GenerateOptions`` model. ``job_id`` is our job's id: an adapter whose provider takes a
    caller-chosen task id (Kling's ``external_task_id``) derives one from it, so ``find_task``
    can look the task up after a crash.
    """

    model: str
    prompt: str
    image_urls: tuple[str, ...] = ()
    aspect_ratio: str | None = None
    duration_s: int | None = None
    resolution: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    index: int = 0
    callback_url: str | None = None
    job_id: str = ""


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """A task the provider accepted; ``detail`` is provider text for logs only."""

    task_id: str
    detail: str | None = None


@runtime_checkable
class Submits(Protocol, metaclass=_CapabilityMeta):
    """An adapter that can start generations as well as poll them (``POST /generate``).

    ``submit`` returns the new task's id. It raises ``ProviderUnavailable`` only when the
    provider certainly started nothing (connection refused, a 429 KIE rejects without
    queueing): the job stays ``submitting`` and is tried again later. It raises
    ``ProviderTaskFailed`` for a final refusal (bad key, no credits, invalid input) and
    ``SubmissionUncertain`` when a task may have been started (timeout after sending, 5xx):
    the core never submits blindly again, it asks ``find_task`` or fails the job.

    Class attributes: ``capabilities: ClassVar[Mapping[str, ModelCapabilities]]`` (model name
    -> what it accepts; only these models can be generated), ``GenerateOptions:
    ClassVar[type[pydantic.BaseModel]]`` (the ``options`` it passes through) and
    ``submit_budget: ClassVar[tuple[int, float]]`` (new generations per seconds per account).

    Optional: :class:`FindsTasks` looks a task up at the provider after a crash between
    the create call and its record; :class:`HasGenerateOptions` and
    :class:`HasSubmitBudget` declare the other two class attributes.
    """

    capabilities: ClassVar[Mapping[str, ModelCapabilities]]

    async def submit(self, request: GenerationRequest, http: httpx.AsyncClient) -> SubmitResult: ...


@runtime_checkable
class HasGenerateOptions(Protocol, metaclass=_CapabilityMeta):
    """A submitting adapter that passes provider-specific ``options`` through; without it
    (or with plain ``BaseModel``) a request naming any option is refused."""

    GenerateOptions: ClassVar[type[BaseModel]]


@runtime_checkable
class HasSubmitBudget(Protocol, metaclass=_CapabilityMeta):
    """A submitting adapter that knows its account's create-call budget: ``(count,
    seconds)``, new generations per seconds (KIE: 20 per 10 s). Without it the core uses a
    cautious default."""

    submit_budget: ClassVar[tuple[int, float]]


@runtime_checkable
class FindsTasks(Protocol, metaclass=_CapabilityMeta):
    """An adapter that can look up the task a lost create call may have started, so the
    core never submits blindly twice; ``None`` when the provider has no such task."""

    async def find_task(
        self, request: GenerationRequest, http: httpx.AsyncClient
    ) -> str | None: ...


@runtime_checkable
class FollowsUp(Protocol, metaclass=_CapabilityMeta):
    """An adapter that can start a follow-up of a finished task (``POST /jobs/{id}/extend``
    / ``upscale``, see :mod:`.followups`); ``follow_ups`` names the kinds it offers."""

    follow_ups: ClassVar[frozenset[str]]

    async def follow_up(
        self,
        request: Mapping[str, Any],
        model: str,
        callback_url: str | None,
        http: httpx.AsyncClient,
    ) -> SubmitResult: ...


@runtime_checkable
class Downloads(Protocol, metaclass=_CapabilityMeta):
    """An adapter that fetches a result that is not a plain public URL (Gemini's file API,
    the demo file). ``None`` means "use the core's guarded HTTP fetcher"."""

    async def download(self, url: str, http: httpx.AsyncClient) -> AsyncIterator[bytes] | None: ...


@runtime_checkable
class HasOwnCadence(Protocol, metaclass=_CapabilityMeta):
    """An adapter some of whose tasks are polled at a cadence of their own (KIE upscales);
    ``poll_interval_s`` returns ``None`` to keep the usual interval."""

    def poll_interval_s(self, task_id: str) -> float | None: ...


@runtime_checkable
class ChecksCredentials(Protocol, metaclass=_CapabilityMeta):
    """An adapter that can tell, before polling, that a setting is still to fill in (for
    example ``"providers.kie.api_key (or KIE_API_KEY)"``); ``None`` when nothing is missing.
    The service warns at start-up and refuses such jobs at intake with a 422."""

    def missing_credentials(self) -> str | None: ...


# --- what any plug-in class may declare ----------------------------------------------------


@runtime_checkable
class HasOptions(Protocol, metaclass=_CapabilityMeta):
    """A plug-in class with its own typed options model (unknown keys refused, its own
    defaults): the core checks the plug-in's config block against it at load time."""

    Options: ClassVar[type[BaseModel]]


@runtime_checkable
class HasConfigSection(Protocol, metaclass=_CapabilityMeta):
    """An adapter class that reads a shared ``providers.<section>`` block (the KIE family
    shares ``kie``, and so one request budget); without it the section is the adapter name."""

    config_section: ClassVar[str]


@runtime_checkable
class HasRoutes(Protocol, metaclass=_CapabilityMeta):
    """An adapter class that serves routes of its own, mounted under
    ``/providers/{name}`` (the demo video)."""

    @staticmethod
    def routes() -> Sequence[BaseRoute]: ...


@runtime_checkable
class Closeable(Protocol, metaclass=_CapabilityMeta):
    """A plug-in holding a client of its own, closed when the service stops."""

    async def aclose(self) -> None: ...


# --- notifiers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VideoRef:
    """A stored video as notifiers see it: a link that works without our token."""

    index: int
    url: str
    key: str
    metadata: VideoMetadata


@dataclass(frozen=True, slots=True)
class Notification:
    """One event for one target, as handed to :meth:`Notifier.send`.

    ``payload`` is the flat JSON event (the webhook body); ``session`` is the restored user
    session, or ``None`` when there is none; ``attempt`` counts from 1.
    """

    event: Event
    job: Job
    delivery: Delivery
    payload: Mapping[str, Any]
    videos: Sequence[VideoRef] = ()
    session: Mapping[str, Any] | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof of a delivery: what the target answered, for the record (no secrets)."""

    detail: str = ""


@runtime_checkable
class Notifier(Protocol):
    """Tells one target about one event.

    ``send`` returns a :class:`Receipt` once the target accepted the message, raises
    ``NotifyTransient`` to be retried later and ``NotifyRejected`` when retrying cannot
    help. Retries, backoff and once-only delivery belong to the core, not here.
    ``name`` is the target's stable name (it keys the delivery record); ``events`` is the
    set of event names it subscribes to.
    """

    name: str
    events: frozenset[str]

    async def send(self, notification: Notification) -> Receipt: ...


@runtime_checkable
class BuildsCallbackTargets(Protocol, metaclass=_CapabilityMeta):
    """A notifier class that can target a request's own ``callbackUrl`` (the ``webhook``
    notifier): ``for_callback`` builds that one-off target, signed with
    ``callbacks.secret``."""

    @classmethod
    def for_callback(cls, url: str, context: PluginContext) -> Notifier: ...


@runtime_checkable
class ReceivesBotUpdates(Protocol):
    """A chat notifier whose app pushes button presses to ``POST /telegram/webhook``:
    ``webhook_secret`` is the token the push carries (``None``: not set up);
    ``set_webhook`` registers our URL with the chat app (``webhook-poller set-webhook``)."""

    name: str
    webhook_secret: str | None

    async def set_webhook(self, url: str) -> bool: ...


# --- job store ---------------------------------------------------------------------------


@runtime_checkable
class JobStore(Protocol):
    """Durable persistence with compare-and-set verbs; what a change means is in model.py.

    Every write checks ``expected_version`` and bumps the version; a mismatch raises
    ``LeaseLost``. ``claim_due`` atomically takes up to ``limit`` active jobs whose
    ``due_at`` has passed and whose lease is free or expired, sets the lease and bumps the
    version, in one operation (no read-then-write race between instances).
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    async def create(self, job: Job) -> tuple[Job, bool]:
        """Store ``job`` unless its dedupe key exists; return (stored job, created?)."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def find_by_task(self, provider: str, task_id: str) -> Job | None:
        """The job of ``task_id`` at adapter ``provider`` (its dedupe key), for pushes."""
        ...

    async def save(
        self,
        job: Job,
        *,
        expected_version: int,
        deliveries: Sequence[Delivery] = (),
    ) -> Job:
        """Write ``job`` (version + 1) and insert any new ``deliveries`` in the same write."""
        ...

    async def claim_due(
        self, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[Job]: ...

    async def renew_lease(self, job_id: str, owner: str, until: datetime) -> bool: ...

    async def release_owner(self, owner: str) -> int:
        """Free every lease ``owner`` holds (clean shutdown); return how many."""
        ...

    async def next_due_at(self) -> datetime | None: ...

    async def delete(self, job_id: str) -> bool: ...

    async def list_jobs(
        self,
        *,
        states: Sequence[str] | None = None,
        session_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Job], str | None]: ...

    async def count_by_state(self) -> dict[str, int]: ...

    async def queue_position(self, job: Job) -> int | None:
        """1-based FIFO position of a queued job among the queued jobs (None if not queued)."""
        ...

    # deliveries: one row per (job, run, event, target)
    async def deliveries_for(self, job_id: str) -> list[Delivery]: ...

    async def claim_deliveries(
        self, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[Delivery]: ...

    async def update_delivery(self, delivery: Delivery, *, owner: str | None) -> None: ...

    # small shared values: link-signing secret, sessions on stores without Redis
    async def get_or_create_secret(self, name: str, factory_value: str) -> str: ...

    async def use_once(self, token: str, expires_at: datetime) -> bool:
        """Record ``token`` as used until ``expires_at``; False when it was used already."""
        ...

    async def put_session(self, session_id: str, data: Mapping[str, Any]) -> None: ...

    async def get_session(self, session_id: str) -> Mapping[str, Any] | None: ...

    async def delete_session(self, session_id: str) -> None: ...


# --- blob storage ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    size_bytes: int
    sha256: str
    content_type: str


@runtime_checkable
class BlobStorage(Protocol):
    """Where result videos live.

    ``put_stream`` consumes ``chunks`` without holding the whole video in memory, refuses
    more than ``max_bytes`` (raising ``BlobError(transient=False)``) and makes the object
    visible only once complete. ``url_for`` returns a link that works without our API token
    (``None`` when links are built by the service itself, as for local files).
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        max_bytes: int,
        filename: str | None = None,
    ) -> StoredBlob: ...

    def read(self, key: str, *, chunk_size: int = 65536) -> AsyncIterator[bytes]: ...

    async def size(self, key: str) -> int | None: ...

    async def url_for(
        self, key: str, *, expires_s: int, filename: str | None = None
    ) -> str | None: ...

    async def delete(self, key: str) -> None: ...

    async def probe_metadata(self, key: str) -> VideoMetadata: ...

    async def keys_older_than(self, cutoff: datetime) -> list[str]: ...


@runtime_checkable
class HasLocalPath(Protocol, metaclass=_CapabilityMeta):
    """A blob storage on this machine's disk: videos are served straight from the file."""

    def local_path(self, key: str) -> Path: ...


@runtime_checkable
class RemovesStaleParts(Protocol, metaclass=_CapabilityMeta):
    """A blob storage that can leave half-written parts behind after a kill (local disk):
    the retention sweep removes them and counts them."""

    async def remove_stale_parts(self) -> int: ...


@runtime_checkable
class ClaimsDeliveriesWithJobs(Protocol, metaclass=_CapabilityMeta):
    """A job store that claims due deliveries together with their jobs in one operation
    (Redis: one script call instead of one more read per delivery). Each pair is a
    delivery as :meth:`JobStore.claim_deliveries` claims it and its job as it stood at the
    claim (``None``: the job is gone); the scheduler hands both to the dispatcher."""

    async def claim_deliveries_with_jobs(
        self, owner: str, now: datetime, lease_s: float, limit: int
    ) -> list[tuple[Delivery, Job | None]]: ...


@dataclass(slots=True)
class PluginContext:
    """What every plug-in constructor receives besides its own options.

    ``http`` is the shared outbound client for URLs that come from outside (callback URLs,
    result videos): it carries the SSRF guard the config asks for. ``blobs`` is the blob
    storage, for notifiers that upload the video itself (Telegram).
    """

    settings: Settings
    http: httpx.AsyncClient | None = None
    blobs: BlobStorage | None = None
    extra: dict[str, Any] = field(default_factory=dict)


__all__ = [
    "BlobStorage",
    "BuildsCallbackTargets",
    "CallbackHint",
    "ChecksCredentials",
    "ClaimsDeliveriesWithJobs",
    "Closeable",
    "Downloads",
    "FindsTasks",
    "FollowsUp",
    "GenerationRequest",
    "HasConfigSection",
    "HasGenerateOptions",
    "HasLocalPath",
    "HasOptions",
    "HasOwnCadence",
    "HasRoutes",
    "HasSubmitBudget",
    "JobStore",
    "ModelCapabilities",
    "Notification",
    "Notifier",
    "PluginContext",
    "PollResult",
    "PollStatus",
    "ProviderAdapter",
    "ProviderTask",
    "Receipt",
    "ReceivesBotUpdates",
    "ReceivesCallbacks",
    "RemovesStaleParts",
    "StoredBlob",
    "SubmitResult",
    "Submits",
    "VideoRef",
]
