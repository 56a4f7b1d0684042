"""structlog set-up: JSON when stdout is not a terminal, console output in a terminal.

A redaction processor runs last before rendering: values under token-like keys are replaced,
and query strings and user-info are cut from anything that looks like a URL, so signed
links, resume-URL signatures and API keys never reach the log.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|api[_-]?key|authorization|signature|credential)", re.I
)
_URL = re.compile(r"(https?://)([^/\s?#@]*@)?([^\s?#]*)(\?[^\s#]*)?(#\S*)?", re.I)


def redact_text(text: str) -> str:
    """Drop user-info, query and fragment from every URL inside ``text``."""

    def repl(match: re.Match[str]) -> str:
        return match.group(1) + match.group(3) + ("?…" if match.group(4) else "")

    return _URL.sub(repl, text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key) and value not in (None, "", False):
        return "[redacted]"
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    json_out = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer()
    )
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
