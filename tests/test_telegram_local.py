"""Telegram through a local Bot API server (``telegram-bot-api --local``): with ``local_mode``
the stored file's path goes to the server as a ``file://`` URI instead of an upload, the
upload limit is 2,000 MB, and only storage on local disk can hand over a path (S3 uploads).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.chat_servers import BOT_TOKEN, TelegramEmulator
from tests.support.service import base_config, run_service, wait_for, wait_status
from tests.test_s3 import new_bucket, service_config
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ConfigError
from webhook_poller.interfaces import PluginContext
from webhook_poller.notifiers.telegram import TelegramNotifier


def local_telegram(tg_url: str, emulator: TelegramEmulator, **extra: object) -> dict[str, object]:
    return {
        "type": "telegram",
        "bot_token": BOT_TOKEN,
        "base_url": emulator.base_url(tg_url),
        "local_mode": True,
        "chat_id": 77,
        **extra,
    }


def run_one_job(cfg: dict[str, object], task_id: str) -> dict[str, object]:
    with run_service(cfg) as url, httpx.Client(base_url=url) as client:
        resp = client.post(
            "/poll-video", json={"sessionId": "s", "taskId": task_id, "model": "demo"}
        )
        assert resp.status_code == 200, resp.text
        job_id = resp.json()["jobId"]
        done = wait_status(client, job_id, {"succeeded", "failed"})
        assert done["status"] == "succeeded", done

        def sent() -> bool:
            [delivery] = client.get(f"/jobs/{job_id}").json()["deliveries"]
            assert delivery["status"] != "failed", delivery
            return bool(delivery["status"] == "sent")

        wait_for(sent)
        done["video_bytes"] = httpx.get(done["videoUrls"][0]).content
        return done


@pytest.mark.s3
def test_local_mode_hands_the_server_the_file_path(tmp_path: Path, moto_server) -> None:  # type: ignore[no-untyped-def]
    """Local disk + local_mode: a file:// path, no upload. Without local_mode, or from S3
    (which has no path to hand over), the bytes are uploaded as multipart."""
    emulator = TelegramEmulator(local_mode=True)
    with emulator.serving() as tg:
        local = run_one_job(
            base_config(tmp_path / "a", notifiers=[local_telegram(tg, emulator)]), "tg-local-1"
        )
        [call] = emulator.sent()
        uri = call["fields"]["video"]
        assert uri.startswith("file:///"), uri  # a path, not an upload
        video = call["files"]["video"]
        assert Path(video["local_path"]).is_relative_to((tmp_path / "a" / "videos").resolve())
        assert video["size"] == len(local["video_bytes"]) and video["head"][4:8] == b"ftyp"
        assert not call["content_type"].startswith("multipart/"), "no bytes were uploaded"
        assert call["fields"]["chat_id"] == "77" and call["fields"]["supports_streaming"] == "true"

        emulator.calls.clear()
        notifier = local_telegram(tg, emulator, local_mode=False)
        plain = run_one_job(base_config(tmp_path / "b", notifiers=[notifier]), "tg-local-2")
        [call] = emulator.sent()
        assert call["content_type"].startswith("multipart/form-data")
        assert call["files"]["video"]["size"] == len(plain["video_bytes"])
        assert "local_path" not in call["files"]["video"]

        emulator.calls.clear()
        cfg = service_config(
            tmp_path / "c",
            moto_server.url,
            new_bucket(moto_server),
            notifiers=[local_telegram(tg, emulator)],
        )
        on_s3 = run_one_job(cfg, "tg-local-s3")
        [call] = emulator.sent()
        assert call["content_type"].startswith("multipart/form-data")
        assert call["files"]["video"]["size"] == len(on_s3["video_bytes"])


def test_upload_limit_and_config_check(tmp_path: Path) -> None:
    settings = settings_from_mapping(base_config(tmp_path))
    context = PluginContext(settings)
    local = TelegramNotifier(
        {"bot_token": BOT_TOKEN, "base_url": "http://127.0.0.1:8081/bot", "local_mode": True},
        context,
    )
    assert local.max_upload_bytes == 2_000_000_000
    # a Bot API server of your own, but not started with --local: the cloud's 50 MB
    plain = TelegramNotifier(
        {"bot_token": BOT_TOKEN, "base_url": "http://127.0.0.1:8081/bot"}, context
    )
    assert plain.max_upload_bytes == 50_000_000 and plain.local_mode is False
    with pytest.raises(ConfigError, match="local_mode needs base_url"):
        TelegramNotifier({"bot_token": BOT_TOKEN, "local_mode": True}, context)
