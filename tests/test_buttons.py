"""Follow-ups and Telegram buttons over real HTTP: the KIE emulator (generate, extend,
get-1080p-video, get-4k-video), the Telegram Bot API emulator (python-telegram-bot reaches it
through base_url) and a webhook receiver.

``POST /jobs/{id}/extend`` and ``/upscale`` make linked jobs delivered like their parent; a
press on the video's Extend button ends in the extended video in the same chat; a press
from another chat, a second press and a wrong secret change nothing; Publish emits
``video.publish_requested`` to the webhook targets; Regenerate resubmits.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.support import kie_emulator as kie
from tests.support.chat_servers import BOT_TOKEN, TelegramEmulator
from tests.support.servers import serve_in_thread
from tests.support.service import (
    CALLBACK_SECRET,
    CallbackReceiver,
    base_config,
    run_service,
    wait_for,
)

SECRET = "tg-hook_secret-42"
CHAT = 4242
VEO = {"sessionId": "s1", "model": "veo3_fast", "prompt": "a red fox in the snow"}


@pytest.fixture
def emulator():
    emu = kie.KieEmulator()
    with serve_in_thread(emu.app) as url:
        emu.url = url
        emu.base_url = url
        yield emu


@pytest.fixture
def telegram():
    emu = TelegramEmulator()
    with emu.serving() as url:
        emu.url = url
        yield emu


def config(tmp_path, emulator, tg=None, hook=None, **kie_extra):
    notifiers: list[dict[str, Any]] = []
    if tg is not None:
        notifiers.append(
            {
                "type": "telegram",
                "bot_token": BOT_TOKEN,
                "base_url": tg.base_url(tg.url),
                "webhook_secret": SECRET,
            }
        )
    if hook is not None:
        notifiers.append({"type": "webhook", "url": f"{hook}/hook", "secret": CALLBACK_SECRET})
    return base_config(
        tmp_path,
        providers={"kie": {"base_url": emulator.url, **kie_extra}},
        notifiers=notifiers,
    )


def finished(client: httpx.Client, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body = client.get(f"/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(check, timeout)


def generated(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    resp = client.post("/generate", json={**VEO, "context": {"chatId": CHAT}, **extra})
    assert resp.status_code == 200, resp.text
    job = finished(client, resp.json()["jobId"])
    assert job["status"] == "succeeded", job
    return job


def buttons_of(tg: TelegramEmulator, index: int = 0) -> dict[str, str]:
    call = wait_for(lambda: len(tg.sent("sendVideo")) > index and tg.sent("sendVideo")[index])
    rows = tg.markup(call)["inline_keyboard"]
    return {b["text"]: b["callback_data"] for b in rows[0]}


def press(
    client: httpx.Client, data: str, chat: int = CHAT, secret: str | None = SECRET, n: int = 1
) -> httpx.Response:
    update = {
        "update_id": 1000 + n,
        "callback_query": {
            "id": f"cq{n}",
            "from": {"id": 7, "is_bot": False, "first_name": "Ann"},
            "chat_instance": "ci",
            "data": data,
            "message": {"message_id": 101, "date": 0, "chat": {"id": chat, "type": "private"}},
        },
    }
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return client.post("/telegram/webhook", json=update, headers=headers)


def answers(tg: TelegramEmulator) -> list[dict[str, Any]]:
    return tg.sent("answerCallbackQuery")


def jobs(client: httpx.Client) -> list[dict[str, Any]]:
    return client.get("/jobs").json()["jobs"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_extend_press_ends_in_the_extended_video_in_the_same_chat(
    tmp_path, emulator, telegram, backend, request
):
    """The video's buttons carry short signed callback_data; an Extend press is answered at
    once, extends the parent's Veo task at KIE and the new video arrives in the same chat
    (parentJobId links it); pressing again does nothing twice (on either store)."""
    cfg = config(tmp_path, emulator, telegram)
    if backend == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        cfg["store"] = {"url": server.url, "lease_s": 5}
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        parent = generated(c)
        data = buttons_of(telegram)
        assert set(data) == {"Publish", "Extend", "Regenerate"}
        assert all(len(v.encode()) <= 64 for v in data.values())
        assert data["Extend"].startswith(f"extend:{parent['jobId']}:")

        started = time.monotonic()
        resp = press(c, data["Extend"])
        assert resp.status_code == 200 and resp.json()["result"] == "extend"
        answer = wait_for(lambda: answers(telegram))[0]
        assert answer["at"] - started < 1.0 and answer["fields"]["callback_query_id"] == "cq1"

        extend = wait_for(lambda: [c for c in emulator.creates if c["path"].endswith("/extend")])
        assert extend[0]["body"]["taskId"] == parent["taskIds"][0]
        assert extend[0]["body"]["prompt"] == VEO["prompt"]
        child = wait_for(lambda: [j for j in jobs(c) if j.get("parentJobId") == parent["jobId"]])
        done = finished(c, child[0]["jobId"])
        assert done["status"] == "succeeded" and done["parentJobId"] == parent["jobId"]
        assert done["taskId"] == extend[0]["task_id"]
        second = wait_for(
            lambda: len(telegram.sent("sendVideo")) > 1 and telegram.sent("sendVideo")
        )
        assert int(second[1]["fields"]["chat_id"]) == CHAT

        again = press(c, data["Extend"], n=2)
        assert again.status_code == 200 and again.json()["result"] == "repeated"
        time.sleep(0.5)
        assert len([c for c in emulator.creates if c["path"].endswith("/extend")]) == 1
        assert answers(telegram)[-1]["fields"]["text"] == "Already done."


def test_other_chat_and_wrong_secret_change_nothing(tmp_path, emulator, telegram):
    with (
        run_service(config(tmp_path, emulator, telegram)) as url,
        httpx.Client(base_url=url) as c,
    ):
        parent = generated(c)
        data = buttons_of(telegram)
        for secret in (None, "", "wrong-secret"):
            resp = press(c, data["Extend"], secret=secret)
            assert resp.status_code in (401, 403), resp.text
            assert resp.json()["ok"] is False
        assert not answers(telegram)

        resp = press(c, data["Extend"], chat=CHAT + 1)
        assert resp.status_code == 200 and resp.json()["result"] == "refused"
        forged = data["Extend"].replace(parent["jobId"], "job_" + "0" * 24)
        assert press(c, forged, n=3).json()["result"] == "refused"
        assert press(c, "extend:nonsense", n=4).json()["result"] == "unknown"
        time.sleep(0.5)
        assert not [c for c in emulator.creates if c["path"].endswith("/extend")]
        assert len(jobs(c)) == 1
        # the refused press did not use up the real one
        assert press(c, data["Extend"], n=5).json()["result"] == "extend"


def test_publish_press_reaches_the_webhook_and_regenerate_resubmits(tmp_path, emulator, telegram):
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = config(tmp_path, emulator, telegram, hook)
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            parent = generated(c)
            data = buttons_of(telegram)
            assert press(c, data["Publish"]).json()["result"] == "publish"
            assert press(c, data["Publish"], n=2).json()["result"] == "repeated"
            event = wait_for(lambda: receiver.events("video.publish_requested"))
            body = event[0]["body"]
            assert event[0]["verified"] and body["jobId"] == parent["jobId"]
            assert body["videoUrls"] and body["context"] == {"chatId": CHAT}

            assert press(c, data["Regenerate"], n=3).json()["result"] == "regen"
            retry = wait_for(lambda: [j for j in jobs(c) if j.get("retryOf") == parent["jobId"]])
            assert finished(c, retry[0]["jobId"])["status"] == "succeeded"
            assert len([x for x in emulator.creates if x["path"].endswith("/generate")]) == 2
            time.sleep(0.5)
            assert len(receiver.events("video.publish_requested")) == 1


def test_extend_and_upscale_endpoints(tmp_path, emulator):
    """Linked jobs through the API: extend with the caller's prompt; 1080p and 4K polled on
    their own endpoints at their own cadence through the "processing" answers; the parent's
    callback gets each follow-up's video; bad input is a 4xx naming the field."""
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = config(tmp_path, emulator, upscale_interval_s=0.3)
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            parent = generated(c, callbackUrl=f"{hook}/cb")
            pid = parent["jobId"]
            resp = c.post(f"/jobs/{pid}/extend", json={"prompt": "the fox jumps", "index": 0})
            assert resp.status_code == 200, resp.text
            ext = finished(c, resp.json()["jobId"])
            assert ext["status"] == "succeeded" and ext["parentJobId"] == pid
            body = next(x for x in emulator.creates if x["path"].endswith("/extend"))["body"]
            assert body == {
                "taskId": parent["taskIds"][0],
                "prompt": "the fox jumps",
                "model": "fast",
            }

            ups = {}
            for resolution in ("1080p", "4k"):
                resp = c.post(f"/jobs/{pid}/upscale", json={"resolution": resolution})
                assert resp.status_code == 200, resp.text
                ups[resolution] = resp.json()["jobId"]
            for resolution, job_id in ups.items():
                done = finished(c, job_id)
                assert done["status"] == "succeeded", done
                assert done["parentJobId"] == pid
                calls = [u for u in emulator.upscales if u["resolution"] == resolution]
                assert len(calls) == 3 and all(u["task_id"] == parent["taskIds"][0] for u in calls)
                gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(calls)]
                assert min(gaps) >= 0.25, gaps  # upscale_interval_s, not the 0.05 s interval
            hooks = wait_for(lambda: len(receiver.events("video.succeeded")) >= 4 and receiver)
            ids = {e["body"]["jobId"] for e in hooks.events("video.succeeded")}
            assert ids == {pid, ext["jobId"], *ups.values()}

            bad = c.post(f"/jobs/{pid}/upscale", json={"resolution": "8k"})
            assert bad.status_code == 422 and bad.json()["error"]["field"] == "resolution"
            bad = c.post(f"/jobs/{pid}/extend", json={"prompt": "  "})
            assert bad.status_code == 422 and bad.json()["error"]["field"] == "prompt"
            bad = c.post(f"/jobs/{pid}/extend", json={"prompt": "x", "index": 3})
            assert bad.status_code == 422 and bad.json()["error"]["field"] == "index"
            assert c.post("/jobs/job_nope/extend", json={"prompt": "x"}).status_code == 404
            pending = c.post(
                f"/jobs/{pid}/upscale",
                content="not json",
                headers={"content-type": "application/json"},
            )
            assert 400 <= pending.status_code < 500


