"""The ``demo`` provider: shows the whole flow with no API key and no network.

Model ``demo`` finishes after ``providers.demo.polls_until_done`` polls with one small, valid
MP4 that ships in this package and that the service serves itself at
``/providers/demo/sample.mp4``. Task ids choose other endings: one containing ``moderation``
is refused by "moderation", ``fail`` fails, ``slow`` never finishes.

Poll counts are kept in memory: after a restart a demo task simply needs a few polls more.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field
from starlette.responses import FileResponse
from starlette.routing import Route

from webhook_poller.interfaces import PluginContext, PollResult, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.options import PluginOptions, ProviderOptions

if TYPE_CHECKING:
    import httpx
    from starlette.requests import Request

SAMPLE_NAME = "sample.mp4"
SAMPLE_PATH = "/providers/demo/sample.mp4"


def sample_video_path() -> Path:
    """Where the packaged demo MP4 lies on disk."""
    return Path(str(resources.files(__package__).joinpath(SAMPLE_NAME)))


async def _serve_sample(request: Request) -> FileResponse:
    return FileResponse(sample_video_path(), media_type="video/mp4")


class DemoOptions(ProviderOptions):
    """``providers.demo``: the shared provider keys, plus how many polls a task takes."""

    polls_until_done: int = Field(default=2, ge=1)
    # The demo finishes in seconds: no spacing, a generous budget, a quick cadence (each
    # only a default: the user's polling.interval_s and first_poll_delay_s still rule).
    min_interval_s: float = Field(default=0.0, ge=0)
    max_requests_per_s: float = Field(default=100.0, ge=0)
    interval_s: float | None = Field(default=2.0, gt=0)
    first_poll_delay_s: float | None = Field(default=1.0, ge=0)


class DemoAdapter:
    """Pretends to be a video provider. Options: ``polls_until_done`` (default 2)."""

    name = "demo"
    config_section = "demo"
    Options: ClassVar[type[PluginOptions]] = DemoOptions

    def __init__(self, options: Mapping[str, Any], context: PluginContext) -> None:
        self.polls_until_done = max(1, int(options.get("polls_until_done", 2)))
        self.base_url = context.settings.server.base_url()
        self._polls: dict[str, int] = {}

    @staticmethod
    def routes() -> list[Route]:
        """Mounted under /providers/demo by the app."""
        return [Route("/sample.mp4", _serve_sample, methods=["GET", "HEAD"])]

    async def poll(self, task: ProviderTask, http: httpx.AsyncClient) -> PollResult:
        count = self._polls.get(task.task_id, 0) + 1
        self._polls[task.task_id] = count
        lowered = task.task_id.lower()
        if "moderation" in lowered:
            return PollResult(
                PollStatus.FAILED,
                error_code=ErrorCode.MODERATION_REJECTED,
                detail="demo: refused by pretend moderation",
            )
        if "fail" in lowered:
            return PollResult(
                PollStatus.FAILED,
                error_code=ErrorCode.UNKNOWN_PROVIDER_ERROR,
                detail="demo: pretend generation failure",
            )
        if "slow" in lowered or count < self.polls_until_done:
            progress = min(0.95, count / (self.polls_until_done + 1))
            return PollResult(PollStatus.PENDING, progress=progress)
        self._polls.pop(task.task_id, None)
        return PollResult(PollStatus.SUCCEEDED, video_urls=(f"{self.base_url}{SAMPLE_PATH}",))

    async def download(self, url: str, http: httpx.AsyncClient) -> AsyncIterator[bytes] | None:
        """Our own sample is read from the package, never fetched over the network."""
        if not url.endswith(SAMPLE_PATH):
            return None
        return self._chunks()

    @staticmethod
    async def _chunks() -> AsyncIterator[bytes]:
        data = sample_video_path().read_bytes()
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]
