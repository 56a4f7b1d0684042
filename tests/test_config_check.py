"""Config that fails loudly and clearly (issue 12, items 18-20).

Plug-in options are checked when the config is loaded (unknown keys and event names refused,
the known ones listed); every config error is one line naming the key with exit status 2,
before anything listens; a routed provider without an API key is warned about at start-up
and its jobs are refused at intake with a 422 naming the missing key.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.servers import free_port
from tests.support.service import base_config, run_service
from webhook_poller import __version__
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def refused(tmp_path: Path, **extra: Any) -> str:
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(base_config(tmp_path, **extra))
    message = str(err.value)
    assert "\n" not in message
    return message


# --- item 18: plug-in options --------------------------------------------------------------


def test_unknown_event_name_is_refused_listing_the_known_ones(tmp_path):
    msg = refused(tmp_path, notifiers=[{"type": "log", "events": ["video.succeded"]}])
    assert "notifiers[0] (log).events" in msg and "'video.succeded'" in msg
    assert "video.succeeded" in msg and "video.timed_out" in msg and "*" in msg


def test_event_for_events_is_an_unknown_key(tmp_path):
    msg = refused(tmp_path, notifiers=[{"type": "log", "event": ["video.failed"]}])
    assert "notifiers[0] (log).event: unknown key" in msg
    assert "known keys: type, name, events" in msg


def test_telegram_chatid_typo_lists_chat_id(tmp_path):
    item = {"type": "telegram", "bot_token": "123:abc", "chatid": 42}
    msg = refused(tmp_path, notifiers=[item])
    assert "notifiers[0] (telegram).chatid: unknown key" in msg and "chat_id" in msg
    assert "123:abc" not in msg


def test_provider_typo_lists_the_known_keys(tmp_path):
    msg = refused(tmp_path, providers={"kie": {"min_intervl_s": 5}})
    assert "providers.kie.min_intervl_s: unknown key" in msg
    for key in ("base_url", "api_key", "min_interval_s", "max_requests_per_s", "timeout_s"):
        assert key in msg


def test_demo_options_are_checked_with_its_own_keys(tmp_path):
    msg = refused(tmp_path, providers={"demo": {"polls_until_don": 3}})
    assert "providers.demo.polls_until_don" in msg and "polls_until_done" in msg
    msg = refused(tmp_path, providers={"demo": {"polls_until_done": 0}})
    assert "providers.demo.polls_until_done" in msg


def test_provider_api_key_value_is_never_echoed(tmp_path):
    msg = refused(tmp_path, providers={"kie": {"api_key": ["sekrit-kie-value"]}})
    assert "providers.kie.api_key" in msg and "sekrit-kie-value" not in msg


def test_unknown_provider_section_is_refused(tmp_path):
    msg = refused(tmp_path, providers={"kei": {"api_key": "x"}})
    assert "providers.kei" in msg and "kie" in msg and "demo" in msg


def test_declarative_provider_block_is_left_to_its_own_loader(tmp_path):
    """A ``type: declarative`` block and a model routed to it pass the plug-in check (the
    declarative adapter checks its own section)."""
    block = {
        "type": "declarative",
        "base_url": "https://api.acme.example",
        "status": {"url": "{base_url}/v1/jobs/{taskId}"},
        "state": "data.status",
        "states": {"done": "succeeded", "error": "failed"},
        "video_urls": "data.outputs[].url",
    }
    models = {"acme-*": "acme", "demo": "demo"}
    settings = settings_from_mapping(
        base_config(tmp_path, providers={"acme": block}, models=models)
    )
    assert settings.providers["acme"]["type"] == "declarative"


@pytest.mark.parametrize(
    ("item", "bad_key"),
    [
        ({"type": "webhook", "url": "https://ops.example.com/h", "secrett": "x"}, "secrett"),
        ({"type": "slack", "webhook_url": "https://hooks.slack.com/x", "event": []}, "event"),
        ({"type": "discord", "webhook_url": "https://discord.com/x", "timeout": 3}, "timeout"),
        (
            {"type": "email", "smtp_hostname": "smtp.example.com", "sender": "a@example.com"},
            "smtp_hostname",
        ),
    ],
)
def test_every_builtin_notifier_and_the_example_plugin_check_their_keys(tmp_path, item, bad_key):
    msg = refused(tmp_path, notifiers=[item])
    assert f"notifiers[0] ({item['type']}).{bad_key}: unknown key" in msg


def test_valid_notifiers_of_every_kind_load(tmp_path):
    items = [
        {"type": "log", "events": ["*"]},
        {"type": "webhook", "url": "https://ops.example.com/h", "headers": {"X-A": "1"}},
        {
            "type": "telegram",
            "bot_token": "123:abc",
            "chat_id": 42,
            "parse_mode": "HTML",
            "buttons": [{"text": "Publish", "callback_data": "publish:{jobId}"}],
            "events": ["video.succeeded", "video.failed", "video.timed_out", "video.delayed"],
        },
        {"type": "slack", "webhook_url": "https://hooks.slack.com/x", "events": ["video.failed"]},
        {"type": "discord", "webhook_url": "https://discord.com/api/webhooks/1/x"},
        {"type": "email", "smtp_host": "smtp.example.com", "sender": "a@example.com", "to": "b@x"},
    ]
    settings = settings_from_mapping(base_config(tmp_path, notifiers=items))
    assert len(settings.notifiers) == len(items)


# --- item 19: one line, exit 2, before anything listens ------------------------------------


PROVIDER_KEY_VARS = ("KIE_API_KEY", "GEMINI_API_KEY", "FAL_KEY", "REPLICATE_API_TOKEN")


def cli(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 30):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("WEBHOOK_POLLER_") and k not in PROVIDER_KEY_VARS
    }
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "webhook_poller", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def write_config(tmp_path: Path, **extra: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(tmp_path, **extra)))
    return path


BAD_CONFIGS = {
    "unknown store": ({"store": {"url": "mongo://db/x"}}, "store.url"),
    "unknown blob": ({"storage": {"url": "ftp://host/videos"}}, "storage.url"),
    "storage url without scheme": ({"storage": {"url": "/tmp/vids"}}, "storage.url"),
    "unknown notifier": ({"notifiers": [{"type": "pager"}]}, "notifiers[0].type"),
    "missing bot_token": ({"notifiers": [{"type": "telegram"}]}, "bot_token"),
    "bad adapter in models": ({"models": {"veo*": "pika"}}, "models.veo*"),
    "loud log level": ({"logging": {"level": "LOUD"}}, "logging.level"),
    "telegram button too long": (
        {
            "notifiers": [
                {
                    "type": "telegram",
                    "bot_token": "123:abc",
                    "buttons": [{"text": "x", "callback_data": "x" * 80}],
                }
            ]
        },
        "buttons",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_check_config_gives_one_line_naming_the_key_and_exit_2(tmp_path, case):
    extra, key = BAD_CONFIGS[case]
    result = cli("check-config", "--config", str(write_config(tmp_path, **extra)))
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0] and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "case", ["missing bot_token", "telegram button too long", "loud log level"]
)
def test_serve_fails_the_same_way_before_listening(tmp_path, case):
    extra, key = BAD_CONFIGS[case]
    port = free_port()
    path = write_config(tmp_path, port=port, **extra)
    result = cli("serve", "--config", str(path))
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1 and key in result.stderr
    assert "Uvicorn running" not in result.stderr + result.stdout


def test_check_config_accepts_a_good_config_and_the_example(tmp_path):
    result = cli("check-config", "--config", str(write_config(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    example = cli("check-config", "--config", str(ROOT / "config.example.yaml"))
    assert example.returncode == 0, example.stderr


def test_version_flag():
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"webhook-poller {__version__}"


# --- item 20: a routed provider without an API key -----------------------------------------


def test_start_up_warns_for_each_routed_provider_without_a_key(tmp_path):
    cfg = base_config(tmp_path)
    del cfg["providers"]["kie"]["api_key"]
    path = tmp_path / "no-key.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "provider_key_missing" in out
    assert "kie-veo" in out and "kie-market" in out and "providers.kie.api_key" in out
    assert "providers.gemini.api_key (or GEMINI_API_KEY)" in out  # routed by default too
    assert "providers.runway.api_key (or RUNWAYML_API_SECRET)" in out
    assert "providers.minimax.api_key (or MINIMAX_API_KEY)" in out
    with_key = cli("check-config", "--config", str(path), env_extra={"KIE_API_KEY": "k-1"})
    assert with_key.returncode == 0
    assert "kie-veo" not in with_key.stdout + with_key.stderr


def test_job_for_a_provider_without_a_key_is_refused_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    cfg = base_config(tmp_path, providers={"kie": {"api_key": ""}})
    with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        resp = client.post(
            "/poll-video", json={"sessionId": "s1", "taskId": "veo-task-1", "model": "veo3"}
        )
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["code"] == "provider_not_configured" and error["field"] == "model"
        assert "providers.kie.api_key" in error["message"] and "KIE_API_KEY" in error["message"]
        gemini = client.post(
            "/poll-video",
            json={"sessionId": "s1", "taskId": "operations/x", "model": "veo-3.0-generate-001"},
        )
        assert gemini.status_code == 422
        assert (
            gemini.json()["error"]["missingKey"] == "providers.gemini.api_key (or GEMINI_API_KEY)"
        )
        assert client.get("/jobs").json()["jobs"] == []
        ok = client.post("/poll-video", json={"sessionId": "s1", "taskId": "d1", "model": "demo"})
        assert ok.status_code == 200
