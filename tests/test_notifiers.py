"""Telegram, Slack and Discord notifiers over real HTTP: python-telegram-bot against a local
Bot API emulator, chat-ops webhooks against local servers; routing, templates, escaping,
429s, a failing target beside working ones, and a restart between two deliveries."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.chat_servers import BOT_TOKEN, ChatWebhook, TelegramEmulator
from tests.support.service import (
    ServiceProcess,
    base_config,
    run_service,
    wait_for,
    wait_status,
)
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ConfigError
from webhook_poller.interfaces import PluginContext
from webhook_poller.notifiers.telegram import TelegramNotifier
from webhook_poller.notifiers.templates import (
    Templates,
    escape_discord,
    escape_slack,
    escape_telegram_html,
    escape_telegram_markdown_v2,
)

BUTTONS = [
    {"text": "Publish", "callback_data": "publish:{jobId}"},
    {"text": "Extend", "callback_data": "extend:{jobId}"},
    {"text": "Regenerate", "callback_data": "regen:{jobId}"},
]


def telegram(tg_url: str, emulator: TelegramEmulator, **extra) -> dict:
    return {
        "type": "telegram",
        "bot_token": BOT_TOKEN,
        "base_url": emulator.base_url(tg_url),
        "buttons": BUTTONS,
        **extra,
    }


def post(client: httpx.Client, task_id: str, session: str = "s1", **extra) -> str:
    resp = client.post(
        "/poll-video", json={"sessionId": session, "taskId": task_id, "model": "demo", **extra}
    )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["jobId"])


def deliveries(client: httpx.Client, job_id: str) -> dict[str, dict]:
    return {d["target"]: d for d in client.get(f"/jobs/{job_id}").json()["deliveries"]}


def test_demo_job_sends_one_video_with_buttons_to_the_right_chat(tmp_path):
    """The acceptance check: one sendVideo, the configured buttons, the context's chat id."""
    emulator = TelegramEmulator()
    with emulator.serving() as tg:
        cfg = base_config(tmp_path, notifiers=[telegram(tg, emulator)])
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            job_id = post(client, "tg-1", context={"chatId": 4242, "prompt": "a cat"})
            done = wait_status(client, job_id, {"succeeded", "failed"})
            assert done["status"] == "succeeded"
            wait_for(lambda: deliveries(client, job_id)["telegram"]["status"] == "sent")
            video_bytes = httpx.get(done["videoUrls"][0]).content
    [call] = emulator.sent()
    assert call["method"] == "sendVideo"
    assert call["content_type"].startswith("multipart/form-data")
    fields = call["fields"]
    assert fields["chat_id"] == "4242"
    assert fields["supports_streaming"] == "true"
    assert fields["parse_mode"] == "HTML"
    assert "<b>Your video is ready.</b>" in fields["caption"]
    meta = done["metadata"][0]
    assert int(fields["width"]) == meta["width"] and int(fields["height"]) == meta["height"]
    assert int(fields["duration"]) == round(meta["duration_s"])
    assert call["files"]["video"]["size"] == len(video_bytes)
    assert call["files"]["video"]["head"][4:8] == b"ftyp"
    [row] = emulator.markup(call)["inline_keyboard"]
    assert [(b["text"], b["callback_data"]) for b in row] == [
        ("Publish", f"publish:{job_id}"),
        ("Extend", f"extend:{job_id}"),
        ("Regenerate", f"regen:{job_id}"),
    ]


def test_chat_id_comes_from_session_then_context_then_config(tmp_path):
    emulator = TelegramEmulator()
    with emulator.serving() as tg:
        cfg = base_config(
            tmp_path,
            notifiers=[
                telegram(tg, emulator, chat_id=3, name="with-default"),
                telegram(tg, emulator, name="no-default", events=["video.succeeded"]),
            ],
        )
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            assert (
                client.put("/sessions/sess-a", json={"chat_id": 1, "lang": "en"}).status_code == 200
            )
            a = post(client, "chat-a", session="sess-a", context={"chatId": 2})
            b = post(client, "chat-b", session="sess-b", context={"chatId": 2})
            c = post(client, "chat-c", session="sess-c")
            for job_id in (a, b, c):
                wait_status(client, job_id, {"succeeded"})
            wait_for(
                lambda: all(
                    d["status"] != "pending"
                    for j in (a, b, c)
                    for d in deliveries(client, j).values()
                )
            )
            missing = deliveries(client, c)["no-default"]
            assert missing["status"] == "failed"
            assert "no chat id" in missing["lastError"]
            assert deliveries(client, c)["with-default"]["status"] == "sent"
    chats = sorted(int(c["fields"]["chat_id"]) for c in emulator.sent("sendVideo"))
    assert chats == [1, 1, 2, 2, 3], "session beats context beats config"


