"""The exception tree. Code decides "retry or give up" by class, never by message text.

::

    WebhookPollerError
    ├── ConfigError                  bad settings; raised at start-up
    ├── RequestRejected              becomes a 4xx JSON envelope at the HTTP edge
    │   ├── NotFound                 404 not_found
    │   ├── Unauthorized             401 unauthorized
    │   ├── PayloadTooLarge          413 payload_too_large
    │   └── Conflict                 409 conflict (an illegal action on a job)
    ├── ProviderError                something about a provider's answer
    │   ├── ProviderUnavailable      transient: retry with backoff (timeouts, 5xx, 429)
    │   ├── ProviderTaskFailed       terminal: carries a normalized ErrorCode
    │   └── UnrecognizedResponse     the body parsed as nothing we know; transient
    ├── UnsafeURL                    the SSRF guard refused an address
    ├── DownloadError                fetching a result video failed
    ├── StoreError
    │   ├── StoreUnavailable         the store cannot be reached; transient
    │   ├── LeaseLost                another writer won a compare-and-set
    │   ├── StoreSchemaError         the store's schema is newer than this release; start-up
    │   └── JobConflict              idempotency or state conflict
    ├── BlobError                    blob storage failed; ``transient`` says whether to retry
    └── NotifyError
        ├── NotifyTransient          retry later (``retry_after_s`` when the target said so)
        └── NotifyRejected           final: the target will never take it

Every error keeps the user-facing text apart from debug detail, and neither holds secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import ErrorCode


class WebhookPollerError(Exception):
    """Base of every error this service raises on purpose."""


class ConfigError(WebhookPollerError):
    """A setting is missing or wrong; the message names the key and the bad value."""


class RequestRejected(WebhookPollerError):
    """Bad input from a caller: answered as ``{"ok": false, "error": {...}}``."""

    status_code = 422
    code = "validation_failed"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        status_code: int | None = None,
        code: str | None = None,
        extra: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.extra = extra or {}
        self.headers = headers or {}


class NotFound(RequestRejected):
    status_code = 404
    code = "not_found"


class Unauthorized(RequestRejected):
    status_code = 401
    code = "unauthorized"


class PayloadTooLarge(RequestRejected):
    status_code = 413
    code = "payload_too_large"


class Conflict(RequestRejected):
    status_code = 409
    code = "conflict"


class ServiceUnavailable(RequestRejected):
    """The service cannot take work right now (store down); the caller should retry."""

    status_code = 503
    code = "unavailable"


class ProviderError(WebhookPollerError):
    """Base for what a provider said or failed to say."""

    def __init__(self, message: str, *, provider: str = "", detail: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        #: Provider text for logs only; never shown to an end user.
        self.detail = detail


class ProviderUnavailable(ProviderError):
    """A poll-level fault that says nothing about the task: keep polling with backoff."""

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        detail: str | None = None,
        retry_after_s: float | None = None,
        rate_limited: bool = False,
    ) -> None:
        super().__init__(message, provider=provider, detail=detail)
        self.retry_after_s = retry_after_s
        self.rate_limited = rate_limited


class ProviderTaskFailed(ProviderError):
    """The provider says the task is over and failed, or our credentials are refused."""

    def __init__(self, code: ErrorCode, *, provider: str = "", detail: str | None = None) -> None:
        super().__init__(f"provider task failed: {code.value}", provider=provider, detail=detail)
        self.code = code


class SubmissionUncertain(ProviderError):
    """A create call whose outcome is unknown (timeout after sending, 5xx): a task may exist,
    so submitting again could bill twice."""


class UnrecognizedResponse(ProviderError):
    """A body we could not read as any known shape; treated as transient."""


class UnsafeURL(WebhookPollerError):
    """The SSRF guard refused a URL; the message says why without echoing secrets."""


class DownloadError(WebhookPollerError):
    """A result video could not be fetched; ``transient`` says whether to retry.

    ``status`` is the HTTP status the result host answered, when there was one: 403, 404
    and 410 mean the link expired or was refused, and the pipeline asks the provider once
    for a fresh link (see :data:`EXPIRED_LINK_STATUSES`).
    """

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status

    @property
    def link_expired(self) -> bool:
        return self.status in EXPIRED_LINK_STATUSES


#: Download answers that mean "this link is dead", not "this video is bad".
EXPIRED_LINK_STATUSES = frozenset({403, 404, 410})


class StoreError(WebhookPollerError):
    """Base for job store failures."""


class StoreUnavailable(StoreError):
    """The store cannot be reached right now."""


class LeaseLost(StoreError):
    """A compare-and-set failed: someone else changed the job or holds its lease."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} changed under us")
        self.job_id = job_id


class StoreSchemaError(StoreError):
    """The store holds a schema version newer than this release knows (refused at open)."""


class JobConflict(StoreError):
    """An action that does not fit the job's current state."""


class BlobError(WebhookPollerError):
    """Blob storage failed; ``transient`` says whether a retry may help."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class NotifyError(WebhookPollerError):
    """Base for notifier failures; the core decides about retries by subclass."""


class NotifyTransient(NotifyError):
    """Try again later; ``retry_after_s`` when the target asked for a pause. ``conflict``
    marks a 409 that may clear soon, retried only within ``callbacks.conflict_window_s``."""

    conflict: bool = False

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotifyRejected(NotifyError):
    """The target will never accept this message (404, 410, bad chat id ...)."""
