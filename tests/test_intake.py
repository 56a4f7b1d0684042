"""Intake over real HTTP: a job is stored before the 200, bad input is refused with nothing
stored, auth and the error envelope hold everywhere."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.service import base_config, run_service
from webhook_poller.config import check_listen_safety, settings_from_mapping
from webhook_poller.errors import ConfigError


def count_jobs(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


@pytest.fixture
def service(tmp_path):
    """The real service, scheduler paused far in the future so jobs stay as accepted."""
    cfg = base_config(tmp_path, polling={"first_poll_delay_s": 3600})
    with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def test_intake_stores_job_before_answering(service, tmp_path):
    """The 200 carries the job id and the job row is already on disk when it arrives."""
    resp = service.post(
        "/poll-video", json={"sessionId": "u1", "taskId": "veo_abc", "model": "demo"}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["ok"] is True and body["message"] == "Polling started"
    assert body["status"] == "queued" and body["alreadyKnown"] is False
    assert body["statusUrl"] == f"{str(service.base_url).rstrip('/')}/jobs/{body['jobId']}"
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        row = db.execute("SELECT state FROM jobs WHERE id=?", (body["jobId"],)).fetchone()
    assert row == ("queued",)
    status = service.get(f"/jobs/{body['jobId']}").json()
    assert status["taskId"] == "veo_abc" and status["attempts"] == 0
    assert status["message"] == "Your video is waiting to start."


def test_same_task_twice_gives_same_job(service, tmp_path):
    """A repeated post of one provider task answers the same job and says it was known."""
    payload = {"sessionId": "u1", "taskId": "dup", "model": "demo", "attempt": 3}
    first = service.post("/poll-video", json=payload).json()
    second = service.post("/webhook/poll-video", json=payload).json()
    assert second["jobId"] == first["jobId"]
    assert second["alreadyKnown"] is True and second["message"] == "Already polling this task"
    assert count_jobs(tmp_path) == 1


def test_attempt_resumes_counting(service):
    """The posted attempt is where counting resumes: attempts shows attempt - 1 at first."""
    job = service.post(
        "/poll-video", json={"sessionId": "u", "taskId": "t-att", "model": "demo", "attempt": 4}
    ).json()
    assert service.get(f"/jobs/{job['jobId']}").json()["attempts"] == 3


def test_form_encoded_body_is_accepted(service):
    """Zapier sends form bodies; they work like JSON, context as a JSON string."""
    resp = service.post(
        "/poll-video",
        data={
            "sessionId": "z1",
            "taskId": "form-1",
            "model": "demo",
            "attempt": "2",
            "context": json.dumps({"chatId": 5}),
        },
    )
    assert resp.status_code == 200, resp.text
    status = service.get(f"/jobs/{resp.json()['jobId']}").json()
    assert status["context"] == {"chatId": 5} and status["attempts"] == 1


BAD_BODIES = [
    ({"taskId": "t", "model": "demo"}, 422, "sessionId"),
    ({"sessionId": "", "taskId": "t", "model": "demo"}, 422, "sessionId"),
    ({"sessionId": "s", "taskId": 12, "model": "demo"}, 422, "taskId"),
    ({"sessionId": "s", "taskId": "t"}, 422, "model"),
    ({"sessionId": "s", "taskId": "t", "model": "demo", "attempt": 0}, 422, "attempt"),
    ({"sessionId": "s", "taskId": "t", "model": "demo", "attempt": "abc"}, 422, "attempt"),
    ({"sessionId": "s", "taskId": "t", "model": "demo", "attempt": True}, 422, "attempt"),
    ({"sessionId": "s", "taskId": "t", "model": "demo", "attempt": 1.5}, 422, "attempt"),
    ({"sessionId": "s", "taskId": "t", "model": "demo", "context": [1]}, 422, "context"),
    (
        {"sessionId": "s", "taskId": "t", "model": "demo", "context": {"x": "y" * 17000}},
        422,
        "context",
    ),
    (
        {"sessionId": "s", "taskId": "t", "model": "demo", "callbackUrl": "ftp://x.io/a"},
        422,
        "callbackUrl",
    ),
    ({"sessionId": "s", "taskId": "t", "model": "demo", "callbackUrl": 5}, 422, "callbackUrl"),
    ({"sessionId": "s\x00x", "taskId": "t", "model": "demo"}, 422, "sessionId"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_BODIES)
def test_bad_input_is_refused_and_nothing_stored(service, tmp_path, body, status, field):
    """Each invalid body gets the JSON error envelope naming the field, and no job."""
    resp = service.post("/poll-video", json=body)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert resp.json()["ok"] is False
    assert error["code"] == "validation_failed" and error["field"] == field
    assert error["message"]
    assert count_jobs(tmp_path) == 0


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        (b"not json", "application/json"),
        (b"[1,2]", "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe", "application/json"),
    ],
)
def test_unreadable_body_is_400(service, tmp_path, content, ctype):
    """Bodies that are not a JSON object are a 400 in the same envelope."""
    resp = service.post("/poll-video", content=content, headers={"content-type": ctype})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "validation_failed"
    assert count_jobs(tmp_path) == 0


def test_unknown_model_lists_known_models(service, tmp_path):
    """An unknown model answers 422 with the model patterns we do know."""
    resp = service.post("/poll-video", json={"sessionId": "s", "taskId": "t", "model": "pika"})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["field"] == "model" and "veo*" in error["knownModels"]
    assert count_jobs(tmp_path) == 0


def test_oversized_body_is_413(service, tmp_path):
    """A body over 64 KB is refused before it is parsed."""
    big = json.dumps({"sessionId": "s", "taskId": "t", "model": "demo", "pad": "x" * 70000})
    resp = service.post("/poll-video", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
    assert count_jobs(tmp_path) == 0


def test_unknown_job_and_route_are_404_envelopes(service):
    """Unknown jobs and paths answer the JSON envelope with not_found."""
    for path in ("/jobs/job_nope", "/nowhere"):
        resp = service.get(path)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"


def test_private_callback_url_refused_unless_allowed(tmp_path):
    """A callbackUrl on loopback or a private range is refused at intake by default."""
    cfg = base_config(
        tmp_path, security={"allow_private_urls": False}, polling={"first_poll_delay_s": 3600}
    )
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        for target in (
            "http://127.0.0.1:9/x",
            "http://10.1.2.3/hook",
            "http://localhost/h",
            "http://169.254.169.254/latest",
            "http://[::1]/x",
        ):
            resp = client.post(
                "/poll-video",
                json={"sessionId": "s", "taskId": "t", "model": "demo", "callbackUrl": target},
            )
            assert resp.status_code == 422, target
            assert resp.json()["error"]["field"] == "callbackUrl"
        ok = client.post(
            "/poll-video",
            json={
                "sessionId": "s",
                "taskId": "t",
                "model": "demo",
                "callbackUrl": "https://n8n.example.com/webhook-waiting/12?signature=x",
            },
        )
        assert ok.status_code == 200
    assert count_jobs(tmp_path) == 1


def test_token_guards_intake_and_jobs(tmp_path):
    """With a token set, intake and job reads need the bearer token; health does not."""
    cfg = base_config(
        tmp_path,
        server={"auth_token": "s3cr3t-token-for-tests"},
        polling={"first_poll_delay_s": 3600},
    )
    body = {"sessionId": "s", "taskId": "t", "model": "demo"}
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        assert client.post("/poll-video", json=body).status_code == 401
        wrong = client.post("/poll-video", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        assert count_jobs(tmp_path) == 0
        auth = {"Authorization": "Bearer s3cr3t-token-for-tests"}
        job = client.post("/poll-video", json=body, headers=auth).json()
        assert client.get(f"/jobs/{job['jobId']}").status_code == 401
        assert client.get(f"/jobs/{job['jobId']}", headers=auth).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_refuses_public_listen_without_token():
    """Listening beyond loopback without a token is a config error unless explicitly allowed."""
    with pytest.raises(ConfigError, match="auth_token"):
        check_listen_safety(settings_from_mapping({"server": {"host": "0.0.0.0"}}))
    check_listen_safety(
        settings_from_mapping({"server": {"host": "0.0.0.0", "allow_unauthenticated": True}})
    )
    check_listen_safety(
        settings_from_mapping({"server": {"host": "0.0.0.0", "auth_token": "a-real-token-1"}})
    )


def test_cli_exits_with_clear_message_on_unsafe_listen(tmp_path):
    """The serve command refuses 0.0.0.0 without a token and says which key to set."""
    proc = subprocess.run(
        [sys.executable, "-m", "webhook_poller", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2
    assert "server.auth_token" in proc.stderr
