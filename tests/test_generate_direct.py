"""POST /generate to the direct families (Runway, Luma, Kling, MiniMax) over real HTTP against
their emulators: the documented create call, polling to a stored video, capability 422s, the
Idempotency-Key, a 429 on create retried later, final refusals, answers lost after the task
was made, our push URL where the family pushes, and the key kept to the provider's host."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support import emu_kling as kl
from tests.support import emu_luma as lu
from tests.support import emu_minimax as mm
from tests.support import emu_runway as rw
from tests.support.emu_scripted import ScriptedEmulator, json_answer
from tests.support.servers import free_port
from tests.support.service import (
    ServiceProcess,
    base_config,
    deep_merge,
    run_service,
    wait_for,
)
from webhook_poller.adapters import _direct_submit as ds
from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, SubmissionUncertain
from webhook_poller.model import ErrorCode


@dataclass(frozen=True)
class Family:
    """One direct family: its emulator, credentials, a full request and the create it makes."""

    name: str
    emulator: Callable[[], ScriptedEmulator]
    credentials: dict[str, str]
    body: dict[str, Any]
    #: (path, body) the create call must carry; ``{job}`` in a value is the job id
    create: tuple[str, dict[str, Any]]
    #: a change the model does not offer -> (field named, allowed values)
    refused: tuple[dict[str, Any], str, list[Any]]
    pushes: bool = True
    headers: dict[str, str] = field(default_factory=dict)


FAMILIES = [
    Family(
        name="runway",
        emulator=rw.RunwayEmulator,
        credentials={"api_key": rw.API_KEY},
        body={
            "model": "gen4_turbo",
            "prompt": "a lighthouse at dusk",
            "imageUrls": ["https://example.com/lighthouse.png"],
            "aspectRatio": "1104:832",
            "durationSeconds": 5,
            "options": {"seed": 7, "contentModeration": {"publicFigureThreshold": "low"}},
        },
        create=(
            "/v1/image_to_video",
            {
                "model": "gen4_turbo",
                "promptText": "a lighthouse at dusk",
                "ratio": "1104:832",
                "duration": 5,
                "seed": 7,
                "contentModeration": {"publicFigureThreshold": "low"},
                "promptImage": "https://example.com/lighthouse.png",
            },
        ),
        refused=(
            {"aspectRatio": "16:9"},
            "aspectRatio",
            ["1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672"],
        ),
        pushes=False,
        headers={"x-runway-version": rw.VERSION, "authorization": f"Bearer {rw.API_KEY}"},
    ),
    Family(
        name="luma",
        emulator=lu.LumaEmulator,
        credentials={"api_key": lu.API_KEY},
        body={
            "model": "ray-2",
            "prompt": "a paper crane unfolds",
            "imageUrls": ["https://example.com/start.png", "https://example.com/end.png"],
            "aspectRatio": "9:16",
            "durationSeconds": 9,
            "resolution": "1080p",
            "options": {"loop": True},
        },
        create=(
            "/dream-machine/v1/generations",
            {
                "prompt": "a paper crane unfolds",
                "model": "ray-2",
                "aspect_ratio": "9:16",
                "duration": "9s",
                "resolution": "1080p",
                "keyframes": {
                    "frame0": {"type": "image", "url": "https://example.com/start.png"},
                    "frame1": {"type": "image", "url": "https://example.com/end.png"},
                },
                "loop": True,
                "callback_url": "{public}/callbacks/luma",
            },
        ),
        refused=({"durationSeconds": 10}, "durationSeconds", [5, 9]),
        headers={"authorization": f"Bearer {lu.API_KEY}"},
    ),
    Family(
        name="kling",
        emulator=kl.KlingEmulator,
        credentials={"access_key": kl.ACCESS_KEY, "secret_key": kl.SECRET_KEY},
        body={
            "model": "kling-v2-master",
            "prompt": "a koi pond in the rain",
            "aspectRatio": "1:1",
            "durationSeconds": 10,
            "options": {"mode": "pro", "negative_prompt": "blur", "cfg_scale": 0.5},
        },
        create=(
            "/v1/videos/text2video",
            {
                "model_name": "kling-v2-master",
                "prompt": "a koi pond in the rain",
                "duration": "10",
                "mode": "pro",
                "negative_prompt": "blur",
                "cfg_scale": 0.5,
                "callback_url": "{public}/callbacks/kling",
                "external_task_id": "{job}-0",
                "aspect_ratio": "1:1",
            },
        ),
        refused=({"resolution": "1080p"}, "resolution", []),
    ),
    Family(
        name="minimax",
        emulator=mm.MinimaxEmulator,
        credentials={"api_key": mm.API_KEY},
        body={
            "model": "MiniMax-Hailuo-02",
            "prompt": "a tram crossing a bridge",
            "imageUrls": ["https://example.com/tram.png"],
            "durationSeconds": 6,
            "resolution": "1080P",
            "options": {"prompt_optimizer": False},
        },
        create=(
            "/v1/video_generation",
            {
                "model": "MiniMax-Hailuo-02",
                "prompt": "a tram crossing a bridge",
                "duration": 6,
                "resolution": "1080P",
                "first_frame_image": "https://example.com/tram.png",
                "prompt_optimizer": False,
                "callback_url": "{public}/callbacks/minimax",
            },
        ),
        refused=({"resolution": "1080p"}, "resolution", ["512P", "768P", "1080P"]),
        headers={"authorization": f"Bearer {mm.API_KEY}"},
    ),
]
BY_NAME = {f.name: f for f in FAMILIES}


@pytest.fixture(params=FAMILIES, ids=[f.name for f in FAMILIES])
def family(request: pytest.FixtureRequest) -> Family:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def emulator(family: Family) -> Iterator[ScriptedEmulator]:
    emu = family.emulator()
    with emu.start():
        yield emu


def config(tmp_path, family: Family, emu: ScriptedEmulator, **extra: Any) -> dict[str, Any]:
    """The service with ``server.public_url`` set, so families that push get our URL."""
    port = free_port()
    provider = {"base_url": emu.url, "min_interval_s": 0, **family.credentials}
    cfg = base_config(
        tmp_path,
        port=port,
        server={"public_url": f"http://127.0.0.1:{port}"},
        providers={family.name: provider},
        polling={"push_fallback_interval_s": 0.05},
    )
    return deep_merge(cfg, extra)


def request_body(family: Family, **changes: Any) -> dict[str, Any]:
    return {"sessionId": f"s-{family.name}", "provider": family.name, **family.body, **changes}


def finished(client: httpx.Client, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    result: dict[str, Any] = wait_for(check, timeout)
    return result


def _filled(value: Any, **names: str) -> Any:
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _filled(v, **names) for k, v in value.items()}
    return value


def test_generate_submits_the_documented_create_polls_and_stores(tmp_path, family, emulator):
    """One request: the family's create call with the caller's fields (and our push URL where
    the family pushes), the task polled to success, the video stored; the key went to the
    API host only, never with the download from the CDN host."""
    cfg = config(tmp_path, family, emulator)
    public = cfg["server"]["public_url"]
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        answer = c.post("/generate", json=request_body(family))
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "submitting"
        job = finished(c, answer.json()["jobId"])
    assert job["status"] == "succeeded", job
    assert len(emulator.creates) == 1
    create = emulator.creates[0]
    path, body = family.create
    assert create["path"] == path
    assert create["body"] == _filled(body, public=public, job=job["jobId"])
    for name, value in family.headers.items():
        assert create["headers"].get(name) == value
    assert job["taskId"] == create["task_id"]
    assert len(emulator.calls_for(create["task_id"])) >= 2, "pending once, then succeeded"
    assert [v["index"] for v in job["videos"]] == [0]
    assert emulator.downloads and all(
        "authorization" not in d["headers"] for d in emulator.downloads
    )
    if not family.pushes:
        assert not any("callback" in k for k in create["body"]), "nothing to push to"


def test_capability_422_names_the_field_and_allowed_values(tmp_path, family, emulator):
    """A value the model does not offer is refused before any paid call, naming the field and
    what it allows; an unknown option names the options there are."""
    change, name, allowed = family.refused
    with run_service(config(tmp_path, family, emulator)) as url, httpx.Client(base_url=url) as c:
        refused = c.post("/generate", json=request_body(family, **change))
        unknown = c.post("/generate", json=request_body(family, options={"colour": "red"}))
        model = c.post("/generate", json=request_body(family, model="no-such-model"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == name
    assert refused.json()["error"]["allowed"] == allowed
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "options.colour"
    assert model.status_code == 422 and model.json()["error"]["field"] == "model"
    assert emulator.creates == []


def test_same_idempotency_key_twice_makes_one_create(tmp_path, family, emulator):
    """The same key and body twice: one job and one create call at the provider."""
    headers = {"Idempotency-Key": f"order-{family.name}"}
    with run_service(config(tmp_path, family, emulator)) as url, httpx.Client(base_url=url) as c:
        first = c.post("/generate", json=request_body(family), headers=headers).json()
        second = c.post("/generate", json=request_body(family), headers=headers).json()
        job = finished(c, first["jobId"])
        third = c.post("/generate", json=request_body(family), headers=headers).json()
    assert job["status"] == "succeeded", job
    assert first["jobId"] == second["jobId"] == third["jobId"]
    assert len(emulator.creates) == 1, "one paid create per key"


def test_429_on_create_stays_submitting_and_is_retried_later(tmp_path, family, emulator):
    """The family's rate-limit answer to a create: nothing was made, the job stays
    submitting and the create is sent again after the Retry-After."""
    emulator.refuse_creates(1)
    with run_service(config(tmp_path, family, emulator)) as url, httpx.Client(base_url=url) as c:
        job_id = c.post("/generate", json=request_body(family)).json()["jobId"]
        wait_for(lambda: len(emulator.creates) >= 1)
        assert c.get(f"/jobs/{job_id}").json()["status"] == "submitting"
        job = finished(c, job_id)
    assert job["status"] == "succeeded", job
    assert len(emulator.creates) == 2
    assert emulator.creates[0]["task_id"] is None
    assert emulator.created_tasks() == [job["taskId"]]


REFUSALS = [
    ("runway", json_answer({"error": "Validation of body failed"}, 400), "validation_failed"),
    (
        "runway",
        json_answer({"error": "You do not have enough credits"}, 400),
        "insufficient_credits",
    ),
    ("luma", json_answer({"detail": "Invalid API key"}, 401), "auth_failed"),
    (
        "luma",
        json_answer({"detail": "prompt not allowed by moderation"}, 400),
        "moderation_rejected",
    ),
    ("kling", kl.envelope(1101, "Account balance not enough", None, 429), "insufficient_credits"),
    (
        "kling",
        kl.envelope(1301, "Trigger the content security policy", None, 400),
        "moderation_rejected",
    ),
    ("kling", kl.envelope(1201, "Invalid request parameters", None, 400), "validation_failed"),
    ("minimax", mm.error(1026, "input new_sensitive"), "moderation_rejected"),
    ("minimax", mm.error(2013, "invalid params"), "validation_failed"),
    ("minimax", mm.error(1008, "insufficient balance"), "insufficient_credits"),
]


@pytest.mark.parametrize(("name", "answer", "code"), REFUSALS)
def test_final_refusal_of_a_create_fails_with_its_code_and_is_not_retried(
    tmp_path, name, answer, code
):
    """A create the provider refuses for good fails the job with the named code, after one
    call: an empty account (Kling's HTTP 429 with 1101) is not a rate limit."""
    family = BY_NAME[name]
    emu = family.emulator()
    emu.create_answers = [answer]
    with emu.start(), run_service(config(tmp_path, family, emu)) as url:
        with httpx.Client(base_url=url) as c:
            job = finished(c, c.post("/generate", json=request_body(family)).json()["jobId"])
    assert job["status"] == "failed" and job["error"]["code"] == code, job
    assert len(emu.creates) == 1


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("runway", json_answer({"error": "Service unavailable"}, 503)),
        ("luma", (200, "<html>502</html>", {})),
        ("minimax", mm.error(1000, "unknown error")),
    ],
    ids=["runway-503", "luma-html", "minimax-1000"],
)
def test_uncertain_create_answer_fails_without_a_second_create(tmp_path, name, answer):
    """A 5xx, a body that is not JSON, or a server-error code may hide a paid task, and these
    families cannot look one up: the job fails saying so, and nothing is sent again."""
    family = BY_NAME[name]
    emu = family.emulator()
    emu.create_answers = [answer]
    with emu.start(), run_service(config(tmp_path, family, emu)) as url:
        with httpx.Client(base_url=url) as c:
            job = finished(c, c.post("/generate", json=request_body(family)).json()["jobId"])
    assert job["status"] == "failed", job
    assert "not sent again" in job["error"]["reason"]
    assert len(emu.creates) == 1


