"""Every JSON shape of the HTTP API and of the webhook event, defined once.

Request bodies are pydantic models: they give ``/openapi.json`` their schema and the
handlers their field lists. :func:`parse_intake` checks ``POST /poll-video`` against
:class:`IntakeRequest`'s fields with the hand-tuned checks below and returns an
:class:`Intake` (about 2.5 us against 6.3 through ``model_validate``, which ran the same
checks in a ``before`` validator and then validated their result a second time).

Answers and the event are ``TypedDict`` shapes: the code that builds them is type-checked
against the shape (mypy), :func:`dump` serializes them in Rust (``TypeAdapter.dump_json``,
keys outside the shape are dropped), and :mod:`.openapi` turns all of them into components
with ``model_json_schema``.

Intake checks keep their exact answers (status, ``error.code``, the field named in the
message): each check raises :class:`RequestRejected`, in field order, so the first problem
is the one reported.

Pure module: no I/O; what needs the running service (known providers, the SSRF check of a
callback URL) comes in as :class:`IntakeRules`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple, NotRequired, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict

from . import inputs
from .errors import RequestRejected
from .model import DeliveryStatus, ErrorCode, JobState

#: Longest id (sessionId, taskId, model, jobId) a client may send.
MAX_ID_LEN = 256
MAX_PROMPT_CHARS = 5000
MAX_COUNT = 4
MAX_ATTEMPT = 10000

Status = Literal[
    "submitting",
    "queued",
    "polling",
    "delayed",
    "downloading",
    "storing",
    "notifying",
    "succeeded",
    "failed",
    "cancelled",
]
EventName = Literal[
    "video.succeeded", "video.failed", "video.delayed", "video.timed_out", "video.publish_requested"
]
EventStatus = Literal["succeeded", "failed", "delayed"]
#: What happened to a posted callbackUrl (lifecycle's CALLBACK_* constants are typed with it).
CallbackOutcome = Literal[
    "registered", "added", "final_event_sent", "already_registered", "no_final_event"
]
Uri = Annotated[str, Field(json_schema_extra={"format": "uri"})]

# --- checks shared by every body ---------------------------------------------------------


def pick(data: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` the body holds a non-null value for (camelCase, then snake)."""
    for name in names:
        if data.get(name) is not None:
            return data[name]
    return None


def required_str(data: Mapping[str, Any], field: str, *aliases: str) -> str:
    value = pick(data, field, *aliases)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RequestRejected(f"{field} is required", field=field)
    if not isinstance(value, str):
        raise RequestRejected(f"{field} must be a string", field=field)
    value = value.strip()
    if len(value) > MAX_ID_LEN or not value.isprintable():
        raise RequestRejected(
            f"{field} must be printable and at most {MAX_ID_LEN} characters", field=field
        )
    return value


def flag(value: Any, field: str) -> bool:
    """An optional true/false field; a form post sends it as text."""
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise RequestRejected(f"{field} must be true or false", field=field)


def attempt(value: Any) -> int:
    return inputs.client_int(
        value, "attempt", default=1, low=1, high=MAX_ATTEMPT, allow_integral_float=True
    )


def json_object(value: Any, field: str, max_bytes: int) -> dict[str, Any] | None:
    """An optional JSON object (or a form field holding one), at most ``max_bytes``."""
    if isinstance(value, str) and value.strip():
        value = inputs.load_json(value, field, field=field)
    if value is None or value == "":
        return None
    if not isinstance(value, dict):
        raise RequestRejected(f"{field} must be a JSON object", field=field)
    size = len(json.dumps(value).encode())
    if size > max_bytes:
        raise RequestRejected(
            f"{field} is {size} bytes; at most {max_bytes} are allowed", field=field
        )
    return value


# --- request bodies ----------------------------------------------------------------------

ClientId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN)]


@dataclass(frozen=True, slots=True)
class IntakeRules:
    """What intake checks need from the running service.

    Arguments: ``provider`` and ``callback`` check (and normalize) those optional fields,
    raising :class:`RequestRejected`; ``max_context_bytes`` bounds ``context``.
    """

    provider: Callable[[Any], str | None]
    callback: Callable[[Any], str | None]
    max_context_bytes: int


