"""The ``telegram`` notifier: the finished video into the chat that asked for it.

python-telegram-bot v22's ``Bot`` (no Application), one per notifier, opened on first use.
On success it sends the stored video with ``sendVideo`` (caption, ``supports_streaming``,
width/height/duration from the metadata, inline buttons); a video over the upload limit
(50 MB on the cloud Bot API, 2,000 MB with ``local_mode`` on a Bot API server started with
``telegram-bot-api --local``) goes out as a message with a link instead. In local mode, with
blob storage on local disk, the server is handed the file's path (a ``file://`` URI) and
reads it itself, so nothing is uploaded; other storages upload the bytes as usual. Failed,
timed-out and delayed jobs get the user-facing message, never a provider's text. The chat id
comes from the restored session, then the request's ``context``, then the notifier's
``chat_id``.

Config: ``{type: telegram, bot_token, base_url, chat_id, parse_mode (HTML | MarkdownV2 |
none), buttons: [{text, callback_data} | {text, url}], events, templates, local_mode,
max_upload_bytes}``. ``callback_data`` and ``url`` may use ``{jobId}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal

import structlog
from pydantic import Field, SecretStr
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile
from telegram.constants import FileSizeLimit, MessageLimit
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from webhook_poller.blobs.local import LocalBlobStorage
from webhook_poller.config import secret_text
from webhook_poller.errors import ConfigError, NotifyRejected, NotifyTransient
from webhook_poller.interfaces import Notification, PluginContext, Receipt, VideoRef
from webhook_poller.model import Event
from webhook_poller.options import NotifierOptions, PluginOptions

from .templates import (
    Templates,
    escape_plain,
    escape_telegram_html,
    escape_telegram_markdown_v2,
    values_for,
)

log = structlog.get_logger(__name__)

# Opt in to PTB's future durations (timedelta, not int seconds); otherwise every 429 logs a
# deprecation warning. We are the only user of PTB in the process and accept both types.
os.environ.setdefault("PTB_TIMEDELTA", "true")

DEFAULT_EVENTS = ("video.succeeded", "video.failed", "video.delayed")
CLOUD_BASE_URL = "https://api.telegram.org/bot"
#: A job id as long as ours get, to check callback_data against the 64-byte limit.
_LONGEST_JOB_ID = "job_" + "f" * 24
MAX_CALLBACK_BYTES = 64

_ESCAPES = {
    "HTML": escape_telegram_html,
    "MarkdownV2": escape_telegram_markdown_v2,
    None: escape_plain,
}
_DEFAULTS = {
    "HTML": {
        "video.succeeded": "<b>Your video is ready.</b>"
        "{% if duration %}\n{{ model }} · {{ duration }} s"
        "{% if resolution %} · {{ resolution }}{% endif %}{% endif %}",
        "default": "{{ userMessage }}",
    },
    "MarkdownV2": {
        "video.succeeded": "*Your video is ready\\.*"
        "{% if duration %}\n{{ model }} · {{ duration }} s{% endif %}",
        "default": "{{ userMessage }}",
    },
    None: {"video.succeeded": "Your video is ready.", "default": "{{ userMessage }}"},
}


def chat_id_for(notification: Notification, fallback: Any) -> Any:
    """Session first, then the request's context, then the configured chat id."""
    for source in (notification.session, notification.job.context):
        if isinstance(source, Mapping):
            for key in ("chatId", "chat_id"):
                value = source.get(key)
                if value not in (None, ""):
                    return value
    return fallback


class TelegramOptions(NotifierOptions):
    bot_token: SecretStr
    base_url: str | None = None
    chat_id: int | str | None = None
    parse_mode: Literal["HTML", "MarkdownV2", "none", "None", ""] | None = "HTML"
    buttons: list[dict[str, str]] | None = None
    templates: dict[str, str] | None = None
    local_mode: bool = False
    max_upload_bytes: int | None = Field(default=None, gt=0)


