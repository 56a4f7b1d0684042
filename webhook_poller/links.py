"""Signed, expiring links to stored videos, so receivers need no API token."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import quote, urlencode


class LinkSigner:
    """HMAC-SHA256 over (job id, video index, expiry); the secret never leaves the service."""

    def __init__(self, secret: str, base_url: str) -> None:
        self._key = secret.encode()
        self.base_url = base_url.rstrip("/")

    def _sig(self, job_id: str, index: int, expires: int, nonce: str = "") -> str:
        # links without a nonce keep the original message, so links already handed out stay valid
        msg = f"{job_id}\n{index}\n{expires}" + (f"\n{nonce}" if nonce else "")
        return hmac.new(self._key, msg.encode(), hashlib.sha256).hexdigest()[:32]

    def video_url(
        self,
        job_id: str,
        index: int,
        expires_s: int,
        now: float | None = None,
        *,
        single_use: bool = False,
    ) -> str:
        """A signed link to one video; ``single_use`` adds a nonce recorded on first use."""
        expires = int((now if now is not None else time.time()) + expires_s)
        nonce = secrets.token_urlsafe(12) if single_use else ""
        query: dict[str, str | int] = {
            "expires": expires,
            "sig": self._sig(job_id, index, expires, nonce),
        }
        if nonce:
            query["once"] = nonce
        return f"{self.base_url}/jobs/{quote(job_id)}/videos/{index}?{urlencode(query)}"

    def _path_sig(self, path: str, expires: int, nonce: str) -> str:
        msg = f"path\n{path}\n{expires}\n{nonce}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]

    def path_url(
        self, path: str, expires_s: int, *, single_use: bool = False, now: float | None = None
    ) -> str:
        """A signed link to any GET path of ours (the ZIP download); ``single_use`` adds a
        nonce the service records on first use."""
        expires = int((now if now is not None else time.time()) + expires_s)
        nonce = secrets.token_urlsafe(12) if single_use else ""
        query = {"expires": expires, "sig": self._path_sig(path, expires, nonce)}
        if nonce:
            query["once"] = nonce
        return f"{self.base_url}{path}?{urlencode(query)}"

    def verify_path(
        self,
        path: str,
        expires: str | None,
        sig: str | None,
        nonce: str | None,
        now: float | None = None,
    ) -> bool:
        if not _checkable(expires, sig, now):
            return False
        return hmac.compare_digest(self._path_sig(path, int(str(expires)), nonce or ""), str(sig))

    def verify(
        self,
        job_id: str,
        index: int,
        expires: str | None,
        sig: str | None,
        now: float | None = None,
        nonce: str | None = None,
    ) -> bool:
        if not _checkable(expires, sig, now) or (nonce is not None and not nonce.isascii()):
            return False
        expected = self._sig(job_id, index, int(str(expires)), nonce or "")
        return hmac.compare_digest(expected, str(sig))


def _checkable(expires: str | None, sig: str | None, now: float | None) -> bool:
    """Whether ``expires`` is a Unix time still in the future and ``sig`` can be compared.

    Only ASCII is either: ``isdigit()`` accepts "²", which ``int()`` refuses, and
    ``hmac.compare_digest`` raises on non-ASCII text, ``int()`` on more than 4300 digits.
    """
    if not sig or not sig.isascii() or not expires:
        return False
    if not (expires.isascii() and expires.isdigit()) or len(expires) > 12:
        return False  # int() refuses thousands of digits; 12 reach the year 33658
    return int(expires) >= (now if now is not None else time.time())