def test_video_over_the_upload_limit_goes_as_a_link(tmp_path):
    emulator = TelegramEmulator()
    with emulator.serving() as tg:
        cfg = base_config(
            tmp_path, notifiers=[telegram(tg, emulator, max_upload_bytes=1000, chat_id=7)]
        )
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            job_id = post(client, "big-one")
            done = wait_status(client, job_id, {"succeeded"})
            wait_for(lambda: deliveries(client, job_id)["telegram"]["status"] == "sent")
            [call] = emulator.sent()
            assert call["method"] == "sendMessage"
            [row] = emulator.markup(call)["inline_keyboard"]
            assert row[0]["text"] == "Download video"
            # a fresh signed link to the same video (its expiry counts from the send)
            assert row[0]["url"].split("?")[0] == done["videoUrls"][0].split("?")[0]
            assert [b["text"] for b in row[1:]] == ["Publish", "Extend", "Regenerate"]
            assert httpx.get(row[0]["url"]).status_code == 200, "the link works without a token"


def test_telegram_429_retry_after_is_honoured(tmp_path):
    emulator = TelegramEmulator()
    emulator.errors = [(429, "Too Many Requests: retry after 1", 1)]
    with emulator.serving() as tg:
        cfg = base_config(tmp_path, notifiers=[telegram(tg, emulator, chat_id=5)])
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            job_id = post(client, "flood")
            wait_status(client, job_id, {"succeeded"})
            wait_for(lambda: deliveries(client, job_id)["telegram"]["status"] == "sent")
            record = deliveries(client, job_id)["telegram"]
    assert record["attempts"] == 2
    first, second = emulator.sent("sendVideo")
    assert second["at"] - first["at"] >= 0.95, "waited retry_after before trying again"


def test_failed_and_timed_out_jobs_send_the_user_message(tmp_path):
    emulator = TelegramEmulator()
    with emulator.serving() as tg:
        cfg = base_config(
            tmp_path,
            polling={"give_up_after_s": 1.0, "max_attempts": 3},
            notifiers=[telegram(tg, emulator, chat_id=9, events=["video.failed", "video.delayed"])],
        )
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            failed = post(client, "will-fail")
            slow = post(client, "slow-forever")
            wait_status(client, failed, {"failed"})
            wait_status(client, slow, {"failed"}, timeout=20)
            wait_for(lambda: len(emulator.sent("sendMessage")) >= 3)
    texts = sorted(c["fields"]["text"] for c in emulator.sent("sendMessage"))
    assert texts == [
        "The provider did not return a result in time.",
        "The video could not be generated. Please try again.",
        "This is taking longer than usual. We are still checking.",
    ]
    assert not any("pretend" in t for t in texts), "never the provider's raw text"


def test_markup_telegram_cannot_parse_goes_out_as_plain_text(tmp_path):
    """An operator's template with broken HTML: the video still reaches the chat, with the
    caption as plain text, rather than the delivery failing for good."""
    emulator = TelegramEmulator()
    emulator.errors = [
        (
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to "
            'start tag "b"',
            None,
        )
    ]
    broken = {"video.succeeded": "<b>Ready: {{ model }} &amp; more"}
    with emulator.serving() as tg:
        cfg = base_config(tmp_path, notifiers=[telegram(tg, emulator, chat_id=3, templates=broken)])
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            job_id = post(client, "markup")
            wait_status(client, job_id, {"succeeded"})
            wait_for(lambda: deliveries(client, job_id)["telegram"]["status"] == "sent")
            record = deliveries(client, job_id)["telegram"]
    first, second = emulator.sent("sendVideo")
    assert first["fields"]["parse_mode"] == "HTML"
    assert "parse_mode" not in second["fields"]
    assert second["fields"]["caption"] == "Ready: demo & more"
    assert record["attempts"] == 1, "one delivery attempt, not a retry"


