"""Entry-point discovery: plug-in name -> implementation class.

Built-ins register in pyproject.toml exactly as a third-party package would, so the core
never imports ``webhook_poller.adapters`` or ``webhook_poller.notifiers`` by name.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel

from .errors import ConfigError
from .interfaces import HasConfigSection, HasOptions

GROUPS = {
    "adapter": "webhook_poller.adapters",
    "notifier": "webhook_poller.notifiers",
    "store": "webhook_poller.stores",
    "blob": "webhook_poller.blobs",
}


@functools.cache
def available(family: str) -> dict[str, EntryPoint]:
    """Every registered plug-in of a family, by name."""
    return {ep.name: ep for ep in entry_points(group=GROUPS[family])}


def load(family: str, name: str) -> Any:
    """Import a plug-in class by name, or fail naming the ones that exist."""
    found = available(family)
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise ConfigError(f"unknown {family} {name!r}; known {family}s: {known}")
    ep = found[name]
    try:
        return ep.load()
    except ImportError as exc:
        raise ConfigError(
            f"{family} {name!r} is registered as {ep.value!r} but could not be imported: {exc}"
        ) from exc
    except AttributeError as exc:
        raise ConfigError(
            f"{family} {name!r} is registered as {ep.value!r} but that name does not exist"
        ) from exc


def scheme_of(url: str) -> str:
    """``sqlite:///x.db`` -> ``sqlite``; ``rediss://`` -> ``redis``; ``s3://`` -> ``s3``."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    return {"rediss": "redis", "unix": "redis"}.get(scheme, scheme)


def options_model(cls: object) -> type[BaseModel] | None:
    """The plug-in class's own typed options model (:class:`HasOptions`), else None."""
    if isinstance(cls, HasOptions) and isinstance(cls.Options, type):
        if issubclass(cls.Options, BaseModel):
            return cls.Options
    return None


def config_section(cls: object, default: str) -> str:
    """The ``providers.<section>`` an adapter class reads (:class:`HasConfigSection`)."""
    if isinstance(cls, HasConfigSection) and cls.config_section:
        return cls.config_section
    return default


def option_defaults(cls: object) -> dict[str, Any]:
    """The defaults the plug-in's options model documents (keys without one left out)."""
    model = options_model(cls)
    if model is None:
        return {}
    return {
        name: info.get_default(call_default_factory=True)
        for name, info in model.model_fields.items()
        if not info.is_required()
    }
