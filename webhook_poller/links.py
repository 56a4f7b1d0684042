"""Signed, expiring links to stored videos, so receivers need no API token."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode


class LinkSigner:
    """HMAC-SHA256 over (job id, video index, expiry); the secret never leaves the service."""

    def __init__(self, secret: str, base_url: str) -> None:
        self._key = secret.encode()
        self.base_url = base_url.rstrip("/")

    def _sig(self, job_id: str, index: int, expires: int) -> str:
        msg = f"{job_id}\n{index}\n{expires}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()[:32]

    def video_url(self, job_id: str, index: int, expires_s: int, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + expires_s)
        query = urlencode({"expires": expires, "sig": self._sig(job_id, index, expires)})
        return f"{self.base_url}/jobs/{quote(job_id)}/videos/{index}?{query}"

    def verify(
        self,
        job_id: str,
        index: int,
        expires: str | None,
        sig: str | None,
        now: float | None = None,
    ) -> bool:
        if not expires or not sig or not expires.isdigit():
            return False
        if int(expires) < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(self._sig(job_id, index, int(expires)), sig)
