"""Signed-link checks refuse odd query values instead of raising (issue 12, item 6)."""

from __future__ import annotations

import pytest

from webhook_poller.links import LinkSigner

SIGNER = LinkSigner("s" * 32, "http://127.0.0.1:8080")


@pytest.mark.parametrize(
    ("expires", "sig"),
    [("\u00b2", "x"), ("9999999999", "\u00e9"), ("", "x"), ("12a", "x"), ("9999999999", None)],
)
def test_odd_expires_or_sig_is_refused_not_raised(expires: str, sig: str | None) -> None:
    assert SIGNER.verify("job_x", 0, expires, sig, now=0) is False
    assert SIGNER.verify_path("/jobs/job_x/download.zip", expires, sig, None, now=0) is False


def test_a_real_link_still_verifies() -> None:
    url = SIGNER.video_url("job_x", 0, 60, now=1000)
    query = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))
    assert SIGNER.verify("job_x", 0, query["expires"], query["sig"], now=1000) is True
