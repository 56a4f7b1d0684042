"""Turn jobs and deliveries into plain JSON-able dicts and back; shared by every store.

The stored record is derived from the dataclasses in :mod:`webhook_poller.model`: a field
added there is stored and read back with no change here. Each field's type picks its
conversion once, at import (datetimes as epoch seconds, which the stores index on; enums
as their values; tuples as lists; nested records through their ``to_dict``/``from_dict``).
A key missing from an older record takes the field's default, so old records stay readable.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

from ..logging import scrub_optional
from ..model import Delivery, Job

Encode = Callable[[Any], Any]
Decode = Callable[[Any], Any]

#: Free text that may quote a provider or a receiver: scrubbed of secrets before it is stored.
SCRUBBED = frozenset({"error_detail", "last_error"})
#: Required timestamps an older record may lack, and the field they fall back to.
FALLBACKS = {"updated_at": "created_at", "due_at": "created_at"}


def ts(value: datetime | None) -> float | None:
    """Aware datetime -> epoch seconds (what stores index on)."""
    return value.timestamp() if value is not None else None


def dt(value: float | str | bytes | None) -> datetime | None:
    if value is None or value == "" or value == b"":
        return None
    return datetime.fromtimestamp(float(value), UTC)


def _strip_optional(hint: Any) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _none_safe(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else fn(v)


def _conversions(name: str, hint: Any) -> tuple[Encode | None, Decode]:
    """How one field is written and read back; ``None`` means stored as it is."""
    kind = _strip_optional(hint)
    origin = typing.get_origin(kind)
    if kind is datetime:
        return ts, dt
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        enum_type: type[enum.Enum] = kind
        return _none_safe(lambda v: v.value), lambda v: enum_type(v) if v else None
    if kind is int:
        return None, lambda v: None if v is None or v == "" else int(v)
    if kind is bool:
        return None, lambda v: None if v is None or v == "" else bool(v)
    if kind is str:
        scrub = scrub_optional if name in SCRUBBED else None
        # Redis hashes keep "" for an unset optional string; read it back as unset.
        return scrub, (lambda v: v or None) if kind is not hint else (lambda v: v)
    if origin is tuple:
        (item, *_) = typing.get_args(kind)
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            from_dict = item.from_dict  # type: ignore[attr-defined]
            return (
                lambda v: [x.to_dict() for x in v],
                lambda v: tuple(from_dict(x) for x in v or ()),
            )
        return list, lambda v: tuple(v or ())
    if origin is Mapping or kind is Mapping:
        # A mapping stored as a JSON string (a Redis hash field) is read back as one.
        return _none_safe(dict), lambda v: json.loads(v) if isinstance(v, str | bytes) else v
    raise TypeError(f"the store codec has no conversion for {name}: {hint!r}")


_MISSING: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class RecordCodec:
    """The stored form of one model dataclass, built from its fields' types."""

    cls: type[Any]
    encoders: tuple[tuple[str, Encode | None], ...]
    decoders: tuple[tuple[str, Decode, Any], ...]

    @classmethod
    def of(cls, model: type[Any]) -> RecordCodec:
        hints = typing.get_type_hints(model)
        encoders: list[tuple[str, Encode | None]] = []
        decoders: list[tuple[str, Decode, Any]] = []
        for f in dataclasses.fields(model):
            encode, decode = _conversions(f.name, hints[f.name])
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            elif _strip_optional(hints[f.name]) is int:
                default = 0  # a count an older record lacks starts from nothing
            else:
                default = _MISSING
            encoders.append((f.name, encode))
            decoders.append((f.name, decode, default))
        return cls(model, tuple(encoders), tuple(decoders))

    def encode(self, obj: Any) -> dict[str, Any]:
        return {
            name: getattr(obj, name) if encode is None else encode(getattr(obj, name))
            for name, encode in self.encoders
        }

    def decode(self, data: Mapping[str, Any]) -> Any:
        values: dict[str, Any] = {}
        for name, decode, default in self.decoders:
            raw = data.get(name)
            value = None if raw is None else decode(raw)
            if value is None:
                if name in FALLBACKS:
                    value = values[FALLBACKS[name]]
                elif default is not _MISSING:
                    value = default
                elif name not in data:
                    raise KeyError(name)
            values[name] = value
        return self.cls(**values)


JOB = RecordCodec.of(Job)
DELIVERY = RecordCodec.of(Delivery)


def job_to_dict(job: Job) -> dict[str, Any]:
    return JOB.encode(job)


def job_from_dict(data: Mapping[str, Any]) -> Job:
    job: Job = JOB.decode(data)
    return job


def delivery_to_dict(delivery: Delivery) -> dict[str, Any]:
    return DELIVERY.encode(delivery)


def delivery_from_dict(data: Mapping[str, Any]) -> Delivery:
    delivery: Delivery = DELIVERY.decode(data)
    return delivery


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 kept as is. pydantic-core's Rust serializer writes a job record
    (36 keys) about 5x faster than ``json.dumps``, the same JSON value (floats may be
    spelled shorter, ``1e-7`` for ``1e-07``); anything it cannot write goes through
    ``json.dumps`` for the same error as before."""
    try:
        return to_json(value).decode()
    except PydanticSerializationError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
