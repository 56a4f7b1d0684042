"""Telegram inline buttons that work: ``POST /telegram/webhook``.

The telegram notifier (with ``webhook_secret`` set) puts Publish / Extend / Regenerate buttons
under a finished video. Their ``callback_data`` is ``<action>:<jobId>:<tag>`` (at most 48
bytes of Telegram's 64): ``tag`` is an HMAC of the action, the job and the chat the video was
sent to, keyed with the webhook secret, so a press counts only from that chat. Telegram posts
each press here with ``X-Telegram-Bot-Api-Secret-Token``; we answer the callback query at once
(``answerCallbackQuery``), then act once per job and action (a second press, or Telegram
sending the update again, does nothing twice):

- ``extend``: :func:`.followups.extend`, the extended video arrives in the same chat;
- ``regen``: :func:`.generate.retry` (a job we submitted is generated again);
- ``publish``: a ``video.publish_requested`` event to the webhook targets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from .errors import RequestRejected
from .interfaces import ReceivesBotUpdates
from .model import utcnow

if TYPE_CHECKING:
    from .services import Services

log = structlog.get_logger(__name__)

#: Button action -> what the chat is told when the press is taken.
ACTIONS = {
    "extend": "Extending your video…",
    "regen": "Generating a new version…",
    "publish": "Publish requested.",
}
#: Spellings accepted in the notifier's ``buttons`` config for each action.
ALIASES = {"extend": "extend", "regen": "regen", "regenerate": "regen", "publish": "publish"}
MAX_CALLBACK_BYTES = 64
TAG_CHARS = 11
#: How long a press is remembered (a second press within it does nothing).
ONCE_FOR = timedelta(days=30)


def tag(secret: str, action: str, job_id: str, chat_id: Any) -> str:
    mac = hmac.new(secret.encode(), f"{action}:{job_id}:{chat_id}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode()[:TAG_CHARS]


def callback_data(secret: str, action: str, job_id: str, chat_id: Any) -> str:
    """The button's ``callback_data``: the action, the job, and the chat's tag."""
    return f"{action}:{job_id}:{tag(secret, action, job_id, chat_id)}"


def parse(data: Any) -> tuple[str, str, str] | None:
    if not isinstance(data, str) or len(data.encode()) > MAX_CALLBACK_BYTES:
        return None
    parts = data.split(":")
    if len(parts) != 3 or parts[0] not in ACTIONS or not parts[1] or not parts[2]:
        return None
    return parts[0], parts[1], parts[2]


def webhook_notifier(services: Services, token: str) -> ReceivesBotUpdates | None:
    """The telegram notifier whose ``webhook_secret`` is ``token`` (compared in constant
    time), else None."""
    found = None
    for notifier in services.notifiers:
        if not isinstance(notifier, ReceivesBotUpdates):
            continue
        secret = notifier.webhook_secret
        if secret and hmac.compare_digest(secret.encode(), token.encode()):
            found = notifier
    return found


async def handle_update(
    services: Services, notifier: Any, update: Mapping[str, Any], poke: Callable[[], None]
) -> str:
    """Act on one Bot API update; returns what happened (for logs and tests)."""
    query = update.get("callback_query")
    if not isinstance(query, Mapping) or not isinstance(query.get("id"), str):
        return "ignored"
    query_id = query["id"]
    message = query.get("message")
    chat = message.get("chat") if isinstance(message, Mapping) else None
    chat_id = chat.get("id") if isinstance(chat, Mapping) else None
    parsed = parse(query.get("data"))
    bot = await notifier.bot()
    if parsed is None or chat_id is None:
        await _answer(bot, query_id, "This button is not ours.", alert=True)
        return "unknown"
    action, job_id, given = parsed
    expected = tag(notifier.webhook_secret, action, job_id, chat_id)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        log.warning("telegram_button_refused", action=action, reason="another chat")
        await _answer(bot, query_id, "Only the chat that received this video can do that.", True)
        return "refused"
    if not await services.store.use_once(f"tg-button:{action}:{job_id}", utcnow() + ONCE_FOR):
        await _answer(bot, query_id, "Already done.", alert=False)
        return "repeated"
    await _answer(bot, query_id, ACTIONS[action], alert=False)
    try:
        await _act(services, action, job_id, chat_id)
    except RequestRejected as exc:  # our own words: safe to show in the chat
        log.info("telegram_button_failed", action=action, reason=str(exc)[:200])
        try:
            await bot.send_message(chat_id, f"Sorry, that did not work: {exc}"[:1000])
        except Exception as send_exc:
            log.warning("telegram_button_reply_failed", error=notifier._scrub(str(send_exc)))
        return "failed"
    poke()
    services.changes.notify()
    log.info("telegram_button", action=action)
    return action


async def _act(services: Services, action: str, job_id: str, chat_id: Any) -> None:
    from . import followups, generate

    if action == "extend":
        parent = await services.store.get(job_id)
        prompt = followups.extend_prompt(parent) if parent is not None else ""
        await followups.extend(services, job_id, {"prompt": prompt}, chat_id=chat_id)
    elif action == "regen":
        await generate.retry(services, job_id)
    else:
        await followups.publish(services, job_id)


async def _answer(bot: Any, query_id: str, text: str, alert: bool) -> None:
    try:
        await bot.answer_callback_query(query_id, text=text, show_alert=alert)
    except Exception as exc:  # an answer that fails must not keep the press from working
        log.warning("telegram_answer_failed", error=type(exc).__name__)
