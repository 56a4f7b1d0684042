"""Checking provider pushes (not an adapter itself): the three signature schemes we meet.

* KIE: ``X-Webhook-Signature = base64(HMAC-SHA256(taskId + "." + X-Webhook-Timestamp))`` with
  the account's ``webhookHmacKey`` (docs.kie.ai/common-api/webhook-verification). It covers
  the task id and the time, not the body: a verified KIE push is still only a hint.
* Standard Webhooks (Replicate; Gemini when a relay signs): ``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature`` over the raw body, with a ``whsec_`` secret.
* fal: ED25519 over ``request_id \\n user_id \\n timestamp \\n sha256hex(body)`` from the
  ``X-Fal-Webhook-*`` headers, checked against the public keys of fal's JWKS (cached).

Every check returns a bool and never raises on what a sender put in the headers.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook

if TYPE_CHECKING:
    from webhook_poller.interfaces import CallbackHint

log = structlog.get_logger(__name__)

#: How far a signed timestamp may be from our clock. KIE retries a callback for up to 15 min
#: and may keep the first timestamp, so its window is wider than Standard Webhooks' 5 min.
KIE_TOLERANCE_S = 3600.0
FAL_TOLERANCE_S = 300.0
#: fal JWKS: keys are kept this long; an unknown signature refetches at most this often.
JWKS_TTL_S = 24 * 3600.0
JWKS_REFRESH_MIN_S = 60.0
MAX_JWKS_BYTES = 64 * 1024


def json_object(body: bytes) -> Mapping[str, Any] | None:
    """A push body as a JSON object, or ``None`` (not JSON, not an object)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, Mapping) else None


def task_id_of(value: Any) -> str | None:
    """A usable task id (a non-blank string of at most 256 characters), else ``None``."""
    if isinstance(value, str) and value.strip() and len(value) <= 256 and value.isprintable():
        return value.strip()
    return None


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name.lower())
    return value.strip() if isinstance(value, str) else ""


def _fresh(timestamp: str, tolerance_s: float, now: float | None = None) -> bool:
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    return abs((now if now is not None else time.time()) - int(timestamp)) <= tolerance_s


def kie_signature(key: str, task_id: str, timestamp: str) -> str:
    """What KIE sends in ``X-Webhook-Signature`` for this task and timestamp."""
    digest = hmac.new(key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_kie(key: str, task_id: str, headers: Mapping[str, str]) -> bool:
    timestamp = _header(headers, "x-webhook-timestamp")
    signature = _header(headers, "x-webhook-signature")
    if not signature or not _fresh(timestamp, KIE_TOLERANCE_S):
        return False
    expected = kie_signature(key, task_id, timestamp)
    return hmac.compare_digest(expected.encode(), signature.encode(errors="replace"))


def verify_standard(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """A Standard Webhooks signature (id, timestamp within 5 min, any listed v1 signature)."""
    try:
        webhook = Webhook(secret)
    except Exception:  # the library raises several types for a bad secret
        log.warning("push_secret_unusable", hint="webhook_secret must be a whsec_ base64 secret")
        return False
    wanted = ("webhook-id", "webhook-timestamp", "webhook-signature")
    picked = {name: _header(headers, name) for name in wanted}
    if not all(picked.values()):
        return False
    try:
        webhook.verify(body, picked, json_parse=False)
    except Exception:  # missing parts, bad base64, a non-UTF-8 body: all "not verified"
        return False
    return True


class StandardWebhooks:
    """``verify_callback`` of an adapter whose provider signs pushes with Standard Webhooks.

    The adapter sets ``_webhook_secret`` from ``providers.<name>.webhook_secret``; while it
    is blank, pushes are taken unchecked (they are only hints: the poll has the last word).
    """

    _webhook_secret: str = ""

    async def verify_callback(
        self,
        headers: Mapping[str, str],
        body: bytes,
        hint: CallbackHint,
        http: httpx.AsyncClient,
    ) -> bool:
        """Standard Webhooks with ``providers.<name>.webhook_secret`` when it is set."""
        if not self._webhook_secret:
            return True
        return verify_standard(self._webhook_secret, headers, body)


def fal_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes fal signs for one push."""
    return "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()


class FalKeys:
    """fal's webhook public keys from ``jwks_url``, fetched on first use and cached."""

    def __init__(self, jwks_url: str) -> None:
        self.jwks_url = jwks_url
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None

    async def _refresh(self, http: httpx.AsyncClient, *, force: bool) -> None:
        now = time.monotonic()
        if self._fetched_at is not None:
            age = now - self._fetched_at
            if age < (JWKS_REFRESH_MIN_S if force else JWKS_TTL_S):
                return
        self._fetched_at = now  # also after a failure: do not hammer the JWKS host
        try:
            response = await http.get(self.jwks_url, timeout=10.0)
        except httpx.HTTPError as exc:
            log.warning("fal_jwks_unreachable", error=type(exc).__name__)
            return
        if response.status_code != 200 or len(response.content) > MAX_JWKS_BYTES:
            log.warning("fal_jwks_refused", status=response.status_code)
            return
        keys = _ed25519_keys(response.content)
        if keys:
            self._keys = keys
        else:
            log.warning("fal_jwks_without_keys")

    async def verify(
        self, headers: Mapping[str, str], body: bytes, http: httpx.AsyncClient
    ) -> bool:
        request_id = _header(headers, "x-fal-webhook-request-id")
        user_id = _header(headers, "x-fal-webhook-user-id")
        timestamp = _header(headers, "x-fal-webhook-timestamp")
        signature_hex = _header(headers, "x-fal-webhook-signature")
        if not (request_id and user_id and signature_hex) or not _fresh(timestamp, FAL_TOLERANCE_S):
            return False
        try:
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            return False
        message = fal_message(request_id, user_id, timestamp, body)
        await self._refresh(http, force=False)
        if self._check(signature, message):
            return True
        await self._refresh(http, force=True)  # fal may have rotated its keys
        return self._check(signature, message)

    def _check(self, signature: bytes, message: bytes) -> bool:
        for key in self._keys:
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            return True
        return False


def _ed25519_keys(raw: bytes) -> list[Ed25519PublicKey]:
    try:
        doc: Any = json.loads(raw)
    except ValueError:
        return []
    items = doc.get("keys") if isinstance(doc, Mapping) else None
    keys = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping) or item.get("crv") != "Ed25519":
            continue
        x = item.get("x")
        if not isinstance(x, str):
            continue
        try:
            data = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
            keys.append(Ed25519PublicKey.from_public_bytes(data))
        except (ValueError, binascii.Error):
            continue
    return keys
