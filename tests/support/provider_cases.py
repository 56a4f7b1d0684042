"""Provider cases for the shared contract suite (tests/test_provider_contract.py).

Every adapter passes the same contract. To add a provider, write one ``ProviderCase`` and
append it to :data:`CASES`:

``ProviderCase(adapter, section, model, api_key, start, multi_video=True)``

- ``adapter``: the adapter's entry-point name (``"gemini"``, ``"kie-veo"`` ...).
- ``section``: its config section, ``providers.<section>`` (``"kie"`` for both KIE adapters).
- ``model``: a model name sent with intake (intake also sends ``provider=adapter``).
- ``api_key``: the key the emulator accepts; the suite puts it in ``providers.<section>``.
- ``start``: a no-argument callable returning a context manager that runs the provider's
  emulator over real HTTP on 127.0.0.1 and yields a :class:`CaseEmulator`.
  The emulators built on tests/support/emu_base.py (emu_gemini, emu_replicate, emu_fal)
  are their own CaseEmulator: ``start=lambda: emu_x.XEmulator().start()``; so are those
  built on tests/support/emu_scripted.py (emu_runway, emu_luma, emu_kling, emu_minimax).
- ``multi_video``: False for a provider whose documented answer holds one video per task
  (Luma ``assets.video``, MiniMax ``file_id``, KIE Runway ``videoInfo.videoUrl``); the
  suite then skips ``success_many`` and runs its end-to-end job with one video.

A ``CaseEmulator`` (any object with these members, see :class:`KieCase` for one):

- ``url``: the ``base_url`` to configure.
- ``task_id(name) -> str``: a task id in the provider's own format (Gemini: an operation
  name with slashes), unique for ``name``.
- ``scenario(task_id, name)``: from now on, polls of ``task_id`` answer scenario ``name``,
  one of :data:`SCENARIOS`. Result video URLs must be served by the emulator (real MP4).
  ``expired_link``: the first successful answer gives a link that answers HTTP 410, every
  later answer a fresh link that works.
- ``expired_fetches() -> int``: how many downloads the emulator refused with 410.

Scenarios and what the adapter must answer (checked by the suite):

=================  ================================================================
running            PollResult PENDING
success_one        SUCCEEDED with exactly one video URL
success_many       SUCCEEDED with two video URLs
moderation         FAILED, error_code moderation_rejected
failure            FAILED, any other error code
rate_limited       HTTP 429 with ``Retry-After: 7``: ProviderUnavailable, rate_limited,
                   retry_after_s == 7
server_error       HTTP 5xx: ProviderUnavailable
html               an HTML body: ProviderUnavailable or UnrecognizedResponse
truncated          a cut-off JSON body: ProviderUnavailable or UnrecognizedResponse
success_no_url     SUCCEEDED without a URL (or PENDING)
expired_link       through the service: the job still succeeds after one refresh
=================  ================================================================
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from tests.support import (
    emu_fal,
    emu_gemini,
    emu_kling,
    emu_luma,
    emu_minimax,
    emu_replicate,
    emu_runway,
)
from tests.support import kie_emulator as kie
from tests.support.servers import serve_in_thread

SCENARIOS = (
    "running",
    "success_one",
    "success_many",
    "moderation",
    "failure",
    "rate_limited",
    "server_error",
    "html",
    "truncated",
    "success_no_url",
    "expired_link",
)

HTML = "<html><body><h1>502 Bad Gateway</h1></body></html>"
TRUNCATED = '{"code": 200, "data": {"state": "succ'


class CaseEmulator(Protocol):
    url: str

    def task_id(self, name: str) -> str: ...

    def scenario(self, task_id: str, name: str) -> None: ...

    def expired_fetches(self) -> int: ...


@dataclass(frozen=True)
class ProviderCase:
    adapter: str
    section: str
    model: str
    api_key: str
    start: Callable[[], AbstractContextManager[CaseEmulator]]
    multi_video: bool = True


_seq = itertools.count()


# --- KIE (kie-veo, kie-market) -----------------------------------------------------------


class KieCase:
    """The existing KIE emulator driven by scenario names."""

    def __init__(self, emu: kie.KieEmulator, url: str, adapter: str) -> None:
        self.emu = emu
        self.url = url
        self.adapter = adapter

    def task_id(self, name: str) -> str:
        return f"{name}-{next(_seq)}"

    def expired_fetches(self) -> int:
        return len(self.emu.expired_fetches)

    def _video(self, name: str) -> str:
        return f"{self.url}/files/{name}.mp4"

    def _success(self, urls: list[str]) -> kie.Answer:
        if self.adapter == "kie-veo":
            return kie.veo_success(urls)
        if self.adapter == "kie-runway":
            return kie.runway("success", urls[0] if urls else "")
        return kie.market("success", urls)

    def _failed(self, code: int, message: str) -> kie.Answer:
        if self.adapter == "kie-veo":
            return kie.veo_failed(code, message)
        if self.adapter == "kie-runway":  # failCode is always 400 there; the text decides
            return kie.runway("fail", fail_code=400, fail_msg=message)
        return kie.market("fail", fail_code=str(code), fail_msg=message)

    def _pending(self) -> kie.Answer:
        if self.adapter == "kie-runway":
            return kie.runway("generating")
        return kie.veo_pending() if self.adapter == "kie-veo" else kie.market("generating")

    def scenario(self, task_id: str, name: str) -> None:
        answers: dict[str, list[kie.Answer]] = {
            "running": [self._pending()],
            "success_one": [self._success([self._video("a")])],
            "success_many": [self._success([self._video("a"), self._video("b")])],
            "moderation": [
                self._failed(400, "Your prompt was flagged as violating content policies")
            ],
            "failure": [self._failed(501, "Generation failed")],
            "rate_limited": [
                (429, {"code": 429, "msg": "Rate limit exceeded"}, {"Retry-After": "7"})
            ],
            "server_error": [(503, {"code": 500, "msg": "Server error"}, {})],
            "html": [(200, HTML, {})],
            "truncated": [(200, TRUNCATED, {})],
            "success_no_url": [self._success([])],
            "expired_link": [
                self._success([f"{self.url}/files/expired/{task_id}.mp4"]),
                self._success([self._video("fresh")]),
            ],
        }
        self.emu.script(task_id, answers[name])


def _kie_starter(adapter: str) -> Callable[[], AbstractContextManager[CaseEmulator]]:
    @contextlib.contextmanager
    def start() -> Iterator[CaseEmulator]:
        emu = kie.KieEmulator()
        with serve_in_thread(emu.app) as url:
            yield KieCase(emu, url, adapter)

    return start


CASES: list[ProviderCase] = [
    ProviderCase("kie-veo", "kie", "veo3_fast", kie.API_KEY, _kie_starter("kie-veo")),
    ProviderCase(
        "kie-market", "kie", "sora-2-text-to-video", kie.API_KEY, _kie_starter("kie-market")
    ),
    ProviderCase(
        "gemini",
        "gemini",
        emu_gemini.MODEL,
        emu_gemini.API_KEY,
        lambda: emu_gemini.GeminiEmulator().start(),
    ),
    ProviderCase(
        "replicate",
        "replicate",
        "google/veo-3",
        emu_replicate.API_TOKEN,
        lambda: emu_replicate.ReplicateEmulator().start(),
    ),
    ProviderCase(
        "fal", "fal", emu_fal.MODEL, emu_fal.API_KEY, lambda: emu_fal.FalEmulator().start()
    ),
    ProviderCase(
        "kie-runway", "kie", "runway-gen4", kie.API_KEY, _kie_starter("kie-runway"), False
    ),
    ProviderCase(
        "runway",
        "runway",
        "gen4_turbo",
        emu_runway.API_KEY,
        lambda: emu_runway.RunwayEmulator().start(),
    ),
    ProviderCase(
        "luma", "luma", "ray-2", emu_luma.API_KEY, lambda: emu_luma.LumaEmulator().start(), False
    ),
    ProviderCase(
        "kling",
        "kling",
        "kling-v2-5-turbo",
        emu_kling.API_TOKEN,
        lambda: emu_kling.KlingEmulator().start(),
    ),
    ProviderCase(
        "minimax",
        "minimax",
        "MiniMax-Hailuo-02",
        emu_minimax.API_KEY,
        lambda: emu_minimax.MinimaxEmulator().start(),
        False,
    ),
]


def case_ids(case: Any) -> str:
    return str(getattr(case, "adapter", case))