class IntakeRequest(BaseModel):
    """``POST /poll-video``: a provider task to wait for. Form posts send the same fields as
    text; ``session_id``, ``task_id``, ``callback_url`` and ``expect_push`` are accepted too."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    sessionId: ClientId
    taskId: ClientId
    model: ClientId
    provider: str | None = Field(
        None,
        description="Adapter name (gemini, replicate, kie-market ...); default: the first "
        "models: pattern that matches the model",
    )
    attempt: int = Field(1, ge=1, le=MAX_ATTEMPT)
    callbackUrl: Uri | None = None
    context: dict[str, Any] | None = Field(None, description="At most 16384 bytes of JSON")
    expectPush: bool = Field(
        False,
        description="The provider pushes to /callbacks/{provider}: poll only every"
        " polling.push_fallback_interval_s as a safety net",
    )


class Intake(NamedTuple):
    """A checked ``POST /poll-video`` body: :class:`IntakeRequest`'s fields, normalized
    (ids stripped, ``attempt`` a number, ``context`` an object, provider and callback
    checked by the service). A named tuple: immutable, and built in one C call."""

    sessionId: str
    taskId: str
    model: str
    provider: str | None
    attempt: int
    callbackUrl: str | None
    context: dict[str, Any] | None
    expectPush: bool


assert Intake._fields == tuple(IntakeRequest.model_fields), "Intake mirrors IntakeRequest"


def parse_intake(data: Mapping[str, Any], rules: IntakeRules) -> Intake:
    """The intake body checked field by field in order, or the :class:`RequestRejected` of
    its first problem. Every check returns a value of its field's type and within its
    bounds, so the result is what ``IntakeRequest`` accepts (tests hold it to that)."""
    return Intake(
        sessionId=required_str(data, "sessionId", "session_id"),
        taskId=required_str(data, "taskId", "task_id"),
        model=required_str(data, "model"),
        provider=rules.provider(pick(data, "provider")),
        attempt=attempt(pick(data, "attempt")),
        callbackUrl=rules.callback(pick(data, "callbackUrl", "callback_url")),
        context=json_object(pick(data, "context"), "context", rules.max_context_bytes),
        expectPush=flag(pick(data, "expectPush", "expect_push"), "expectPush"),
    )


class GenerateRequest(BaseModel):
    """``POST /generate``: checked in :mod:`.generate` against the model's capabilities."""

    model_config = ConfigDict(extra="forbid")

    sessionId: ClientId
    model: str = Field(
        description="A model the adapter can submit (veo3, veo3_fast, veo3_lite, "
        "sora-2-text-to-video ...); a 422 lists them"
    )
    provider: str | None = Field(None, description="Adapter name; default: models:")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    imageUrls: list[Uri] | None = None
    aspectRatio: str | None = Field(None, description="One the model offers (16:9 ...)")
    durationSeconds: int | None = None
    resolution: str | None = Field(None, description="One the model offers (1080p ...)")
    count: int = Field(
        1,
        ge=1,
        le=MAX_COUNT,
        description="Provider tasks under this one job (videos 0..count-1, one ZIP)",
    )
    callbackUrl: Uri | None = None
    context: dict[str, Any] | None = Field(None, description="At most 16384 bytes of JSON")
    options: dict[str, Any] | None = Field(
        None,
        description="Provider-specific fields the adapter declares (Veo: generationType, "
        "enableTranslation, watermark, seeds; Sora: remove_watermark, character_id_list)",
    )


#: The fields ``POST /generate`` accepts; anything else is refused so a typo is not ignored.
GENERATE_FIELDS = frozenset(GenerateRequest.model_fields)