def test_kling_finds_the_task_of_a_lost_create_answer_by_external_task_id(tmp_path):
    """Kling made the task but its answer was lost (502): the task is found by the
    external_task_id we gave it, polled and stored; no second create went out."""
    family = BY_NAME["kling"]
    emu = kl.KlingEmulator()
    emu.lose_create_answers = 1
    with emu.start(), run_service(config(tmp_path, family, emu)) as url:
        with httpx.Client(base_url=url) as c:
            job = finished(c, c.post("/generate", json=request_body(family)).json()["jobId"])
    assert job["status"] == "succeeded", job
    assert len(emu.creates) == 1
    assert job["taskId"] == emu.creates[0]["task_id"]
    assert emu.creates[0]["body"]["external_task_id"] == f"{job['jobId']}-0"


@pytest.mark.crash
@pytest.mark.parametrize(("name", "outcome"), [("kling", "succeeded"), ("runway", "failed")])
def test_kill_9_between_create_and_record_looks_the_task_up_or_fails(tmp_path, name, outcome):
    """Killed while the provider is still answering a create call that made its task: after
    the restart Kling's task is found by its external_task_id and finishes; Runway's cannot be
    looked up, so the job fails saying it was not sent again. One create call either way."""
    family = BY_NAME[name]
    emu = family.emulator()
    emu.create_delay_s = 4
    with emu.start():
        svc = ServiceProcess(config(tmp_path, family, emu, store={"lease_s": 1}), tmp_path)
        svc.start()
        try:
            job_id = httpx.post(f"{svc.url}/generate", json=request_body(family)).json()["jobId"]
            wait_for(lambda: emu.created_tasks())
            svc.kill()
            emu.create_delay_s = 0
            svc.start()
            with httpx.Client(base_url=svc.url) as c:
                job = finished(c, job_id)
        finally:
            svc.kill()
    assert job["status"] == outcome, job
    assert len(emu.creates) == 1, "never a second paid submission"
    if outcome == "succeeded":
        assert job["taskId"] == emu.created_tasks()[0]
    else:
        assert "not sent again" in job["error"]["reason"]