def test_escaping_per_format():
    nasty = "<b>5 > 3 & _x_ *y* [a](b) @everyone @here."
    values = {"userMessage": nasty}
    html = Templates(escape_telegram_html, {"default": "<i>{{ userMessage }}</i>"})
    assert html.render("x", values) == (
        "<i>&lt;b&gt;5 &gt; 3 &amp; _x_ *y* [a](b) @everyone @here.</i>"
    )
    md = Templates(escape_telegram_markdown_v2, {"default": "*{{ userMessage }}*"})
    assert md.render("x", values) == (r"*<b\>5 \> 3 & \_x\_ \*y\* \[a\]\(b\) @everyone @here\.*")
    assert escape_slack(nasty) == "&lt;b&gt;5 &gt; 3 &amp; _x_ *y* [a](b) @everyone @here."
    discord = escape_discord(nasty)
    assert "@everyone" not in discord and "@here" not in discord
    assert r"\_x\_" in discord and r"\*y\*" in discord
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    sandboxed = Templates(escape_slack, {"default": escape})
    refused = sandboxed.render("x", values)
    assert "unsafe" in refused and "<class" not in refused, "the sandbox refuses the escape"


def test_button_config_is_checked(tmp_path):
    context = PluginContext(settings=settings_from_mapping(base_config(tmp_path)))

    def make(buttons):
        return TelegramNotifier({"bot_token": BOT_TOKEN, "buttons": buttons}, context)

    with pytest.raises(ConfigError, match="64 bytes"):
        make([{"text": "Too long", "callback_data": "x" * 40 + ":{jobId}"}])
    with pytest.raises(ConfigError, match="no other placeholder"):
        make([{"text": "Other", "callback_data": "a:{sessionId}"}])
    with pytest.raises(ConfigError, match="exactly one"):
        make([{"text": "Both", "callback_data": "a", "url": "https://x.example"}])
    with pytest.raises(ConfigError, match="needs a text"):
        make([{"callback_data": "a"}])
    with pytest.raises(ConfigError, match="bot_token"):
        TelegramNotifier({}, context)
    ok = make(
        [
            {"text": "Fits", "callback_data": "publish:{jobId}"},
            {"text": "Open", "url": "https://app.example/jobs/{jobId}"},
        ]
    )
    [row] = ok.keyboard("job_abc").inline_keyboard
    assert row[1].url == "https://app.example/jobs/job_abc"


def test_slack_and_discord_alerts_limits_and_429s(tmp_path):
    slack, discord = ChatWebhook(), ChatWebhook()
    slack.answers = [(429, {"Retry-After": "1"}, "rate_limited")]
    discord.answers = [
        (429, {}, {"message": "You are being rate limited.", "retry_after": 0.5, "global": False})
    ]
    long_template = "{{ userMessage }} {{ context.note }}"
    with slack.serving() as s_url, discord.serving() as d_url:
        cfg = base_config(
            tmp_path,
            notifiers=[
                {
                    "type": "slack",
                    "webhook_url": f"{s_url}/services/T000/B000/SECRETPATH",
                    "templates": {"video.failed": long_template},
                },
                {
                    "type": "discord",
                    "webhook_url": f"{d_url}/api/webhooks/1/SECRETTOKEN",
                    "templates": {"video.failed": long_template},
                },
            ],
        )
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            ok = post(client, "fine")
            bad = post(client, "fail-now", context={"note": "<@&123> @everyone " + "x" * 9000})
            wait_status(client, ok, {"succeeded"})
            wait_status(client, bad, {"failed"})
            wait_for(lambda: len(slack.requests) == 2 and len(discord.requests) == 2, timeout=15)
            records = deliveries(client, bad)
            assert records["slack"]["status"] == "sent" and records["slack"]["attempts"] == 2
            assert records["discord"]["status"] == "sent"
            assert "slack" not in deliveries(client, ok), "success is not an alert by default"
    assert slack.requests[1]["at"] - slack.requests[0]["at"] >= 0.95
    assert discord.requests[1]["at"] - discord.requests[0]["at"] >= 0.45
    s_body = slack.requests[1]["body"]
    section = s_body["blocks"][0]["text"]["text"]
    assert section.startswith("*Video failed*") and len(section) <= 3000
    fields = " ".join(f["text"] for f in s_body["blocks"][1]["fields"])
    for fact in (bad, "demo", "unknown_provider_error", "Attempts", "Elapsed"):
        assert fact in fields
    assert s_body["blocks"][2]["elements"][0]["url"].endswith(f"/jobs/{bad}")
    d_body = discord.requests[1]["body"]
    embed = d_body["embeds"][0]
    assert len(embed["description"]) <= 4096 and embed["url"].endswith(f"/jobs/{bad}")
    assert d_body["allowed_mentions"] == {"parse": []}
    assert "@everyone" not in embed["description"]
    assert {f["name"] for f in embed["fields"]} >= {"Job", "Model", "Provider", "Error"}


