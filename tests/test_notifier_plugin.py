"""The example third-party notifier (examples/notifier-email), found through its entry point
and driven by the core: a finished demo job's mail reaches a local SMTP server once, and a
451 "try later" is retried by the core's backoff, not by the plug-in."""

from __future__ import annotations

import email
from email.message import Message

import httpx
from aiosmtpd.controller import Controller

from tests.support.servers import free_port
from tests.support.service import base_config, run_service, wait_for, wait_status
from webhook_poller import plugins


class Inbox:
    def __init__(self, refuse_first: int = 0) -> None:
        self.messages: list[Message] = []
        self.refuse = refuse_first

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def email_notifier(port: int) -> dict:
    return {
        "type": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "starttls": False,
        "sender": "videos@example.com",
        "to": ["ops@example.com"],
        "events": ["video.succeeded"],
    }


def run_with_inbox(tmp_path, inbox: Inbox) -> tuple[dict, list[Message]]:
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        cfg = base_config(tmp_path, notifiers=[email_notifier(port)])
        with run_service(cfg) as url, httpx.Client(base_url=url) as client:
            resp = client.post(
                "/poll-video",
                json={
                    "sessionId": "s1",
                    "taskId": "mail-me",
                    "model": "demo",
                    "context": {"email": "user@example.com"},
                },
            )
            job_id = resp.json()["jobId"]
            job = wait_status(client, job_id, {"succeeded"})
            wait_for(
                lambda: client.get(f"/jobs/{job_id}").json()["deliveries"][0]["status"] == "sent",
                timeout=15,
            )
            record = client.get(f"/jobs/{job_id}").json()["deliveries"][0]
    finally:
        controller.stop()
    return {"job": job, "delivery": record}, inbox.messages


def test_the_example_is_found_through_its_entry_point():
    assert "email" in plugins.available("notifier"), (
        "install the example: pip install -e examples/notifier-email (scripts/test.sh does)"
    )


def test_a_finished_job_is_mailed_once_to_the_context_address(tmp_path):
    seen, messages = run_with_inbox(tmp_path, Inbox())
    [msg] = messages
    assert msg["To"] == "user@example.com", "the request context's email beats the config"
    assert msg["Subject"] == "Your video is ready"
    assert msg["Message-ID"] == f"<{seen['delivery']['webhookId']}@webhook-poller>"
    body = msg.get_payload()
    assert seen["job"]["videoUrls"][0].split("?")[0] in body
    assert seen["delivery"]["target"] == "email" and seen["delivery"]["attempts"] == 1


def test_a_451_is_retried_by_the_core(tmp_path):
    seen, messages = run_with_inbox(tmp_path, Inbox(refuse_first=1))
    assert len(messages) == 1
    assert seen["delivery"]["attempts"] == 2