def test_kling_push_moves_a_generated_job_at_once_while_polling_is_slow(tmp_path):
    """The job we submitted carries /callbacks/kling; Kling's unsigned push of the finished
    task makes it be read again now, not at the 300 s safety-net poll."""
    family = BY_NAME["kling"]
    emu = kl.KlingEmulator()
    slow = {"polling": {"interval_s": 60, "push_fallback_interval_s": 300}}
    with emu.start(), run_service(config(tmp_path, family, emu, **slow)) as url:
        with httpx.Client(base_url=url) as c:
            job_id = c.post("/generate", json=request_body(family)).json()["jobId"]
            wait_for(lambda: emu.created_tasks() and emu.calls_for(emu.created_tasks()[0]))
            task_id = emu.created_tasks()[0]
            assert c.get(f"/jobs/{job_id}").json()["status"] != "succeeded"
            push = {"task_id": task_id, "task_status": "succeed", "task_result": {}}
            assert c.post("/callbacks/kling", json=push).status_code == 200
            job = finished(c, job_id, timeout=10)
    assert job["status"] == "succeeded", job
    assert emu.creates[0]["body"]["callback_url"].endswith("/callbacks/kling")


def test_minimax_callback_url_passes_its_challenge_and_kling_pushes_are_received(tmp_path):
    """MiniMax checks our callback URL with a challenge, which is echoed; Kling's unwrapped
    push is read at /callbacks/kling (an unknown task answers 200 and stores nothing)."""
    family = BY_NAME["minimax"]
    emu = mm.MinimaxEmulator()
    with emu.start(), run_service(config(tmp_path, family, emu)) as url:
        with httpx.Client(base_url=url) as c:
            job = finished(c, c.post("/generate", json=request_body(family)).json()["jobId"])
            kling_push = c.post(
                "/callbacks/kling", json={"task_id": "123", "task_status": "succeed"}
            )
            kling_nothing = c.post("/callbacks/kling", json={"hello": "world"})
            runway_push = c.post("/callbacks/runway", json={"id": "x"})
    assert job["status"] == "succeeded", job
    assert emu.challenges == [{"challenge": "minimax-check-1"}]
    assert kling_push.status_code == 200
    assert kling_nothing.status_code == 400
    assert runway_push.status_code == 404, "Runway documents no webhook"


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "body", "raised", "detail"),
    [
        (429, {"error": "Too many requests"}, ProviderUnavailable, True),
        (500, {"error": "boom"}, SubmissionUncertain, None),
        (502, "<html>bad gateway</html>", SubmissionUncertain, None),
        (200, "<html>ok</html>", SubmissionUncertain, None),
        (200, [1, 2], SubmissionUncertain, None),
        (401, {"error": "bad key"}, ProviderTaskFailed, ErrorCode.AUTH_FAILED),
        (402, {"error": "pay"}, ProviderTaskFailed, ErrorCode.INSUFFICIENT_CREDITS),
        (422, {"detail": [{"msg": "bad ratio"}]}, ProviderTaskFailed, ErrorCode.VALIDATION_FAILED),
        (400, "not json", ProviderTaskFailed, ErrorCode.VALIDATION_FAILED),
    ],
)
def test_create_answer_reading(status, body, raised, detail):
    """The shared reading of a create answer: 429 nothing started, 5xx or unreadable 2xx
    uncertain, 4xx final with a named code."""
    with pytest.raises(raised) as info:
        ds.read_created(_response(status, body, {"Retry-After": "3"}), provider="runway")
    if raised is ProviderUnavailable:
        assert info.value.rate_limited and info.value.retry_after_s == 3.0
    if raised is ProviderTaskFailed:
        assert info.value.code is detail


