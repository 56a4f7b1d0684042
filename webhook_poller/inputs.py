"""Reading what clients send: one JSON loader and one whole-number parser for every endpoint.

Pure helpers, no I/O. Whatever a client sends, these either return a value the rest of the
service can store and serialise, or raise :class:`RequestRejected` (a 4xx). They close the
holes the standard library leaves open:

* ``json.loads`` recurses once per nesting level (about 1000 levels raise RecursionError),
  accepts ``NaN``/``Infinity`` and turns ``1e999`` into ``inf`` (neither serialises back to
  valid JSON), and decodes ``"\\ud800"`` into a lone surrogate that no UTF-8 store can write;
* ``str.isdigit()`` accepts ``"²"`` and other digits ``int()`` refuses, and ``int()`` on
  thousands of digits raises.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic_core import from_json

from .errors import RequestRejected

#: Deepest nesting of arrays and objects a client body may use.
MAX_JSON_DEPTH = 32
#: Most digits a whole number from a client may have (int64 has 19).
MAX_INT_DIGITS = 19

_SURROGATE = re.compile("[\ud800-\udfff]")
_ASCII_INT = re.compile(rf"[+-]?[0-9]{{1,{MAX_INT_DIGITS}}}")
#: Text that may hold a number too large for a float: an exponent (or 300+ characters).
_EXPONENT = re.compile(rb"[0-9][eE]")


def _refuse_constant(name: str) -> Any:
    raise _NotFinite(name)


class _NotFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


def _depth_exceeds(text: str, limit: int) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` (brackets inside strings ignored)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string (or object key) in a parsed JSON value is not valid Unicode text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _fast_load(raw: bytes) -> Any:
    """The value when Rust's parser (jiter) reads ``raw`` and it passes every check, else
    ``_SLOW``. jiter already refuses invalid UTF-8, lone surrogates, ``NaN`` and
    ``Infinity``; what is left is nesting depth (counted before) and an overflowing number."""
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH or raw[:3] == b"\xef\xbb\xbf":
        return _SLOW
    try:
        value = from_json(raw, allow_inf_nan=False)
    except ValueError:
        return _SLOW  # the slow path below names the problem
    if (len(raw) >= 300 or _EXPONENT.search(raw)) and not _all_finite(value):
        return _SLOW
    return value


_SLOW = object()


def _all_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def load_json(raw: bytes | str, what: str = "the body", *, field: str | None = None) -> Any:
    """Parse client JSON, refusing what the service could not store or send back.

    400 for text that is not JSON, nests deeper than :data:`MAX_JSON_DEPTH` or holds a lone
    surrogate; 422 for ``NaN``, ``Infinity`` or a number too large for a float. Bytes that
    pass every check take the Rust parser; anything else takes the standard library path,
    which names the problem (the two agree on every value both accept).
    """
    if isinstance(raw, bytes):
        value = _fast_load(raw)
        if value is not _SLOW:
            return value
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestRejected(
                f"{what} is not UTF-8",
                field=field,
                status_code=400,
            ) from None
    else:
        text = raw
    if _SURROGATE.search(text):
        raise RequestRejected(
            f"{what} holds a lone surrogate; send valid Unicode text",
            field=field,
            status_code=400,
        )
    if _depth_exceeds(text, MAX_JSON_DEPTH):
        raise RequestRejected(
            f"{what} nests deeper than {MAX_JSON_DEPTH} levels",
            field=field,
            status_code=400,
        )
    try:
        value = json.loads(
            text.lstrip("\ufeff"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except _NotFinite:
        raise RequestRejected(
            f"{what} holds NaN, Infinity or a number too large; only finite numbers are allowed",
            field=field,
        ) from None
    except (ValueError, RecursionError):
        raise RequestRejected(
            f"{what} is not valid JSON",
            field=field,
            status_code=400,
        ) from None
    if has_lone_surrogate(value):
        raise RequestRejected(
            f"{what} holds a lone surrogate; send valid Unicode text",
            field=field,
            status_code=400,
        )
    return value


def check_json_value(value: Any, what: str, *, field: str | None = None) -> None:
    """Refuse an already-parsed value (a form field, say) that :func:`load_json` would."""
    load_json(json.dumps(value, allow_nan=True), what, field=field)


def client_int(
    value: Any,
    field: str,
    *,
    default: int,
    low: int,
    high: int,
    allow_integral_float: bool = False,
    status_code: int | None = None,
) -> int:
    """A whole number a client sent as a JSON number or as ASCII digits, within [low, high].

    ``None`` and ``""`` give ``default``; anything else that is not such a number, ``True``
    and ``"²"`` included, is refused naming ``field`` (422 unless ``status_code`` says).
    """
    if value is None or value == "":
        return default
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and allow_integral_float:
        number = int(value) if math.isfinite(value) and value.is_integer() else None
    elif isinstance(value, str):
        text = value.strip()
        number = int(text) if text.isascii() and _ASCII_INT.fullmatch(text) else None
    if number is None or not low <= number <= high:
        raise RequestRejected(
            f"{field} must be a whole number from {low} to {high}",
            field=field,
            status_code=status_code,
        )
    return number
