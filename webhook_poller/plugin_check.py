"""Config-load checks of every plug-in the settings name, before anything is built.

Each problem is one :class:`ConfigError` line that names the key: an unknown store, blob,
adapter or notifier type, a URL without a scheme, and every key of a ``providers.<family>``
block or a ``notifiers[]`` item that the plug-in's ``Options`` model (see :mod:`.options`)
does not know, with the known keys listed. Plug-ins without an ``Options`` model keep
working: for them only the keys every notifier shares (``type``, ``name``, ``events``) are
checked. A ``providers`` block with a ``type`` key is a declarative provider and is checked
by its own code, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from . import plugins
from .errors import ConfigError
from .options import NotifierOptions

if TYPE_CHECKING:
    from .config import Settings

_SECRET_WORDS = ("secret", "token", "key", "password")

URL_EXAMPLES = {
    "store": "sqlite:///./data/webhook-poller.db or redis://HOST:6379/0",
    "blob": "file://./data/videos or s3://bucket/prefix/",
}


class _AnyNotifierOptions(NotifierOptions):
    """The shared notifier keys, for a notifier that declares no ``Options`` of its own."""

    model_config = ConfigDict(extra="allow")


def check_plugins(settings: Settings) -> None:
    """Raise ConfigError (one line naming the key) for the first plug-in problem found."""
    check_backend("store", "store.url", settings.store.url)
    check_backend("blob", "storage.url", settings.storage.url)
    declared = {
        name
        for name, block in settings.providers.items()
        if isinstance(block, Mapping) and "type" in block
    }
    sections = _adapter_sections(settings.models, declared)
    for section, block in settings.providers.items():
        if isinstance(block, Mapping) and "type" in block:
            continue  # a declarative provider: its own loader checks it
        classes = sections.get(section)
        if not classes:
            known = ", ".join(sorted(sections)) or "none"
            raise ConfigError(
                f"providers.{section}: no installed adapter reads this section; "
                f"known sections: {known}"
            )
        for cls in classes:
            model = plugins.options_model(cls)
            if model is not None:
                validate_options(model, block, f"providers.{section}")
    for i, item in enumerate(settings.notifiers):
        kind = str(item["type"])
        try:
            cls = plugins.load("notifier", kind)
        except ConfigError as exc:
            raise ConfigError(f"notifiers[{i}].type: {exc}") from None
        model = plugins.options_model(cls) or _AnyNotifierOptions
        label = item.get("name") or kind
        validate_options(model, item, f"notifiers[{i}] ({label})")


def check_backend(family: str, key: str, url: str) -> None:
    """``store.url`` / ``storage.url``: a scheme we have a plug-in for."""
    if "://" not in url or not plugins.scheme_of(url):
        hint = URL_EXAMPLES.get(family, "scheme://...")
        if family == "blob" and url.startswith(("/", ".")):
            hint = f"file://{url}"
        raise ConfigError(f"{key}: {url!r} has no scheme; write it as {hint}")
    try:
        plugins.load(family, plugins.scheme_of(url))
    except ConfigError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _adapter_sections(models: Mapping[str, str], declared: set[str]) -> dict[str, list[type[Any]]]:
    """config_section -> adapter classes: the routed ones (which must load) and every other
    installed adapter that imports. A model routed to a ``providers`` block with a ``type``
    (a declarative provider) is left to that provider's loader."""
    sections: dict[str, list[type[Any]]] = {}
    seen: set[str] = set()
    for pattern, name in models.items():
        if name in declared:
            continue
        try:
            cls = plugins.load("adapter", name)
        except ConfigError as exc:
            raise ConfigError(f"models.{pattern}: {exc}") from None
        if name not in seen:
            seen.add(name)
            sections.setdefault(plugins.config_section(cls, name), []).append(cls)
    for name in plugins.available("adapter"):
        if name in seen:
            continue
        try:
            cls = plugins.load("adapter", name)
        except ConfigError:
            continue  # not routed and broken: serve would never load it either
        sections.setdefault(plugins.config_section(cls, name), []).append(cls)
    return sections


def validate_options(model: type[BaseModel], options: Any, where: str) -> None:
    """Check one plug-in block; every problem on one line, the known keys listed."""
    try:
        model.model_validate(dict(options or {}))
    except ValidationError as exc:
        known = ", ".join(model.model_fields)
        problems = []
        for err in exc.errors():
            key = ".".join([where, *(str(p) for p in err["loc"])])
            if err["type"] == "extra_forbidden":
                problems.append(f"{key}: unknown key; known keys: {known}")
                continue
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                problems.append(f"{key}: required (known keys: {known})")
            else:
                hidden = any(w in key.lower() for w in _SECRET_WORDS)
                shown = "<hidden>" if hidden else repr(err.get("input"))
                problems.append(f"{key}: {msg} (got {shown})")
        raise ConfigError("; ".join(problems)) from None
