"""Logs never carry secrets; local storage never writes outside its root or half a file.

Tests that check *which* events we log use ``structlog.testing.capture_logs``. The redaction
tests below read the rendered output instead, on purpose: ``capture_logs`` replaces the
processor chain, so it would skip the redaction and the renderer they are about, and the
stdlib records only reach redaction through the root handler's ``ProcessorFormatter``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import structlog

from tests.support.factories import make_job
from tests.support.service import ServiceProcess, base_config, run_service, wait_for
from webhook_poller.blobs.local import LocalBlobStorage
from webhook_poller.errors import BlobError
from webhook_poller.logging import FLUSH_WINDOW_S, configure, flush_logs, register_secrets
from webhook_poller.pipeline import safe_part, video_key


def test_redaction_processor_hides_secrets(capsys):
    """Token-like keys are replaced and URL queries cut, in JSON output."""
    configure("INFO", "json")
    log = structlog.get_logger("t")
    log.info(
        "probe",
        api_key="kie-123",
        authorization="Bearer abc",
        url="https://n8n.example.com/webhook-waiting/9?signature=s3cr3t",
        note="see http://u:p@h.io/x?token=zzz",
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["api_key"] == "[redacted]" and line["authorization"] == "[redacted]"
    assert "s3cr3t" not in line["url"] and line["url"].startswith("https://n8n.example.com/")
    assert "zzz" not in line["note"] and "u:p" not in line["note"]


def test_stdlib_and_library_logs_are_redacted_like_ours(capsys):
    """A third-party logger's message (and its traceback) carrying a configured secret, a
    signed URL: one JSON line on stderr, scrubbed the way our own events are."""
    secret = "Kie-Key-QW17-Secret"
    register_secrets([secret])
    configure("INFO", "json")
    lib = logging.getLogger("some.library")
    lib.warning("request to %s refused key %s", "https://h.io/x?sig=s3cr3t", secret.lower())
    try:
        raise RuntimeError(f"provider said: bad key {secret.upper()}")
    except RuntimeError:
        lib.exception("call failed")
    logging.getLogger("httpx").info("below WARNING: libraries stay quiet")
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.strip().splitlines()]
    assert [line["event"] for line in lines] == [
        "request to https://h.io/x?… refused key [redacted]",
        "call failed",
    ], err
    assert all(line["logger"] == "some.library" and "timestamp" in line for line in lines)
    assert lines[0]["level"] == "warning" and lines[1]["level"] == "error"
    assert "RuntimeError: provider said: bad key [redacted]" in lines[1]["exception"]
    assert "s3cr3t" not in err and secret.lower() not in err.lower()


def test_configure_twice_keeps_one_handler(capsys):
    """Configuring logging again replaces our root handler, so a record is written once."""
    configure("INFO", "json")
    configure("INFO", "json")
    logging.getLogger("some.library").error("once")
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_uvicorn_logs_through_the_same_formatter(tmp_path):
    """The served process: uvicorn's own lines are JSON records too, not its plain text."""
    cfg = base_config(tmp_path, logging={"level": "INFO", "format": "json"})
    svc = ServiceProcess(cfg, tmp_path).start()
    try:
        svc.terminate()
    finally:
        svc.kill()
    text = svc.logs()
    assert "INFO:" not in text, text[-2000:]
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert any(
        r.get("logger") == "uvicorn.error" and r["event"].startswith("Uvicorn running on")
        for r in records
    ), text[-2000:]


async def test_info_lines_in_a_loop_are_written_together_soon(capsys):
    """Inside the event loop INFO lines wait (at most FLUSH_WINDOW_S) to go out in one write,
    redacted as ever; a WARNING writes at once, after the lines before it, in order."""
    configure("INFO", "json")
    log = structlog.get_logger("t")
    log.info("first", url="https://h.io/x?sig=s3cr3t")
    log.info("second")
    assert capsys.readouterr().out == ""  # collected, not written yet
    await asyncio.sleep(FLUSH_WINDOW_S + 0.2)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["first", "second"]
    assert "s3cr3t" not in lines[0]["url"]
    log.info("third")
    log.warning("trouble", api_key="kie-123")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["event"] for line in lines] == ["third", "trouble"]
    assert lines[1]["api_key"] == "[redacted]"
    log.info("fourth")
    flush_logs()
    assert json.loads(capsys.readouterr().out)["event"] == "fourth"


async def test_a_stderr_record_writes_the_collected_lines_first(capsys):
    """uvicorn's last line after the app's shutdown comes through the stdlib handler: it
    writes the INFO lines collected before it, since uvicorn then re-raises SIGTERM and
    the interpreter's exit hooks never run."""
    configure("INFO", "json")
    structlog.get_logger("t").info("service_stopped")
    logging.getLogger("some.library").warning("Finished server process")
    captured = capsys.readouterr()
    assert json.loads(captured.out)["event"] == "service_stopped"
    assert "Finished server process" in captured.err