def test_set_webhook_cli_registers_url_and_secret(tmp_path, telegram):
    cfg = base_config(
        tmp_path,
        server={"public_url": "https://poller.example.com"},
        notifiers=[
            {
                "type": "telegram",
                "bot_token": BOT_TOKEN,
                "base_url": telegram.base_url(telegram.url),
                "webhook_secret": SECRET,
            }
        ],
    )
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(cfg))
    run = subprocess.run(
        [sys.executable, "-m", "webhook_poller", "telegram", "set-webhook", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    call = telegram.sent("setWebhook")[0]["fields"]
    assert call["url"] == "https://poller.example.com/telegram/webhook"
    assert call["secret_token"] == SECRET
    assert SECRET not in run.stdout + run.stderr and "/telegram/webhook" in run.stdout


def test_submitted_jobs_carry_our_push_url(tmp_path, emulator):
    """With server.public_url set, a generation and its extension send KIE our
    /callbacks/kie-veo as callBackUrl and expect the push (polling is the safety net); an
    upscale, which has no task of its own, does not."""
    public = "https://poller.example.com"
    cfg = config(tmp_path, emulator, upscale_interval_s=0.1)
    cfg["server"]["public_url"] = public
    cfg["polling"]["push_fallback_interval_s"] = 0.05
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        resp = c.post("/generate", json=VEO)
        assert resp.status_code == 200, resp.text
        parent = finished(c, resp.json()["jobId"])
        assert parent["status"] == "succeeded" and parent["expectPush"] is True
        create = next(x for x in emulator.creates if x["path"].endswith("/generate"))
        assert create["body"]["callBackUrl"] == f"{public}/callbacks/kie-veo"

        ext = c.post(f"/jobs/{parent['jobId']}/extend", json={"prompt": "on and on"}).json()
        up = c.post(f"/jobs/{parent['jobId']}/upscale", json={"resolution": "1080p"}).json()
        assert finished(c, ext["jobId"])["expectPush"] is True
        assert finished(c, up["jobId"])["expectPush"] is False
        extend = next(x for x in emulator.creates if x["path"].endswith("/extend"))
        assert extend["body"]["callBackUrl"] == f"{public}/callbacks/kie-veo"


def test_follow_up_of_the_second_video_and_of_a_provider_without_them(tmp_path, emulator):
    """``index`` picks the job's video, hence its task: KIE is asked for that task's only
    video (its index 0). A provider without follow-ups is a 422 naming the ones with them."""
    cfg = config(tmp_path, emulator, upscale_interval_s=0.05)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        parent = generated(c, count=2)
        assert len(parent["taskIds"]) == 2
        resp = c.post(f"/jobs/{parent['jobId']}/upscale", json={"resolution": "4k", "index": 1})
        assert resp.status_code == 200, resp.text
        assert finished(c, resp.json()["jobId"])["status"] == "succeeded"
        assert {(u["task_id"], u["index"]) for u in emulator.upscales} == {
            (parent["taskIds"][1], 0)
        }

        demo = c.post("/poll-video", json={"sessionId": "s", "taskId": "t1", "model": "demo"})
        demo_job = finished(c, demo.json()["jobId"])
        bad = c.post(f"/jobs/{demo_job['jobId']}/extend", json={"prompt": "more"})
        assert bad.status_code == 422, bad.text
        assert "kie-veo" in bad.json()["error"]["allowed"]


def test_upscale_survives_garbage_and_fails_clearly_when_4k_is_unavailable(tmp_path, emulator):
    """Unreadable upscale answers are polled again; KIE's final "4K version unavailable"
    fails the follow-up (the parent stays succeeded)."""
    cfg = config(tmp_path, emulator, upscale_interval_s=0.05)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        parent = generated(c)
        emulator.upscale_answers = [
            (200, "<html>maintenance</html>", {}),
            (200, {"code": "n/a", "data": [1, 2]}, {}),
            (200, {"code": 200, "data": {"resultUrls": {"nested": True}}}, {}),
            (503, {"code": 503, "msg": "busy"}, {}),
            (200, {"code": 500, "msg": "The 4K version of this video is unavailable."}, {}),
        ]
        resp = c.post(f"/jobs/{parent['jobId']}/upscale", json={"resolution": "4k"})
        done = finished(c, resp.json()["jobId"])
        assert done["status"] == "failed", done
        assert done["error"]["code"] == "unknown_provider_error"
        assert len(emulator.upscales) == 5
        assert c.get(f"/jobs/{parent['jobId']}").json()["status"] == "succeeded"


ODD_UPDATES: list[Any] = [
    [],
    "text",
    {},
    {"update_id": 1, "message": {"text": "hi"}},
    {"callback_query": None},
    {"callback_query": {"id": 5, "data": "extend:x:y"}},
    {"callback_query": {"id": "q", "data": None, "message": {"chat": {"id": CHAT}}}},
    {"callback_query": {"id": "q", "data": ["extend"], "message": {"chat": {"id": CHAT}}}},
    {"callback_query": {"id": "q", "data": "extend:" + "j" * 80 + ":t", "message": {}}},
    {"callback_query": {"id": "q", "data": "extend:a:b", "message": {"chat": "nope"}}},
    {"callback_query": {"id": "q", "data": "extend:a:b", "message": {"chat": {"id": [1]}}}},
    {"callback_query": {"id": "q", "data": "publish:a:b:c", "message": {"chat": {"id": 1}}}},
]


def test_odd_updates_answer_2xx_or_4xx_and_do_nothing(tmp_path, emulator, telegram):
    with (
        run_service(config(tmp_path, emulator, telegram)) as url,
        httpx.Client(base_url=url) as c,
    ):
        generated(c)
        for update in ODD_UPDATES:
            resp = c.post(
                "/telegram/webhook",
                content=json.dumps(update),
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            )
            assert resp.status_code < 500, (update, resp.text)
            if resp.status_code == 200:
                assert resp.json()["result"] in ("ignored", "unknown", "refused"), update
        assert len(jobs(c)) == 1 and not emulator.upscales
        assert not [x for x in emulator.creates if x["path"].endswith("/extend")]