class TelegramNotifier:
    Options: ClassVar[type[PluginOptions]] = TelegramOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.name = str(options.get("name") or "telegram")
        self.events = frozenset(options.get("events") or DEFAULT_EVENTS)
        self.token = secret_text(options.get("bot_token"))
        if not self.token:
            raise ConfigError(f"notifiers.{self.name}: bot_token is required")
        self.base_url = str(options.get("base_url") or CLOUD_BASE_URL)
        self.chat_id = options.get("chat_id")
        mode = options.get("parse_mode", "HTML")
        mode = None if mode in (None, "", "none", "None") else mode
        if mode not in _ESCAPES:
            raise ConfigError(f"notifiers.{self.name}.parse_mode must be HTML, MarkdownV2 or none")
        self.parse_mode: str | None = mode
        self.templates = Templates(
            _ESCAPES[mode],
            _DEFAULTS[mode],
            options.get("templates"),
            where=f"notifiers.{self.name}.templates",
        )
        self.buttons = self._check_buttons(options.get("buttons") or [])
        # Only a server started with `telegram-bot-api --local` lifts the limits and reads
        # file:// paths; the cloud (and a local server without --local) has neither.
        self.local_mode = bool(options.get("local_mode"))
        if self.local_mode and self.base_url.startswith(CLOUD_BASE_URL):
            raise ConfigError(
                f"notifiers.{self.name}.local_mode needs base_url pointing at your own Bot API"
                " server (telegram-bot-api --local); api.telegram.org has no local mode"
            )
        default_limit = (
            FileSizeLimit.FILESIZE_UPLOAD_LOCAL_MODE
            if self.local_mode
            else FileSizeLimit.FILESIZE_UPLOAD
        )
        self.max_upload_bytes = int(options.get("max_upload_bytes") or default_limit)
        self.blobs = context.blobs
        self._bot: Bot | None = None
        self._bot_lock = asyncio.Lock()

    # --- config ------------------------------------------------------------------------

    def _check_buttons(self, buttons: Any) -> list[dict[str, str]]:
        where = f"notifiers.{self.name}.buttons"
        if not isinstance(buttons, list):
            raise ConfigError(f"{where} must be a list")
        checked = []
        for i, button in enumerate(buttons):
            if not isinstance(button, Mapping) or not button.get("text"):
                raise ConfigError(f"{where}[{i}] needs a text")
            kinds = [k for k in ("callback_data", "url") if button.get(k)]
            if len(kinds) != 1:
                raise ConfigError(f"{where}[{i}] needs exactly one of callback_data or url")
            value = str(button[kinds[0]])
            if kinds[0] == "callback_data":
                longest = value.replace("{jobId}", _LONGEST_JOB_ID)
                if "{" in longest or len(longest.encode()) > MAX_CALLBACK_BYTES:
                    raise ConfigError(
                        f"{where}[{i}].callback_data must be at most {MAX_CALLBACK_BYTES} bytes"
                        " with {jobId} filled in (and use no other placeholder)"
                    )
            checked.append({"text": str(button["text"]), kinds[0]: value})
        return checked

    def keyboard(
        self, job_id: str, extra: list[InlineKeyboardButton] | None = None
    ) -> InlineKeyboardMarkup | None:
        row = list(extra or [])
        for button in self.buttons:
            if "url" in button:
                url = button["url"].replace("{jobId}", job_id)
                row.append(InlineKeyboardButton(button["text"], url=url))
            else:
                data = button["callback_data"].replace("{jobId}", job_id)
                row.append(InlineKeyboardButton(button["text"], callback_data=data))
        return InlineKeyboardMarkup([row]) if row else None

    # --- the bot -----------------------------------------------------------------------

    async def bot(self) -> Bot:
        async with self._bot_lock:  # deliveries run concurrently; make one Bot only
            return await self._open_bot()

    async def _open_bot(self) -> Bot:
        if self._bot is None:
            request = HTTPXRequest(
                connection_pool_size=8,
                read_timeout=30,
                write_timeout=30,
                connect_timeout=10,
                media_write_timeout=600,
            )
            bot = Bot(
                self.token, base_url=self.base_url, request=request, local_mode=self.local_mode
            )
            await bot.initialize()
            self._bot = bot
        return self._bot

    async def aclose(self) -> None:
        if self._bot is not None:
            with contextlib.suppress(Exception):
                await self._bot.shutdown()
            self._bot = None

    def _scrub(self, text: str) -> str:
        return text.replace(self.token, "<bot-token>") if self.token else text

    # --- sending -----------------------------------------------------------------------

    async def send(self, notification: Notification) -> Receipt:
        chat_id = chat_id_for(notification, self.chat_id)
        if chat_id in (None, ""):
            raise NotifyRejected(
                "no chat id: the session, the request context (chatId) and the notifier's"
                " chat_id are all empty"
            )
        text = self.templates.render(notification.event.value, values_for(notification))
        try:
            bot = await self.bot()
            try:
                message = await self._deliver(bot, chat_id, notification, text, self.parse_mode)
            except BadRequest as exc:
                if self.parse_mode is None or "parse entities" not in str(exc).lower():
                    raise
                # A custom template's markup Telegram cannot read: the message still goes
                # out, as plain text, rather than not at all.
                log.warning("telegram_markup_refused", error=self._scrub(str(exc))[:200])
                plain = plain_text(text, self.parse_mode)
                message = await self._deliver(bot, chat_id, notification, plain, None)
        except RetryAfter as exc:
            wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            raise NotifyTransient(
                "Telegram asked us to slow down (429)", retry_after_s=seconds
            ) from None
        except (BadRequest, Forbidden, InvalidToken, ChatMigrated) as exc:
            raise NotifyRejected(f"Telegram refused: {self._scrub(str(exc))}") from None
        except NetworkError as exc:
            raise NotifyTransient(f"Telegram unreachable: {self._scrub(str(exc))}") from None
        except TelegramError as exc:
            raise NotifyTransient(f"Telegram error: {self._scrub(str(exc))}") from None
        return Receipt(f"message_id={message.message_id}")

    async def _deliver(
        self, bot: Bot, chat_id: Any, note: Notification, text: str, mode: str | None
    ) -> Any:
        if note.event is Event.SUCCEEDED and note.videos:
            return await self._send_video(bot, chat_id, note, text, mode)
        return await bot.send_message(
            chat_id,
            _fit(text, MessageLimit.MAX_TEXT_LENGTH) or note.event.value,
            parse_mode=mode,
        )

    async def _send_video(
        self, bot: Bot, chat_id: Any, note: Notification, text: str, mode: str | None
    ) -> Any:
        video = note.videos[0]
        size = video.metadata.size_bytes
        if size is None and self.blobs is not None:
            size = await self.blobs.size(video.key)
        caption = _fit(text, MessageLimit.CAPTION_LENGTH)
        if self.blobs is None or size is None or size > self.max_upload_bytes:
            return await self._send_link(bot, chat_id, note, video, text, mode)
        meta = video.metadata
        fields: dict[str, Any] = {
            "caption": caption or None,
            "parse_mode": mode,
            "supports_streaming": True,
            "width": meta.width,
            "height": meta.height,
            "duration": round(meta.duration_s) if meta.duration_s else None,
            "reply_markup": self.keyboard(note.job.id),
        }
        if self.local_mode and isinstance(self.blobs, LocalBlobStorage):
            # PTB turns a Path into a file:// URI in local mode: the Bot API server reads
            # the stored file itself (it must see it at the same absolute path).
            path = self.blobs.local_path(video.key)
            return await bot.send_video(chat_id, video=path, **fields)
        # A temporary file, handed to PTB as an open handle it streams from: the upload
        # never holds the whole video in memory.
        with tempfile.NamedTemporaryFile(suffix=".mp4") as spool:
            async for chunk in self.blobs.read(video.key):
                await asyncio.to_thread(spool.write, chunk)
            await asyncio.to_thread(spool.flush)
            spool.seek(0)
            upload = InputFile(spool, filename=f"{note.job.id}.mp4", read_file_handle=False)
            return await bot.send_video(chat_id, video=upload, **fields)

    async def _send_link(
        self,
        bot: Bot,
        chat_id: Any,
        note: Notification,
        video: VideoRef,
        text: str,
        mode: str | None,
    ) -> Any:
        """Too big to upload here: a message with a button to the stored file."""
        log.info(
            "telegram_video_as_link",
            size_bytes=video.metadata.size_bytes,
            limit=self.max_upload_bytes,
        )
        download = InlineKeyboardButton("Download video", url=video.url)
        return await bot.send_message(
            chat_id,
            _fit(text, MessageLimit.MAX_TEXT_LENGTH) or "Your video is ready.",
            parse_mode=mode,
            reply_markup=self.keyboard(note.job.id, [download]),
        )


def plain_text(text: str, mode: str | None) -> str:
    """``text`` without its HTML or MarkdownV2 markup, as Telegram would have shown it."""
    if mode == "HTML":
        return html.unescape(re.sub(r"<[^>]*>", "", text))
    if mode == "MarkdownV2":
        out, escaped = [], False
        for char in text:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char not in "*_~|`":
                out.append(char)
        return "".join(out)
    return text


def _fit(text: str, limit: int) -> str:
    """Cut to ``limit`` characters without leaving half an HTML tag or a dangling escape."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    for opener in ("<", "&"):
        at = cut.rfind(opener)
        if at != -1 and (">" if opener == "<" else ";") not in cut[at:]:
            cut = cut[:at]
    cut = cut.rstrip("\\")
    return cut + "…"
