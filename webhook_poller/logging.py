"""structlog set-up: JSON when stdout is not a terminal, console output in a terminal.

A redaction processor runs last before rendering: values under token-like keys are replaced,
query strings and user-info are cut from anything that looks like a URL, and every secret
the configuration holds is cut from all free text, whatever its letter case (a provider may
echo its key in an error, python-telegram-bot lower-cases Bot API errors), so signed links,
resume-URL signatures and API keys never reach the log. :func:`scrub` is the same cut for
text that is stored (a delivery's ``lastError``, a job's error detail).

Records of the standard library's ``logging`` (uvicorn, httpx, botocore, python-telegram-bot
...) go through structlog's ``ProcessorFormatter`` on stderr: the same time stamp, level,
redaction and renderer as our own events, plus the logger's name.

Our own lines go to stdout through :class:`LineWriter`: inside a running event loop, DEBUG
and INFO lines are collected and written together at most ``FLUSH_WINDOW_S`` later (one
write and flush for all the ``job_accepted`` lines of a busy moment, not one per line); a
WARNING or worse, a line from outside an event loop, a standard library record (on stderr)
and the interpreter's exit write everything collected at once, in order.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import re
import sys
import threading
import weakref
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TextIO

import structlog
from pydantic import SecretStr
from structlog.typing import Processor

_SECRET_KEY = re.compile(
    r"(token|secret|password|passwd|api[_-]?key|authorization|signature|credential)", re.I
)
_URL = re.compile(r"(https?://)([^/\s?#@]*@)?([^\s?#]*)(\?[^\s#]*)?(#\S*)?", re.I)


#: Shorter values are not scrubbed: they would cut ordinary words out of every message.
MIN_SECRET_LENGTH = 6
_secrets: set[str] = set()
_secret_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str]) -> None:
    """Add configured secrets to the set :func:`scrub` removes (process-wide, like logging)."""
    global _secret_pattern
    new = {v for v in values if isinstance(v, str) and len(v.strip()) >= MIN_SECRET_LENGTH}
    if not new - _secrets:
        return
    _secrets.update(new)
    ordered = sorted(_secrets, key=len, reverse=True)  # longest first: no partial leftovers
    _secret_pattern = re.compile("|".join(re.escape(v) for v in ordered), re.IGNORECASE)


def configured_secrets(tree: Any, key: str = "") -> list[str]:
    """Every secret in a settings tree: SecretStr values and values under secret-like keys
    (``api_key``, ``bot_token``, ``secret_access_key``, a Slack or Discord ``webhook_url``)."""
    if isinstance(tree, SecretStr):
        return [tree.get_secret_value()]
    if isinstance(tree, Mapping):
        return [v for k, item in tree.items() for v in configured_secrets(item, str(k))]
    if isinstance(tree, list | tuple):
        return [v for item in tree for v in configured_secrets(item, key)]
    if isinstance(tree, str) and (_SECRET_KEY.search(key) or key.endswith("webhook_url")):
        return [tree]
    return []


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``[redacted]``, any letter case."""
    if _secret_pattern is None or not text:
        return text
    return _secret_pattern.sub("[redacted]", text)


def scrub_optional(text: str | None) -> str | None:
    return None if text is None else scrub(text)


def redact_text(text: str) -> str:
    """Drop user-info, query and fragment from every URL inside ``text``."""

    if "://" not in text:  # every URL _URL matches has one; most log values have none
        return text
    return _URL.sub(_cut_url, text)


def _cut_url(match: re.Match[str]) -> str:
    return match.group(1) + match.group(3) + ("?…" if match.group(4) else "")


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    """Whether values under ``key`` are redacted; remembered, since events reuse few keys."""
    return _SECRET_KEY.search(key) is not None


def _redact_value(key: str, value: Any) -> Any:
    if _secret_key(key) and value not in (None, "", False):
        return "[redacted]"
    if isinstance(value, str):
        return redact_text(scrub(value))
    if isinstance(value, Mapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(scrub(str(value)))
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


#: How long an INFO line may wait to be written with the lines after it (seconds).
FLUSH_WINDOW_S = 0.05


class LineWriter:
    """Rendered log lines to whatever ``sys.stdout`` is when they are written (tests swap it).

    ``print(..., flush=True)`` per line (structlog's ``PrintLogger``) is a write system call
    per event; here a line logged in a running event loop waits up to ``window_s`` (a timer
    on that loop) so a burst goes out in one write. ``urgent`` lines (WARNING and up), lines
    logged outside an event loop (the CLI, a thread) and :meth:`flush` write at once, after
    every line before them. Every writer is flushed when the interpreter exits, so a clean
    exit (SIGTERM, an uncaught exception) keeps every line; ``kill -9`` can lose at most the
    last ``window_s`` of INFO lines.
    """

    def __init__(self, window_s: float = FLUSH_WINDOW_S) -> None:
        self._window_s = window_s
        self._lines: list[str] = []
        self._lock = threading.Lock()
        #: the loop whose timer will flush what is collected (None: no timer pending)
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        _writers.add(self)

    def write(self, line: str, urgent: bool = False) -> None:
        loop = asyncio._get_running_loop()  # None outside a loop, without raising
        with self._lock:
            self._lines.append(line)
            if urgent or loop is None:
                self._write_out()
            elif self._timer_loop is not loop:
                if self._timer_loop is not None:  # a timer on another (maybe closed) loop
                    self._write_out()
                self._timer_loop = loop
                loop.call_later(self._window_s, self._on_timer)

    def flush(self) -> None:
        with self._lock:
            self._write_out()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer_loop = None
            try:
                self._write_out()
            except (OSError, ValueError):  # stdout closed or gone: nobody can read them
                self._lines.clear()

    def _write_out(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        out = sys.stdout
        out.write(text)
        out.flush()


_writers: weakref.WeakSet[LineWriter] = weakref.WeakSet()


@atexit.register
def flush_logs() -> None:
    """Write every line still collected (also run at the interpreter's exit)."""
    for writer in list(_writers):
        try:
            writer.flush()
        except (OSError, ValueError):  # stdout closed already
            pass


class LineLogger:
    """structlog's wrapped logger: each level's method hands the rendered line to a
    :class:`LineWriter`, WARNING and up as urgent."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write(message)

    def urgent(self, message: str) -> None:
        self._writer.write(message, urgent=True)

    log = debug = info = msg
    warn = warning = err = error = critical = exception = fatal = failure = urgent


#: The name of the root handler :func:`configure` installs (and replaces when called again).
HANDLER_NAME = "webhook_poller"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record comes (tests swap it), after the
    stdout lines collected before it (:func:`flush_logs`): the two streams keep their order,
    and uvicorn's last line ("Finished server process", after the app's shutdown) writes
    the shutdown's own lines before uvicorn re-raises SIGTERM, which skips ``atexit``."""

    def emit(self, record: logging.LogRecord) -> None:
        flush_logs()
        self.stream = sys.stderr
        super().emit(record)


def _line_logger(logger: LineLogger, *_: Any) -> LineLogger:
    return logger


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    flush_logs()  # lines of an earlier configuration first
    json_out = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer() if json_out else structlog.dev.ConsoleRenderer()
    )
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    stamp: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    finish: list[Processor] = [structlog.processors.format_exc_info, redact, renderer]
    structlog.configure(
        processors=[*stamp, *finish],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=functools.partial(_line_logger, LineLogger(LineWriter())),
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*stamp, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries speak from WARNING up; uvicorn's own loggers carry the configured level.
    root.setLevel(max(numeric, logging.WARNING))
