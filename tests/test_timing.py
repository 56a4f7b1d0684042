"""The interval the user set rules the first poll and transient retries (issue 12, item 1)."""

from __future__ import annotations

import random
from datetime import timedelta

import httpx
import pytest

from tests.support import kie_emulator as kie
from tests.support.servers import serve_in_thread
from tests.support.service import CallbackReceiver, base_config, run_service, wait_for, wait_status
from webhook_poller.config import PollingSettings, settings_from_mapping
from webhook_poller.model import Job, JobState, utcnow
from webhook_poller.policy import PollPolicy, first_poll_delay_s
from webhook_poller.services import build_services

FAST = {"interval_s": 0.2, "give_up_after_s": 12, "tick_s": 0.05}


@pytest.fixture(scope="module")
def emulator():
    emu = kie.KieEmulator()
    with serve_in_thread(emu.app) as url:
        emu.url = url
        yield emu


@pytest.fixture(scope="module")
def receiver():
    rec = CallbackReceiver()
    with rec.serving() as url:
        rec.url = url
        yield rec


@pytest.fixture(scope="module")
def client(tmp_path_factory, emulator):
    """The service with only interval_s and give_up_after_s set, as a user would."""
    cfg = base_config(
        tmp_path_factory.mktemp("timing"), providers={"kie": {"base_url": emulator.url}}
    )
    cfg["polling"] = dict(FAST)  # none of the test defaults: the shipped ones apply
    with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


def post(client: httpx.Client, task_id: str, **extra: object) -> str:
    body = {"sessionId": "s", "taskId": task_id, "model": "veo3_fast", **extra}
    resp = client.post("/poll-video", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["jobId"])


def test_done_task_is_stored_and_notified_about_one_interval_after_intake(
    client, emulator, receiver
):
    """With interval_s 0.2 the first poll does not wait for the 10 s default."""
    emulator.script("done-now", [kie.veo_success([f"{emulator.url}/files/a.mp4"])])
    job_id = post(client, "done-now", callbackUrl=f"{receiver.url}/hook")
    done = wait_status(client, job_id, {"succeeded", "failed"}, timeout=6)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    events = wait_for(lambda: receiver.events("video.succeeded"), timeout=6)
    assert events[0]["body"]["jobId"] == job_id


def test_a_few_5xx_answers_are_retried_within_the_interval(client, emulator):
    """Three 500s in a row no longer back off from 5 s into provider_timeout."""
    emulator.script(
        "five-xx",
        [(500, {"code": 500, "msg": "busy"}, {})] * 3
        + [kie.veo_success([f"{emulator.url}/files/a.mp4"])],
    )
    job_id = post(client, "five-xx")
    done = wait_status(client, job_id, {"succeeded", "failed"}, timeout=14)
    assert done["status"] == "succeeded", done.get("error")
    assert len(emulator.calls_for("five-xx")) == 4


def test_two_429s_with_retry_after_still_succeed(client, emulator):
    """Retry-After 1 is honoured and the job still ends well inside give_up_after_s."""
    emulator.script(
        "limited",
        [(429, {"code": 429, "msg": "slow down"}, {"Retry-After": "1"})] * 2
        + [kie.veo_success([f"{emulator.url}/files/a.mp4"])],
    )
    job_id = post(client, "limited")
    done = wait_status(client, job_id, {"succeeded", "failed"}, timeout=14)
    assert done["status"] == "succeeded", done.get("error")
    times = [c["time"] for c in emulator.calls_for("limited")]
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 0.9


def test_429s_without_retry_after_pause_no_longer_than_the_interval(client, emulator):
    """A 429 with no Retry-After pauses the provider for the first retry delay, not 5 s."""
    emulator.script(
        "limited-bare",
        [(429, {"code": 429, "msg": "slow down"}, {})] * 3
        + [kie.veo_success([f"{emulator.url}/files/a.mp4"])],
    )
    job_id = post(client, "limited-bare")
    done = wait_status(client, job_id, {"succeeded", "failed"}, timeout=14)
    assert done["status"] == "succeeded", done.get("error")