class ExtendRequest(BaseModel):
    """``POST /jobs/{jobId}/extend``."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    index: int = Field(0, ge=0)


class UpscaleRequest(BaseModel):
    """``POST /jobs/{jobId}/upscale``."""

    resolution: Literal["1080p", "4k"]
    index: int = Field(0, ge=0)


class LinksRequest(BaseModel):
    """``POST /jobs/{jobId}/links`` (the body is optional)."""

    expiresIn: int = Field(3600, ge=60, description="Seconds; at most storage.link_expiry_s")
    singleUse: bool = False


# --- answers -----------------------------------------------------------------------------


class ErrorDetail(TypedDict):
    code: str
    message: str
    field: NotRequired[str]


class Error(TypedDict):
    """Every 4xx/5xx answer; some errors add keys beside ``code`` (knownProviders ...)."""

    ok: Literal[False]
    error: ErrorDetail


class JobError(TypedDict):
    code: Annotated[str, Field(json_schema_extra={"enum": [c.value for c in ErrorCode]})]
    message: str
    reason: NotRequired[str]


class VideoMetadata(TypedDict, total=False):
    size_bytes: int
    duration_s: float
    width: int
    height: int
    resolution: str
    codec: str
    content_type: str
    sha256: str


class Video(TypedDict):
    index: int
    url: str
    metadata: VideoMetadata


class Delivery(TypedDict):
    event: EventName
    target: str
    webhookId: str
    status: Annotated[str, Field(json_schema_extra={"enum": [s.value for s in DeliveryStatus]})]
    attempts: int
    lastError: str | None
    nextAttemptAt: str | None
    sentAt: str | None


class JobSummary(TypedDict):
    """A job in lists and live streams: stable while nothing changes."""

    jobId: str
    sessionId: str
    taskId: str | None
    model: str
    provider: str
    status: Status
    message: str
    attempts: int
    createdAt: str
    updatedAt: str
    finishedAt: str | None
    nextPollAt: str | None
    error: JobError | None
    videoCount: int
    statusUrl: str
    queuePosition: NotRequired[int]
    taskIds: NotRequired[list[str]]
    retryOf: NotRequired[str | None]
    attemptNumber: NotRequired[int]
    parentJobId: NotRequired[str | None]


class JobDetail(JobSummary):
    """``GET /jobs/{jobId}`` without the envelope: the summary plus links and deliveries."""

    delayedAt: str | None
    elapsedSeconds: float
    videoUrls: list[str]
    videos: list[Video]
    metadata: list[VideoMetadata]
    hasCallback: Annotated[
        bool, Field(description="Whether the job was posted with a callbackUrl (never shown)")
    ]
    callbackUrl: Annotated[
        bool,
        Field(deprecated=True, description="Old name of hasCallback; removed in the next release"),
    ]
    expectPush: bool
    context: dict[str, Any] | None
    deliveries: NotRequired[list[Delivery]]


class Job(JobDetail):
    """The answer of ``GET /jobs/{jobId}``, of the job actions and of the follow-ups."""

    ok: Literal[True]
    action: NotRequired[
        Annotated[
            str,
            Field(
                json_schema_extra={"enum": ["resubmitted", "requeued"]},
                description="retry only: a new job and provider task, or the same job polled "
                "again (a job this service did not submit)",
            ),
        ]
    ]


class JobPage(TypedDict):
    """``GET /jobs``: newest first, ``nextCursor`` for the next page."""

    ok: Literal[True]
    jobs: list[JobSummary]
    nextCursor: str | None


class Slots(TypedDict):
    max: int | None
    used: int


class JobGroups(TypedDict):
    """``GET /jobs?group=true``: processing and queued in full, history paged."""

    ok: Literal[True]
    processing: list[JobSummary]
    queued: list[JobSummary]
    history: list[JobSummary]
    nextCursor: NotRequired[str | None]
    counts: dict[str, int]
    slots: Slots


class IntakeResponse(TypedDict):
    ok: Literal[True]
    jobId: str
    status: Status
    message: str
    alreadyKnown: bool
    statusUrl: str
    callback: NotRequired[
        Annotated[
            CallbackOutcome,
            Field(
                description="What happened to the posted callbackUrl: a new job's target, "
                "added to a running job, the ended job's final event sent to it, known "
                "already, or no final event (a cancelled job)",
            ),
        ]
    ]


class GenerateResponse(TypedDict):
    ok: Literal[True]
    jobId: str
    status: Status
    statusUrl: str
    alreadyKnown: Annotated[
        bool, Field(description="true: this Idempotency-Key was seen with this body before")
    ]


class Links(TypedDict):
    ok: Literal[True]
    jobId: str
    zipUrl: str
    videoUrls: list[str]
    expiresIn: int
    singleUse: bool


class Deleted(TypedDict):
    ok: Literal[True]
    jobId: str
    deleted: bool


class SessionStored(TypedDict):
    ok: Literal[True]
    sessionId: str


class PushAccepted(TypedDict):
    ok: Literal[True]
    challenge: NotRequired[str]


class TelegramHandled(TypedDict):
    ok: Literal[True]
    result: Any


class Health(TypedDict):
    ok: bool


class Readiness(TypedDict):
    ok: bool
    checks: dict[str, bool]


# --- the webhook event -------------------------------------------------------------------


class VideoEvent(TypedDict):
    """The flat JSON body every webhook target (and every notifier) receives, signed with
    Standard Webhooks headers; ``webhook-id`` is stable per job run, event and target."""

    event: EventName
    jobId: str
    sessionId: str
    taskId: str
    model: str
    provider: str
    status: EventStatus
    videoUrls: list[str]
    error: JobError | None
    userMessage: str
    attempts: int
    elapsedSeconds: float
    context: dict[str, Any] | None
    metadata: list[VideoMetadata]
    statusUrl: str
    createdAt: str
    finishedAt: str | None


class AnalyticsRecord(TypedDict):
    """One line per finished job, logged as ``job_summary`` and appended to
    ``analytics.jsonl_path`` (the record of the n8n template)."""

    jobId: str
    sessionId: str
    taskId: str
    model: str
    provider: str
    status: Status
    errorCode: str | None
    attempts: int
    totalTime: str
    totalSeconds: float
    #: The first video's storage key (not a link: links expire, keys do not).
    videoKey: str | None
    #: Deprecated: the same storage key under the n8n template's name; one more release.
    videoUrl: str | None
    videoCount: int
    metadata: VideoMetadata
    finishedAt: str | None


#: Answer shapes with their serializer, built once at import.
JOB = TypeAdapter(Job)
JOB_PAGE = TypeAdapter(JobPage)
INTAKE_RESPONSE = TypeAdapter(IntakeResponse)

#: Every shape ``/openapi.json`` lists under ``components.schemas``.
COMPONENTS: tuple[type[Any], ...] = (
    Error,
    IntakeRequest,
    GenerateRequest,
    ExtendRequest,
    UpscaleRequest,
    LinksRequest,
    IntakeResponse,
    GenerateResponse,
    JobSummary,
    Job,
    JobPage,
    JobGroups,
    Links,
    Deleted,
    SessionStored,
    PushAccepted,
    TelegramHandled,
    Health,
    Readiness,
    VideoEvent,
    AnalyticsRecord,
)

assert {s.value for s in JobState} == set(get_args(Status)), "Status lists every JobState"