def test_create_answer_body_codes_decide_before_the_http_status():
    """Kling's 429 with 1303 (too many running tasks) is a rate limit with Retry-After; a
    server-side code in a create answer is uncertain, not "try again"."""
    from webhook_poller.adapters import kling, minimax

    busy = _response(
        429, {"code": 1303, "message": "parallel task over limit"}, {"Retry-After": "4"}
    )
    with pytest.raises(ProviderUnavailable) as info:
        ds.read_created(busy, provider="kling", check_body=kling.check_created)
    assert info.value.rate_limited and info.value.retry_after_s == 4.0
    server = _response(200, {"code": 5000, "message": "internal"})
    with pytest.raises(SubmissionUncertain):
        ds.read_created(server, provider="kling", check_body=kling.check_created)
    limited = _response(
        200, {"task_id": "", "base_resp": {"status_code": 1002, "status_msg": "rl"}}
    )
    with pytest.raises(ProviderUnavailable):
        ds.read_created(limited, provider="minimax", check_body=minimax.check_created)
    ok = _response(200, {"task_id": "106", "base_resp": {"status_code": 0}})
    assert (
        ds.read_created(ok, provider="minimax", check_body=minimax.check_created)["task_id"]
        == "106"
    )
    with pytest.raises(SubmissionUncertain):
        ds.submitted("", provider="minimax")