@pytest.mark.parametrize("ending", ["", "raise SystemExit(3)", "1 / 0"])
def test_collected_lines_are_written_at_exit(ending):
    """A process that logs in its loop and ends at once (cleanly, by SystemExit, or by an
    uncaught exception) still writes every line."""
    script = f"""
import asyncio, structlog
from webhook_poller.logging import configure
configure("INFO", "json")
async def main():
    for n in range(3):
        structlog.get_logger("t").info("line", n=n)
asyncio.run(main())
{ending}
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["n"] for line in lines] == [0, 1, 2], done.stdout + done.stderr


@pytest.mark.parametrize(
    "key", ["../x.mp4", "a/../../x", "/etc/passwd", "a\\b", "a//b", "a/\x00/b", ""]
)
def test_local_storage_refuses_keys_outside_root(tmp_path, key):
    """Keys that could escape the storage root are refused."""
    storage = LocalBlobStorage({"url": f"file://{tmp_path}/videos"})
    with pytest.raises(BlobError):
        storage.local_path(key)


@pytest.mark.parametrize(
    "key",
    [
        "v2/../x/y/0.mp4",
        "v2/a/../../0.mp4",
        "v2/a/b\\..\\../c/0.mp4",
        "v2//b/c/0.mp4",
        "/v2/a/b/c/0.mp4",
    ],
)
def test_keys_spelled_nearly_like_ours_are_still_refused(tmp_path, key):
    """Only the exact layout the service writes skips the resolve; a near miss that could
    escape the root is refused as before."""
    storage = LocalBlobStorage({"url": f"file://{tmp_path}/videos"})
    with pytest.raises(BlobError):
        storage.local_path(key)


def test_our_own_keys_are_checked_by_their_spelling_without_a_resolve(tmp_path, monkeypatch):
    """A key the service made (pipeline.video_key, also from hostile ids) maps to the same
    file under the resolved root as the full check gives, without resolving symlinks."""
    storage = LocalBlobStorage({"url": f"file://{tmp_path}/videos"})
    hostile = make_job(session_id="../../etc", task_id="..", provider="a/b")
    keys = [video_key(make_job(), 0), video_key(hostile, 12)]
    resolved = [(storage.root.resolve() / k).resolve() for k in keys]

    def no_resolve(self, strict=False):
        raise AssertionError("resolved")

    monkeypatch.setattr(Path, "resolve", no_resolve)
    assert [storage.local_path(k) for k in keys] == resolved


def test_other_keys_still_may_not_leave_the_root_through_a_symlink(tmp_path):
    """A key of an older layout is resolved: a folder symlinked out of the root is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "videos"
    root.mkdir()
    (root / "sess").symlink_to(outside)
    storage = LocalBlobStorage({"url": f"file://{root}"})
    with pytest.raises(BlobError):
        storage.local_path("sess/task/0.mp4")
    assert storage.local_path("other/task/0.mp4") == root.resolve() / "other/task/0.mp4"


def test_key_parts_from_callers_are_made_safe():
    """Session and task ids become single safe path segments, distinct for distinct input."""
    assert safe_part("../../etc") != "../../etc" and "/" not in safe_part("a/b")
    assert safe_part("..") not in ("..", ".", "")
    assert safe_part("a/b") != safe_part("a_b")
    assert safe_part("user-42").startswith("user-42-")


async def test_oversize_write_leaves_nothing(tmp_path):
    """A write over the limit fails and leaves no file, not even a partial one."""
    storage = LocalBlobStorage({"url": f"file://{tmp_path}/videos"})
    await storage.open()

    async def chunks():
        for _ in range(10):
            yield b"\x00" * 1000

    with pytest.raises(BlobError):
        await storage.put_stream("s/t/0.mp4", chunks(), content_type="video/mp4", max_bytes=5000)
    assert [p for p in (tmp_path / "videos").rglob("*") if p.is_file()] == []


async def test_writes_of_one_key_at_the_same_time_each_use_their_own_part_file(tmp_path):
    """Two writers of the same key never share a part file: both finish, one wins whole."""
    import asyncio

    storage = LocalBlobStorage({"url": f"file://{tmp_path}/videos"})
    await storage.open()
    gate, both_open = asyncio.Event(), asyncio.Event()
    parts: list[set[str]] = []

    async def chunks(byte: bytes):
        yield byte * 1000
        parts.append({p.name for p in (tmp_path / "videos").rglob(".*.part")})
        if len(parts) == 2:
            both_open.set()
        await gate.wait()
        yield byte * 1000

    writes = [
        asyncio.create_task(
            storage.put_stream("s/t/0.mp4", chunks(b), content_type="video/mp4", max_bytes=5000)
        )
        for b in (b"a", b"b")
    ]
    await asyncio.wait_for(both_open.wait(), 10)
    gate.set()
    await asyncio.gather(*writes)
    assert len(parts[-1]) == 2  # two part files side by side
    body = (tmp_path / "videos" / "s/t/0.mp4").read_bytes()
    assert body in (b"a" * 2000, b"b" * 2000)
    assert list((tmp_path / "videos").rglob(".*.part")) == []


def test_max_video_bytes_fails_the_job(tmp_path):
    """A video over storage.max_video_bytes ends the job with download_failed."""
    cfg = base_config(tmp_path, storage={"max_video_bytes": 1000})
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        job = client.post(
            "/poll-video", json={"sessionId": "s", "taskId": "big", "model": "demo"}
        ).json()
        done = wait_for(
            lambda: (
                (b := client.get(f"/jobs/{job['jobId']}").json())["status"]
                in ("failed", "succeeded")
                and b
            )
        )
    assert done["status"] == "failed" and done["error"]["code"] == "download_failed"
    assert "limit" in done["error"]["reason"]
