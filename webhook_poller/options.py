"""Typed option models that plug-ins declare for their own block of the config file.

A plug-in class may carry ``Options: ClassVar[type[PluginOptions]]``. The core checks the
plug-in's block against it when the config is loaded, so a typo such as
``providers.kie.min_intervl_s`` is one clear error instead of a key nobody reads. The
plug-in is still constructed with a plain mapping (``cls(options, context)``), so third-party
plug-ins without an ``Options`` model keep working unchecked.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .model import Event


class PluginOptions(BaseModel):
    """Base for every plug-in's options: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class ProviderOptions(PluginOptions):
    """Keys every provider family understands (``providers.<family>``).

    A family's adapter subclasses this with its own extra keys and documented defaults.
    ``interval_s``, ``first_poll_delay_s`` and ``delayed_interval_s`` override the
    matching ``polling.*`` keys for this family only when set.
    """

    base_url: str | None = None
    api_key: SecretStr | None = None
    min_interval_s: float = Field(default=0.0, ge=0)
    max_requests_per_s: float = Field(default=10.0, ge=0)
    timeout_s: float = Field(default=20.0, gt=0)
    interval_s: float | None = Field(default=None, gt=0)
    first_poll_delay_s: float | None = Field(default=None, ge=0)
    delayed_interval_s: float | None = Field(default=None, gt=0)


def _known_events() -> tuple[str, ...]:
    return (*(e.value for e in Event), "*")


class NotifierOptions(PluginOptions):
    """Keys every notifier understands (one item of ``notifiers:``).

    ``events`` names must be events of :class:`webhook_poller.model.Event` (or ``*``); a
    typo such as ``video.succeded`` would otherwise subscribe to nothing.
    """

    type: str
    name: str | None = None
    events: list[str] | None = None

    @field_validator("events")
    @classmethod
    def _known_event_names(cls, value: list[str] | None) -> list[str] | None:
        known = _known_events()
        for item in value or []:
            if item not in known:
                raise ValueError(f"unknown event {item!r}; known events: {', '.join(known)}")
        return value