def test_create_bodies_for_the_other_shapes_of_each_family():
    """Runway text-only goes to text_to_video with the model's defaults, two images become
    first and last frames; Kling's image task drops the aspect ratio (the image's is used)
    and names no external id without a job; MiniMax sends a second image as the last frame."""
    from webhook_poller.adapters import kling, minimax, runway
    from webhook_poller.interfaces import GenerationRequest

    text = runway.create_call(GenerationRequest(model="veo3.1", prompt="dunes"))
    assert text == (
        "/v1/text_to_video",
        {"model": "veo3.1", "promptText": "dunes", "ratio": "1280:720", "duration": 8},
    )
    frames = runway.create_call(
        GenerationRequest(
            model="gen3a_turbo", prompt="p", image_urls=("https://a/1", "https://a/2")
        )
    )
    assert frames[0] == "/v1/image_to_video"
    assert frames[1]["promptImage"] == [
        {"uri": "https://a/1", "position": "first"},
        {"uri": "https://a/2", "position": "last"},
    ]
    image = GenerationRequest(
        model="kling-v2-1", prompt="p", image_urls=("https://a/1",), aspect_ratio="16:9"
    )
    assert kling.create_call(image) == (
        "image2video",
        {"model_name": "kling-v2-1", "prompt": "p", "image": "https://a/1"},
    )
    two = GenerationRequest(
        model="MiniMax-Hailuo-02", prompt="p", image_urls=("https://a/1", "https://a/2")
    )
    assert minimax.create_body(two)["last_frame_image"] == "https://a/2"