def test_slow_job_reaches_delayed_before_giving_up(client, emulator):
    """max_attempts polls at the user's interval come well before the 12 s deadline."""
    emulator.script("slow-1", [kie.veo_pending()])
    job_id = post(client, "slow-1")
    assert wait_status(client, job_id, {"delayed"}, timeout=11)["status"] == "delayed"


# --- the pure policy -------------------------------------------------------------------


def test_first_poll_delay_default_is_only_a_cap():
    """Default 10 s becomes one interval when shorter; a value the user set rules."""
    short = PollingSettings(interval_s=0.2)
    assert first_poll_delay_s(short, explicit=False) == 0.2
    assert first_poll_delay_s(PollingSettings(), explicit=False) == 10.0
    chosen = PollingSettings(interval_s=0.2, first_poll_delay_s=5)
    assert first_poll_delay_s(chosen, explicit=True) == 5


def test_gate_knows_which_first_delay_the_user_set(tmp_path):
    """polling.first_poll_delay_s set in the file rules; the demo's built-in 1 s is a cap."""
    cfg = base_config(tmp_path)
    cfg["polling"] = {"interval_s": 0.2}
    cfg["providers"] = {"demo": {"interval_s": 0.3}}
    services = build_services(settings_from_mapping(cfg))
    assert services.gate_for("kie-veo").first_poll_delay_s == 0.2
    assert services.gate_for("demo").first_poll_delay_s == 0.3
    cfg["polling"] = {"interval_s": 0.2, "first_poll_delay_s": 4}
    cfg["providers"] = {"demo": {"interval_s": 0.3, "first_poll_delay_s": 2}}
    services = build_services(settings_from_mapping(cfg))
    assert services.gate_for("kie-veo").first_poll_delay_s == 4
    assert services.gate_for("demo").first_poll_delay_s == 2


def test_builtin_min_interval_never_overrides_the_interval_the_user_set(tmp_path):
    """KIE's built-in 30 s spacing is capped at polling.interval_s; a value set rules."""
    cfg = base_config(tmp_path)
    cfg["providers"]["kie"].pop("min_interval_s")
    cfg["polling"] = {"interval_s": 0.2}
    assert build_services(settings_from_mapping(cfg)).gate_for("kie-veo").min_interval_s == 0.2
    cfg["polling"] = {}
    assert build_services(settings_from_mapping(cfg)).gate_for("kie-veo").min_interval_s == 30
    cfg["polling"] = {"interval_s": 0.2}
    cfg["providers"]["kie"]["min_interval_s"] = 45
    assert build_services(settings_from_mapping(cfg)).gate_for("kie-veo").min_interval_s == 45


def _job(age_s: float) -> Job:
    now = utcnow()
    created = now - timedelta(seconds=age_s)
    return Job(
        id="job_t",
        session_id="s",
        task_id="t",
        model="veo3",
        provider="kie-veo",
        state=JobState.POLLING,
        created_at=created,
        updated_at=created,
        due_at=now,
    )


def test_transient_retry_starts_within_one_interval_and_backs_off():
    """First retry <= max(interval, Retry-After), then growing, never past the deadline."""
    polling = PollingSettings(interval_s=0.2, give_up_after_s=12)
    policy = PollPolicy(polling, min_interval_s=0, rng=random.Random(1))
    job = _job(1)
    delays = []
    for _ in range(5):
        now = utcnow()
        job = policy.after_transient(job, now).job
        delays.append((job.due_at - now).total_seconds())
    assert delays[0] <= 0.2 + 1e-6
    assert delays[-1] > delays[0] and delays[-1] <= 0.2 * 2**4
    now = utcnow()
    limited = policy.after_transient(_job(1), now, retry_after_s=1.0).job
    assert 1.0 - 1e-6 <= (limited.due_at - now).total_seconds() <= 1.0 + 1e-6
    late = _job(11.5)
    now = utcnow()
    capped = policy.after_transient(late, now, retry_after_s=60).job
    assert capped.due_at <= late.created_at + timedelta(seconds=12)
