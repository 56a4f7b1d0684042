"""Hardening from outside (issue 12, items 3, 4, 10-17): what a new user and an attacker found.

Every test here runs the real service on 127.0.0.1 (or a real guarded client against a real
server) and failed on the code before the fix.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from structlog.testing import capture_logs

from tests.support.factories import make_job
from tests.support.servers import serve_in_thread
from tests.support.service import (
    CallbackReceiver,
    base_config,
    run_service,
    wait_for,
    wait_status,
)
from webhook_poller.app import create_app
from webhook_poller.cli import uvicorn_config
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ConfigError
from webhook_poller.logging import configure, register_secrets, scrub
from webhook_poller.model import JobState
from webhook_poller.net import HostAllowlist, build_client, check_url
from webhook_poller.pipeline import video_key
from webhook_poller.stores.sqlite import SqliteJobStore


def post_demo(client: httpx.Client, task_id: str, session: str = "s1", **extra: Any) -> str:
    resp = client.post(
        "/poll-video", json={"sessionId": session, "taskId": task_id, "model": "demo", **extra}
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["jobId"])


def deliveries(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/jobs/{job_id}").json()["deliveries"])


def _failed_delivery(client: httpx.Client, job_id: str) -> dict[str, Any] | None:
    return next((d for d in deliveries(client, job_id) if d["status"] == "failed"), None)


def private_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """The test config with the SSRF guard switched on, as in production."""
    cfg = base_config(tmp_path, **extra)
    cfg["security"] = {"allow_private_urls": False, **extra.get("security", {})}
    return cfg


# --- item 3: security.allowed_hosts ---------------------------------------------------------


def test_private_callback_is_refused_naming_the_key_that_allows_it(tmp_path):
    """A self-hosted n8n URL answers 422 naming security.allowed_hosts, and passes once listed."""
    cfg = private_config(tmp_path)
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        for target in (
            "http://localhost:5678/webhook/x",
            "http://192.168.1.10:5678/webhook/x",
            "http://172.18.0.5/webhook/x",
        ):
            resp = client.post(
                "/poll-video",
                json={"sessionId": "s", "taskId": "t", "model": "demo", "callbackUrl": target},
            )
            assert resp.status_code == 422, resp.text
            assert "security.allowed_hosts" in resp.json()["error"]["message"]
    allowed = ["localhost:5678", "192.168.0.0/16", "172.16.0.0/12"]
    cfg = private_config(tmp_path / "b", security={"allowed_hosts": allowed})
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        for i, target in enumerate(
            ("http://localhost:5678/webhook/x", "http://192.168.1.10:5678/x", "http://172.18.0.5/x")
        ):
            post_demo(client, f"t{i}", callbackUrl=target)
        # a listed name is allowed on its port only
        resp = client.post(
            "/poll-video",
            json={
                "sessionId": "s",
                "taskId": "t9",
                "model": "demo",
                "callbackUrl": "http://localhost:6000/x",
            },
        )
        assert resp.status_code == 422


def test_allowed_hosts_are_checked_on_the_resolved_address(tmp_path):
    """With the guard on, a listed range lets the callback and the download through; the port
    is kept in what is recorded about the callback."""
    receiver = CallbackReceiver(responses=[404])
    with receiver.serving() as hook:
        cfg = private_config(tmp_path, security={"allowed_hosts": ["127.0.0.0/8"]})
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            job_id = post_demo(client, "allowed-1", callbackUrl=f"{hook}/missing")
            wait_status(client, job_id, {"succeeded"})
            row = wait_for(
                lambda: next(
                    (d for d in deliveries(client, job_id) if d["status"] == "failed"), None
                )
            )
    port = hook.rsplit(":", 1)[1]
    assert receiver.events()  # the guard let the loopback receiver be called
    assert f"127.0.0.1:{port}/missing" in row["lastError"]


def test_allowlist_entries_and_connect_level_check():
    """Names, host:port and CIDR entries; metadata addresses stay refused whatever is listed."""
    import ipaddress

    allow = HostAllowlist(["n8n", "localhost:5678", "10.0.0.0/8", "169.254.0.0/16"])
    assert allow.permits("n8n", 80) and allow.permits("N8N.", 5678)
    assert allow.permits("localhost", 5678) and not allow.permits("localhost", 5679)
    assert allow.permits("anything", 443, ipaddress.ip_address("10.1.2.3"))
    assert not allow.permits("metadata", 80, ipaddress.ip_address("169.254.169.254"))
    with pytest.raises(ConfigError, match=r"security\.allowed_hosts"):
        settings_from_mapping({"security": {"allowed_hosts": ["10.0.0.0/99"]}})
    check_url("http://n8n:5678/webhook/x", allow_private=False, allowed=allow)


async def test_guarded_client_reaches_a_listed_local_name():
    """localhost resolves to loopback; listed with its port, the guarded client connects."""

    async def ok(request: Request) -> Response:
        return Response(b"ok")

    with serve_in_thread(Starlette(routes=[Route("/ok", ok)])) as url:
        port = int(url.rsplit(":", 1)[1])
        allowed = HostAllowlist([f"localhost:{port}"])
        async with build_client(allow_private=False, allowed=allowed) as client:
            resp = await client.get(f"http://localhost:{port}/ok")
            assert resp.text == "ok"
        async with build_client(allow_private=False) as client:
            with pytest.raises(httpx.ConnectError, match=r"security\.allowed_hosts"):
                await client.get(f"http://localhost:{port}/ok")


# --- item 4: public_url -------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["not a url", "poller.example.com", "ftp://x.example", "/jobs"])
def test_public_url_must_be_an_absolute_http_url(bad):
    """A public_url that is not absolute http(s) is a config error naming the key."""
    with pytest.raises(ConfigError, match=r"server\.public_url"):
        settings_from_mapping({"server": {"public_url": bad}})
    assert settings_from_mapping({"server": {"public_url": "https://p.example/"}})


def test_non_loopback_host_without_public_url_warns_at_start(tmp_path):
    """Links would point at 127.0.0.1: the start-up says so."""
    cfg = base_config(tmp_path)
    cfg["server"].update(host="0.0.0.0", auth_token="a-real-token-for-tests")
    with capture_logs() as logs, run_service(cfg):
        pass
    assert any(e["event"] == "public_url_missing" for e in logs)
    cfg["server"]["public_url"] = "https://poller.example.com"
    with capture_logs() as logs, run_service(cfg):
        pass
    assert not any(e["event"] == "public_url_missing" for e in logs)


# --- item 10: injective storage keys -------------------------------------------------------


def test_storage_keys_are_injective():
    """Ids spelled like another id's escaped form, or the same ids under two providers, get
    different keys."""
    raw = "T/x"
    lookalike = f"T_x-{hashlib.sha256(raw.encode()).hexdigest()[:10]}"
    a = make_job(task_id=raw, session_id="s")
    b = make_job(task_id=lookalike, session_id="s")
    assert video_key(a, 0) != video_key(b, 0)
    c = make_job(task_id="same", provider="kie-veo")
    d = make_job(task_id="same", provider="kie-market")
    assert video_key(c, 0) != video_key(d, 0)
    e = make_job(task_id="a", session_id="b/c")
    f = make_job(task_id="c", session_id="b/a")
    assert video_key(e, 0) != video_key(f, 0)


def test_deleting_one_job_keeps_the_lookalike_jobs_video(tmp_path):
    """Two jobs whose ids collided under the old scheme keep separate videos."""
    raw = "T/x"
    lookalike = f"T_x-{hashlib.sha256(raw.encode()).hexdigest()[:10]}"
    with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
        first = post_demo(client, raw)
        second = post_demo(client, lookalike)
        wait_status(client, first, {"succeeded"})
        done = wait_status(client, second, {"succeeded"})
        assert client.delete(f"/jobs/{first}").status_code == 200
        video = client.get(done["videoUrls"][0])
        assert video.status_code == 200, video.text


def test_videos_stored_under_the_old_key_layout_stay_readable(tmp_path):
    """A job recorded with an old-style key still serves its video (keys live on the job)."""
    cfg = base_config(tmp_path)
    sample = Path(__file__).resolve().parents[1] / "adapters" / "sample.mp4"
    old_key = "s1/old-task/0.mp4"
    target = tmp_path / "videos" / old_key
    target.parent.mkdir(parents=True)
    target.write_bytes(sample.read_bytes())

    async def seed() -> str:
        from webhook_poller.model import StoredVideo, VideoMetadata

        store = SqliteJobStore({"url": cfg["store"]["url"]})
        await store.open()
        video = StoredVideo(0, old_key, VideoMetadata(size_bytes=target.stat().st_size))
        job = make_job(
            task_id="old-task", session_id="s1", state=JobState.SUCCEEDED, videos=(video,)
        )
        await store.create(job)
        await store.close()
        return job.id

    job_id = asyncio.run(seed())
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        body = client.get(f"/jobs/{job_id}").json()
        assert client.get(body["videoUrls"][0]).content == sample.read_bytes()


# --- item 11: bodies are read up to the limit only ---------------------------------------


def _send_chunked_without_end(url: str, path: str, total: int) -> bytes:
    """POST a chunked body of ``total`` bytes and never send its last chunk; return what the
    server answers within a few seconds (nothing if it waits for the rest)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"x" * 1024
        for _ in range(total // len(chunk)):
            sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        try:
            return sock.recv(65536)
        except TimeoutError:
            return b""


def test_links_endpoint_stops_reading_at_the_limit(tmp_path):
    """POST /jobs/{id}/links answers 413 once the limit is passed, not after the whole body."""
    cfg = base_config(tmp_path, server={"max_body_bytes": 4096})
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        job_id = post_demo(client, "links-limit")
        wait_status(client, job_id, {"succeeded"})
        answer = _send_chunked_without_end(url, f"/jobs/{job_id}/links", 64 * 1024)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        answer = _send_chunked_without_end(url, "/poll-video", 64 * 1024)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        # a small body still works
        resp = client.post(f"/jobs/{job_id}/links", json={"expiresIn": 120})
        assert resp.status_code == 200 and resp.json()["expiresIn"] == 120


# --- item 12: singleUse covers the video links too -----------------------------------------


def test_single_use_makes_the_video_links_single_use(tmp_path):
    """The video links in a singleUse answer work once; ordinary links keep working."""
    with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
        job_id = post_demo(client, "once")
        done = wait_status(client, job_id, {"succeeded"})
        links = client.post(f"/jobs/{job_id}/links", json={"singleUse": True}).json()
        video = links["videoUrls"][0]
        assert client.get(video).status_code == 200
        second = client.get(video)
        assert second.status_code == 410 and second.json()["error"]["code"] == "link_used"
        zip_url = links["zipUrl"]
        assert client.get(zip_url).status_code == 200
        assert client.get(zip_url).status_code == 410
        plain = client.post(f"/jobs/{job_id}/links", json={}).json()["videoUrls"][0]
        assert client.get(plain).status_code == 200 and client.get(plain).status_code == 200
        assert client.get(done["videoUrls"][0]).status_code == 200


# --- item 13: stale .part files and empty folders ------------------------------------------


def _stale_part(folder: Path, name: str, age_s: float = 10_000) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / name
    part.write_bytes(b"\x00" * 100)
    then = time.time() - age_s
    os.utime(part, (then, then))
    return part


def test_stale_parts_are_removed_at_start_and_by_the_retention_sweep(tmp_path):
    """A kill's leftover .part goes at start and in the sweep; a part still being written stays."""
    cfg = base_config(tmp_path, storage={"retention_days": 30, "retention_sweep_s": 0.2})
    videos = tmp_path / "videos"
    stale = _stale_part(videos / "v2" / "demo-x" / "s-y" / "t-z", ".0.mp4.dead.part")
    fresh = _stale_part(videos / "v2" / "demo-x" / "s-y" / "t-w", ".0.mp4.live.part", age_s=0)
    with run_service(cfg):
        assert not stale.exists() and not stale.parent.exists()
        assert fresh.exists()
        later = _stale_part(videos / "v2" / "demo-x" / "s-q" / "t-q", ".1.mp4.dead.part")
        wait_for(lambda: not later.exists() and not later.parent.parent.exists(), timeout=10)
        assert fresh.exists()


def test_delete_removes_the_jobs_folder_with_its_stale_parts(tmp_path):
    """Deleting a job leaves no folder behind, even with a stale part of a lost download."""
    with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
        job_id = post_demo(client, "folder")
        done = wait_status(client, job_id, {"succeeded"})
        key = client.get(f"/jobs/{job_id}").json()
        assert done["videoUrls"]
        folders = [p for p in (tmp_path / "videos").rglob("*") if p.is_dir()]
        leaf = max(folders, key=lambda p: len(p.parts))
        _stale_part(leaf, ".1.mp4.abc123.part")
        assert client.delete(f"/jobs/{job_id}").status_code == 200
        assert not leaf.exists(), key
        assert list((tmp_path / "videos").iterdir()) == []


# --- item 14: callback URLs httpx cannot send ----------------------------------------------


@pytest.mark.parametrize(
    "callback",
    [
        "http://0177.0.0.1/x",
        "http://127.000.000.001/x",
        "http://\u2460\u2461\u2466.0.0.1/x",
        "http://0x7f.1/x",
        "http://2130706433/x",
    ],
)
def test_non_canonical_ip_callbacks_are_refused_at_intake(tmp_path, callback):
    """Even with private URLs allowed, a host httpx cannot send or a non-canonical IP is 422."""
    with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
        resp = client.post(
            "/poll-video",
            json={"sessionId": "s", "taskId": "t", "model": "demo", "callbackUrl": callback},
        )
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["field"] == "callbackUrl"


def test_a_callback_that_can_never_be_sent_fails_once(tmp_path):
    """A stored job (accepted by an older version) with an unsendable callback URL gets one
    final failed delivery, not a day of retried tracebacks."""
    cfg = base_config(tmp_path)

    async def seed() -> str:
        store = SqliteJobStore({"url": cfg["store"]["url"]})
        await store.open()
        job = make_job(task_id="bad-callback", callback_url="http://0177.0.0.1/x")
        await store.create(job)
        await store.close()
        return job.id

    job_id = asyncio.run(seed())
    with capture_logs() as logs, run_service(cfg) as url, httpx.Client(base_url=url) as client:
        wait_status(client, job_id, {"succeeded"})
        row = wait_for(lambda: next(iter(deliveries(client, job_id)), None))
        row = wait_for(
            lambda: next((d for d in deliveries(client, job_id) if d["status"] == "failed"), None)
        )
        time.sleep(1.0)  # the schedule would have retried by now (0.2, 0.5, 1 s)
        row = deliveries(client, job_id)[0]
    assert row["status"] == "failed" and row["attempts"] == 1
    assert sum(1 for e in logs if e["event"] == "notifier_crashed") <= 1


# --- item 15: secrets scrubbed from free text, any letter case ----------------------------


def test_configured_secrets_are_scrubbed_from_logs_in_any_case(capsys):
    """A key echoed by a provider, or lower-cased by a library, never reaches the log."""
    register_secrets(["Bot123456:AAH-SecretTokenValue"])
    configure("INFO", "json")
    structlog.get_logger("t").warning(
        "poll_refused",
        detail="Unauthorized: bot123456:aah-secrettokenvalue is invalid",
        nested={"text": "BOT123456:AAH-SECRETTOKENVALUE"},
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "secrettokenvalue" not in json.dumps(line).lower()
    assert "[redacted]" in line["detail"]
    assert scrub("x BOT123456:AAH-SECRETTOKENVALUE y") == "x [redacted] y"


def test_a_secret_echoed_by_a_target_is_not_stored_in_last_error(tmp_path):
    """A receiver that echoes the configured KIE key (lower-cased) in its 400 answer: the
    delivery's lastError shown by GET /jobs/{id} does not carry it."""
    secret = "Kie-Key-ZX81-Secret"

    async def echo(request: Request) -> Response:
        return JSONResponse({"error": f"invalid key {secret.lower()}"}, status_code=400)

    with serve_in_thread(Starlette(routes=[Route("/hook", echo, methods=["POST"])])) as hook:
        cfg = base_config(tmp_path, providers={"kie": {"api_key": secret}})
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            job_id = post_demo(client, "echo", callbackUrl=f"{hook}/hook")
            row = wait_for(
                lambda: next(
                    (d for d in deliveries(client, job_id) if d["status"] == "failed"), None
                )
            )
    assert "invalid key" in row["lastError"]
    assert secret.lower() not in row["lastError"].lower()


# --- item 16: Host header and cross-site requests -----------------------------------------


def test_foreign_host_headers_are_refused(tmp_path):
    """A DNS-rebinding page (Host: its own name) is refused; loopback, public_url and trusted
    names are answered; probes are exempt."""
    cfg = base_config(
        tmp_path,
        server={"public_url": "https://poller.example.com", "trusted_hosts": ["poller"]},
    )
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        port = url.rsplit(":", 1)[1]
        for bad in (f"rebind.attacker.example:{port}", "127.attacker.example", "localhost.evil"):
            evil = client.get("/jobs", headers={"Host": bad})
            assert evil.status_code == 400 and evil.json()["error"]["code"] == "host_not_allowed"
        assert client.get("/jobs", headers={"Host": f"127.0.0.2:{port}"}).status_code == 200
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "poller.example.com", "poller"):
            assert client.get("/jobs", headers={"Host": host}).status_code == 200, host
        assert client.get("/healthz", headers={"Host": "10.1.2.3:8080"}).status_code == 200


def test_host_verdicts_hold_after_the_guard_forgets_them(tmp_path):
    """The guard remembers each Host's verdict and starts afresh after 256 names: a foreign
    host is refused on every request, before and after, and loopback is still answered."""
    with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
        port = url.rsplit(":", 1)[1]
        for n in range(300):  # more names than the guard keeps; each refused
            resp = client.get("/jobs", headers={"Host": f"n{n}.attacker.example"})
            assert resp.status_code == 400, n
        for _ in range(2):
            assert client.get("/jobs", headers={"Host": "rebind.example"}).status_code == 400
            assert client.get("/jobs", headers={"Host": f"127.0.0.1:{port}"}).status_code == 200


def test_cross_site_browser_posts_are_refused_without_a_token(tmp_path):
    """A form auto-submitted from another site creates no job; workflow tools are unaffected."""
    body = {"sessionId": "s", "taskId": "csrf", "model": "demo"}
    with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
        resp = client.post("/poll-video", data=body, headers={"Sec-Fetch-Site": "cross-site"})
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "cross_site_refused"
        resp = client.post("/poll-video", data=body, headers={"Origin": "https://evil.example"})
        assert resp.status_code == 403
        resp = client.post("/poll-video", data=body, headers={"Origin": "null"})
        assert resp.status_code == 403
        assert client.get("/jobs").json()["jobs"] == []
        resp = client.post("/poll-video", json=body, headers={"Origin": url})
        assert resp.status_code == 200
        resp = client.post("/poll-video", json={**body, "taskId": "plain"})
        assert resp.status_code == 200


def test_with_a_token_the_token_is_the_guard(tmp_path):
    """With a token set, a caller holding it is answered under any name (n8n in a Docker
    network calling us by service name), and one without it still gets 401."""
    token = "a-real-token-for-tests"
    cfg = base_config(tmp_path, server={"auth_token": token})
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        auth = {"Authorization": f"Bearer {token}"}
        resp = client.post(
            "/poll-video",
            json={"sessionId": "s", "taskId": "t", "model": "demo"},
            headers={**auth, "Sec-Fetch-Site": "cross-site"},
        )
        assert resp.status_code == 200
        assert client.get("/jobs", headers={**auth, "Host": "webhook-poller:8080"}).is_success
        assert client.get("/jobs", headers={"Host": "webhook-poller:8080"}).status_code == 401


def test_trailing_slash_redirect_does_not_reflect_the_host(tmp_path):
    """GET /jobs/ redirects to the relative /jobs, never to a host taken from the request."""
    cfg = base_config(tmp_path, server={"trusted_hosts": ["*"]})
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        resp = client.get("/jobs/?limit=5", headers={"Host": "evil.example"})
        assert resp.status_code in (301, 307, 308)
        assert resp.headers["location"] == "/jobs?limit=5"


# --- item 17: connection limits, Allow, dashboard headers ---------------------------------


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        pass


def _serve_with_cli_config(cfg: dict[str, Any]):
    settings = settings_from_mapping(cfg)
    server = _Server(uvicorn_config(create_app(settings), settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=15)
    return server, thread


def test_silent_and_half_header_connections_are_closed(tmp_path):
    """A connection that sends nothing, or half a header, is closed after header_timeout_s;
    an idle keep-alive connection after keep_alive_timeout_s."""
    cfg = base_config(tmp_path, server={"header_timeout_s": 0.5, "keep_alive_timeout_s": 1})
    server, thread = _serve_with_cli_config(cfg)
    port = cfg["server"]["port"]
    try:
        for opening, trickle in ((b"", b""), (b"GET /healthz HTTP/1.1\r\nX-Slow: ", b"a")):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                started = time.monotonic()
                sock.sendall(opening)
                for _ in range(3 if trickle else 0):  # trickling does not extend the deadline
                    time.sleep(0.1)
                    sock.sendall(trickle)
                assert sock.recv(100) == b""
                assert time.monotonic() - started < 4
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(1000).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert sock.recv(100) == b""
            assert time.monotonic() - started < 4
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_connection_cap_comes_from_settings(tmp_path):
    """server.max_connections and the timeouts reach uvicorn."""
    cfg = base_config(tmp_path, server={"max_connections": 7, "keep_alive_timeout_s": 3})
    settings = settings_from_mapping(cfg)
    config = uvicorn_config(create_app(settings), settings)
    assert config.limit_concurrency == 7 and config.timeout_keep_alive == 3


def test_405_names_every_allowed_method(tmp_path):
    """A wrong method answers 405 with Allow listing what the path serves."""
    with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
        resp = client.post("/jobs/job_x")
        assert resp.status_code == 405
        assert set(resp.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
        assert client.put("/poll-video").headers["allow"] == "POST"


def test_dashboard_sends_csp_and_frame_denial(tmp_path):
    """The dashboard may not be framed and runs only its own scripts."""
    with run_service(base_config(tmp_path)) as url, httpx.Client(base_url=url) as client:
        resp = client.get("/")
    assert resp.headers["x-frame-options"] == "DENY"
    csp = resp.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src" in csp and "'sha256-" in csp
    assert "unsafe-eval" not in csp


@pytest.mark.browser
def test_dashboard_runs_under_its_csp_and_refuses_framing(tmp_path):
    """In Chromium the dashboard's own script runs with no CSP violation, and a page that
    frames it gets nothing."""
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.fail(f"Debian's chromium is needed at {chromium} (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with run_service(base_config(tmp_path)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            messages: list[str] = []
            page.on("console", lambda msg: messages.append(msg.text))
            page.goto(url + "/")
            page.wait_for_selector("#live.on")  # no token set: the live stream connects
            assert not [m for m in messages if "Content Security Policy" in m], messages
            framer = browser.new_page()
            framer.set_content(f'<iframe id="f" src="{url}/"></iframe>')
            framer.wait_for_timeout(1000)
            frame = framer.frame_locator("#f")
            assert frame.locator("#live").count() == 0
        finally:
            browser.close()


def test_a_key_echoed_by_the_provider_reaches_neither_log_nor_job(tmp_path):
    """KIE answers a failure whose text carries the API key in upper case: the service's own
    rendered log lines (a real subprocess) and the job's error reason do not carry it."""
    from tests.support import kie_emulator as kie
    from tests.support.service import ServiceProcess

    emulator = kie.KieEmulator()
    emulator.script("echo-key", [kie.veo_failed(400, f"bad key {kie.API_KEY.upper()} for veo")])
    with serve_in_thread(emulator.app) as kie_url:
        cfg = base_config(
            tmp_path,
            providers={"kie": {"base_url": kie_url}},
            logging={"level": "INFO", "format": "json"},
        )
        svc = ServiceProcess(cfg, tmp_path).start()
        try:
            with httpx.Client(base_url=svc.url) as client:
                resp = client.post(
                    "/poll-video", json={"sessionId": "s", "taskId": "echo-key", "model": "veo3"}
                )
                job = wait_status(client, resp.json()["jobId"], {"failed"})
        finally:
            svc.terminate()
    logs = svc.logs()
    assert "bad key" in logs  # the provider's text is logged ...
    assert kie.API_KEY not in logs.lower()  # ... without the key
    assert kie.API_KEY not in json.dumps(job).lower()


def test_host_lists_can_come_from_the_environment(tmp_path):
    """Docker users set the lists as comma-separated environment variables."""
    from webhook_poller.config import load_settings

    settings = load_settings(
        None,
        {
            "WEBHOOK_POLLER_SECURITY__ALLOWED_HOSTS": "n8n, localhost:5678,10.0.0.0/8",
            "WEBHOOK_POLLER_SERVER__TRUSTED_HOSTS": "webhook-poller",
        },
    )
    assert settings.security.allowed_hosts == ["n8n", "localhost:5678", "10.0.0.0/8"]
    assert settings.server.trusted_hosts == ["webhook-poller"]


def test_page_policy_hashes_every_inline_script_and_handler():
    """Scripts with attributes and single-quoted handlers are hashed too; external ones not."""
    from webhook_poller.guard import page_security_headers

    html = (
        '<script>a()</script><script type="module">b()</script>'
        '<script src="/x.js"></script><form onsubmit=\'return false\' onclick="c()">'
    )
    csp = page_security_headers(html)["Content-Security-Policy"]
    assert csp.count("'sha256-") == 4 and "'unsafe-hashes'" in csp


def test_a_lower_cased_bot_token_in_a_telegram_error_is_not_stored(tmp_path):
    """The Bot API error text carries the token in lower case (as python-telegram-bot may
    render it): the delivery's lastError from GET /jobs/{id} does not."""
    from tests.support.chat_servers import BOT_TOKEN, TelegramEmulator

    emulator = TelegramEmulator()
    emulator.errors = [(403, f"Forbidden: bot{BOT_TOKEN.lower()} was blocked by the user", None)]
    with emulator.serving() as tg:
        notifier = {
            "type": "telegram",
            "bot_token": BOT_TOKEN,
            "base_url": emulator.base_url(tg),
            "chat_id": 7,
        }
        cfg = base_config(tmp_path, notifiers=[notifier])
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            job_id = post_demo(client, "tg-token")
            row = wait_for(lambda: _failed_delivery(client, job_id))
    assert "blocked by the user" in row["lastError"]
    assert BOT_TOKEN.lower() not in row["lastError"].lower()