def test_a_failing_notifier_does_not_hold_up_the_others(tmp_path):
    emulator = TelegramEmulator()
    broken = ChatWebhook()
    broken.answers = [(400, {}, "invalid_payload")] * 5
    with emulator.serving() as tg, broken.serving() as b_url:
        cfg = base_config(
            tmp_path,
            notifiers=[
                {
                    "type": "slack",
                    "webhook_url": f"{b_url}/hook",
                    "name": "broken-slack",
                    "events": ["video.succeeded"],
                },
                telegram(tg, emulator, chat_id=11),
                {
                    "type": "discord",
                    "webhook_url": "http://127.0.0.1:9/unreachable",
                    "events": ["video.succeeded"],
                },
            ],
        )
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            job_id = post(client, "mixed")
            done = wait_status(client, job_id, {"succeeded", "failed"})
            assert done["status"] == "succeeded", "the job's outcome does not depend on them"
            wait_for(lambda: deliveries(client, job_id)["telegram"]["status"] == "sent")
            wait_for(lambda: deliveries(client, job_id)["broken-slack"]["status"] == "failed")
            records = deliveries(client, job_id)
    assert "HTTP 400" in records["broken-slack"]["lastError"]
    assert records["discord"]["status"] == "pending" and records["discord"]["attempts"] >= 1
    assert "ConnectError" in records["discord"]["lastError"]
    assert len(emulator.sent("sendVideo")) == 1


@pytest.mark.crash
def test_restart_between_two_deliveries_sends_no_duplicate(tmp_path):
    """Telegram is told, Slack keeps failing; kill -9; restart: Slack is told, Telegram is not
    told again."""
    emulator = TelegramEmulator()
    slack = ChatWebhook()
    slack.answers = [(500, {}, "oops")] * 1000
    with emulator.serving() as tg, slack.serving() as s_url:
        cfg = base_config(
            tmp_path,
            notifiers=[
                telegram(tg, emulator, chat_id=21),
                {"type": "slack", "webhook_url": f"{s_url}/hook", "events": ["video.succeeded"]},
            ],
            callbacks={"schedule_s": [0.3]},
        )
        proc = ServiceProcess(cfg, tmp_path).start()
        try:
            job_id = httpx.post(
                f"{proc.url}/poll-video",
                json={"sessionId": "s", "taskId": "restart-me", "model": "demo"},
            ).json()["jobId"]
            wait_for(lambda: len(emulator.sent("sendVideo")) == 1 and len(slack.requests) >= 2)
            proc.kill()
            slack.answers = []
            proc.start()
            wait_for(
                lambda: (
                    httpx.get(f"{proc.url}/jobs/{job_id}").json()["deliveries"]
                    and all(
                        d["status"] == "sent"
                        for d in httpx.get(f"{proc.url}/jobs/{job_id}").json()["deliveries"]
                    )
                ),
                timeout=30,
            )
            time.sleep(1.0)
        finally:
            proc.kill()
    assert len(emulator.sent("sendVideo")) == 1, "Telegram was told exactly once"
    assert sum(1 for r in slack.requests if r["body"]) >= 3


async def test_webhook_body_is_the_compact_json_it_signs(tmp_path):
    """The webhook body is compact JSON with UTF-8 kept as is (the bytes json.dumps gave),
    and its signature verifies over exactly those bytes."""
    import json
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    from notifiers.webhook import WebhookNotifier
    from tests.support.factories import make_job
    from tests.support.unit_services import unit_config
    from webhook_poller.interfaces import Notification
    from webhook_poller.model import Delivery, Event

    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = settings_from_mapping(unit_config(tmp_path))
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        context = PluginContext(settings=settings, http=client)
        hook = WebhookNotifier({"url": "http://receiver/h", "secret": secret}, context)
        job = make_job(session_id="sess ünï ☃")
        payload = {
            "event": "video.succeeded",
            "jobId": job.id,
            "sessionId": job.session_id,
            "videoUrls": ["http://x/v/0?exp=1&sig=a/b"],
            "metadata": [{"duration_s": 2.0, "width": 320, "ratio": 0.5625, "codec": None}],
            "context": {"note": 'quote " back\\slash \n tab\t', "ok": True, "n": [1, 2]},
        }
        row = Delivery(job.id, 0, Event.SUCCEEDED, "callback", "msg_1", payload)
        await hook.send(Notification(Event.SUCCEEDED, job, row, payload))
    (request,) = sent
    expected = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    assert request.content == expected.encode()
    headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
    assert Webhook(secret).verify(request.content, headers) == payload
    assert int(headers["webhook-timestamp"]) <= datetime.now(UTC).timestamp()
