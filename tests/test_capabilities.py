"""Typed plug-in capabilities: what each built-in plug-in declares, as the core sees it.

The core finds optional hooks with ``isinstance`` against the small Protocols of
``webhook_poller.interfaces``; these tests pin which built-in implements which, so a hook
renamed in a plug-in fails here instead of silently switching a feature off.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import BaseModel

from tests.support.service import base_config
from webhook_poller import plugins
from webhook_poller.config import settings_from_mapping
from webhook_poller.interfaces import (
    BuildsCallbackTargets,
    ChecksCredentials,
    Closeable,
    Downloads,
    FindsTasks,
    FollowsUp,
    HasGenerateOptions,
    HasLocalPath,
    HasOwnCadence,
    HasRoutes,
    HasSubmitBudget,
    ReceivesBotUpdates,
    ReceivesCallbacks,
    RemovesStaleParts,
    Submits,
)
from webhook_poller.net import retry_after_s
from webhook_poller.services import build_services, close_plugins


@pytest.fixture
async def services(tmp_path):
    """Services built (not opened) with a webhook and a telegram notifier besides the log."""
    cfg = base_config(
        tmp_path,
        notifiers=[
            {"type": "webhook", "url": "http://127.0.0.1:9/hook"},
            {"type": "telegram", "bot_token": "123:abc", "webhook_secret": "s3cret-token"},
        ],
    )
    built = build_services(settings_from_mapping(cfg))
    yield built
    await close_plugins(built)
    await built.http.aclose()
    await built.provider_http.aclose()


def _capabilities(obj: object, caps: tuple[type, ...]) -> set[str]:
    return {cap.__name__ for cap in caps if isinstance(obj, cap)}


ADAPTER_CAPS: tuple[type, ...] = (
    Submits,
    FindsTasks,
    HasGenerateOptions,
    HasSubmitBudget,
    FollowsUp,
    ReceivesCallbacks,
    Downloads,
    HasOwnCadence,
    ChecksCredentials,
    Closeable,
)


async def test_adapters_declare_the_capabilities_the_core_uses(services):
    """KIE Veo submits, follows up, keeps an upscale cadence and takes pushes; the demo
    only downloads its own file and serves a route; of the direct families only Kling can
    look a lost task up."""
    veo = services.adapters["kie-veo"]
    assert _capabilities(veo, ADAPTER_CAPS) == {
        "Submits",
        "HasGenerateOptions",
        "HasSubmitBudget",
        "FollowsUp",
        "ReceivesCallbacks",
        "HasOwnCadence",
        "ChecksCredentials",
    }
    assert veo.follow_ups == frozenset({"extend", "upscale"})
    assert veo.submit_budget == (20, 10.0)
    demo = services.adapters["demo"]
    assert _capabilities(demo, ADAPTER_CAPS) == {"Downloads"}
    assert isinstance(type(demo), HasRoutes)
    assert not isinstance(type(veo), HasRoutes)
    kling = _capabilities(services.adapters["kling"], ADAPTER_CAPS)
    assert {"Submits", "FindsTasks", "ChecksCredentials"} <= kling
    runway = _capabilities(services.adapters["runway"], ADAPTER_CAPS)
    assert "Submits" in runway and "FindsTasks" not in runway


async def test_notifiers_and_blobs_declare_their_capabilities(services):
    """Only the webhook class builds callbackUrl targets, only telegram takes bot updates,
    and the local blob storage serves files and sweeps half-written parts."""
    by_name = {n.name: n for n in services.notifiers}
    assert isinstance(plugins.load("notifier", "webhook"), BuildsCallbackTargets)
    assert not isinstance(plugins.load("notifier", "telegram"), BuildsCallbackTargets)
    assert isinstance(by_name["telegram"], ReceivesBotUpdates)
    assert by_name["telegram"].webhook_secret == "s3cret-token"
    assert not isinstance(by_name["webhook"], ReceivesBotUpdates)
    assert isinstance(by_name["telegram"], Closeable)
    assert services.callback_notifier("http://127.0.0.1:9/cb").name == "callback"
    assert isinstance(services.blobs, HasLocalPath)
    assert isinstance(services.blobs, RemovesStaleParts)


class _Loose:
    """A third-party plug-in class whose ``Options`` is not a pydantic model."""

    Options: ClassVar[Any] = dict
    config_section: ClassVar[str] = ""


class _Typed:
    class Options(BaseModel):
        rate: float = 2.5
        needed: str

    config_section: ClassVar[str] = "shared"


def test_options_model_and_section_are_read_only_when_typed():
    """A plug-in's Options counts only as a pydantic model; its defaults leave required keys
    out; an empty or missing config_section falls back to the plug-in's name."""
    assert plugins.options_model(_Loose) is None
    assert plugins.option_defaults(_Loose) == {}
    assert plugins.config_section(_Loose, "loose") == "loose"
    assert plugins.options_model(_Typed) is _Typed.Options
    assert plugins.option_defaults(_Typed) == {"rate": 2.5}
    assert plugins.config_section(_Typed, "typed") == "shared"
    assert plugins.config_section(object(), "plain") == "plain"


def test_kie_cadence_is_the_adapter_default_not_core_config():
    """KIE's 30 s spacing and 10 requests/s come from its own Options, not core config."""
    assert "kie" not in settings_from_mapping({}).providers
    defaults = plugins.option_defaults(plugins.load("adapter", "kie-veo"))
    assert defaults["min_interval_s"] == 30.0
    assert defaults["max_requests_per_s"] == 10.0
    assert defaults["base_url"] == "https://api.kie.ai"


def _answer(value: str | None) -> httpx.Response:
    return httpx.Response(429, headers={"retry-after": value} if value is not None else {})


def test_retry_after_reads_seconds_and_dates_and_refuses_nonsense():
    """Delta-seconds and HTTP dates become seconds (never negative); junk, inf and an absent
    header are None."""
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert retry_after_s(_answer("7")) == 7.0
    assert retry_after_s(_answer(" 1.5 ")) == 1.5
    assert retry_after_s(_answer("-3")) == 0.0
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert retry_after_s(_answer(later), now) == 30.0
    earlier = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert retry_after_s(_answer(earlier), now) == 0.0
    for junk in ("soon", "inf", "nan", "", None):
        assert retry_after_s(_answer(junk)) is None


def test_capability_answers_are_kept_per_class_never_shared():
    """The cached capability check answers each plug-in class for itself, and judges a
    class object (all of type ``type``) by the class, not by ``type``."""

    class Cadenced:
        def poll_interval_s(self, task_id: str) -> float | None:
            return 1.0

    class Plain:
        pass

    assert isinstance(Cadenced(), HasOwnCadence)
    assert not isinstance(Plain(), HasOwnCadence)
    assert isinstance(Cadenced(), HasOwnCadence)  # asked again after a negative answer
    assert isinstance(Cadenced, HasOwnCadence)
    assert not isinstance(Plain, HasOwnCadence)
    assert not isinstance(int, HasOwnCadence)
