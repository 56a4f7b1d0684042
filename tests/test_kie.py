"""KIE.ai: every documented status shape parsed, and the adapters over real HTTP through the
whole service (transient trouble, 429, error envelopes, timeouts, the SSRF guard)."""

from __future__ import annotations

import itertools
import json

import httpx
import pytest

from tests.support import kie_declarative
from tests.support import kie_emulator as kie
from tests.support.servers import serve_in_thread
from tests.support.service import CallbackReceiver, base_config, run_service, wait_for
from webhook_poller.adapters.kie import KieMarketAdapter, parse_kie_payload
from webhook_poller.config import settings_from_mapping
from webhook_poller.errors import ProviderTaskFailed, ProviderUnavailable, UnrecognizedResponse
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode

A, B = "https://tempfile.aiquickdraw.com/v/a.mp4", "https://tempfile.aiquickdraw.com/v/b.mp4"

SHAPES = [
    (
        "veo generating",
        {"code": 200, "msg": "success", "data": {"successFlag": 0}},
        PollStatus.PENDING,
        (),
    ),
    (
        "veo success",
        {
            "code": 200,
            "msg": "success",
            "data": {"successFlag": 1, "response": {"resultUrls": [A], "originUrls": [B]}},
        },
        PollStatus.SUCCEEDED,
        (A,),
    ),
    (
        "veo flag as string",
        {"code": 200, "data": {"successFlag": "1", "response": {"resultUrls": [A]}}},
        PollStatus.SUCCEEDED,
        (A,),
    ),
    (
        "veo extend full urls",
        {"code": 200, "data": {"successFlag": 1, "response": {"fullResultUrls": [B]}}},
        PollStatus.SUCCEEDED,
        (B,),
    ),
    (
        "veo failed upstream 3",
        {
            "code": 200,
            "data": {"successFlag": 3, "errorCode": 501, "errorMessage": "generation failed"},
        },
        PollStatus.FAILED,
        (),
    ),
    (
        "market waiting",
        {
            "code": 200,
            "message": "success",
            "data": {"state": "waiting", "resultJson": "", "failCode": "", "failMsg": ""},
        },
        PollStatus.PENDING,
        (),
    ),
    ("market queuing upper", {"code": 200, "data": {"state": "QUEUING"}}, PollStatus.PENDING, ()),
    (
        "market success json string",
        {
            "code": 200,
            "data": {
                "state": "success",
                "resultJson": json.dumps({"resultUrls": [A], "resultWaterMarkUrls": [B]}),
            },
        },
        PollStatus.SUCCEEDED,
        (A,),
    ),
    (
        "market success object",
        {"code": 200, "data": {"state": "Success", "resultJson": {"resultUrls": [A, A]}}},
        PollStatus.SUCCEEDED,
        (A,),
    ),
    (
        "market fail",
        {"code": 200, "data": {"state": "fail", "failCode": "500", "failMsg": "internal"}},
        PollStatus.FAILED,
        (),
    ),
    ("template veo", {"status": "completed", "videoUrl": A}, PollStatus.SUCCEEDED, (A,)),
    (
        "template market",
        {"job": {"status": "success", "result": {"url": A}}},
        PollStatus.SUCCEEDED,
        (A,),
    ),
    ("legacy", {"data": {"video_url": A}}, PollStatus.SUCCEEDED, (A,)),
    (
        "runway wrapper",
        {
            "code": 200,
            "data": {
                "state": "success",
                "videoInfo": {"videoUrl": A, "imageUrl": "https://x/thumb.jpg"},
            },
        },
        PollStatus.SUCCEEDED,
        (A,),
    ),
    (
        "callback string list",
        {"code": 200, "data": {"successFlag": 1, "info": {"resultUrls": f"[{A}]"}}},
        PollStatus.SUCCEEDED,
        (A,),
    ),
    (
        "urls as json string",
        {"code": 200, "data": {"state": "success", "resultJson": json.dumps({"resultUrls": A})}},
        PollStatus.SUCCEEDED,
        (A,),
    ),
    (
        "success without url",
        {"code": 200, "data": {"state": "success", "resultJson": ""}},
        PollStatus.SUCCEEDED,
        (),
    ),
]


#: Shapes of the Market recordInfo API: the declarative KIE Market section must read them too.
MARKET_SHAPES = frozenset(
    {
        "market waiting",
        "market queuing upper",
        "market success json string",
        "market success object",
        "market fail",
        "urls as json string",
        "success without url",
    }
)

#: The Market parsers: the code adapter's, and the one built from tests/support/kie_declarative.
PARSERS = {"code": parse_kie_payload, "declarative": kie_declarative.adapter().parse}


def with_parsers(cases, market=lambda case: True):
    """Each case once per parser; the declarative one only gets the Market cases."""
    return [
        pytest.param(PARSERS[kind], *case, id=f"{kind}-{case[0] if named else i}")
        for kind in PARSERS
        for i, case in enumerate(cases)
        if kind == "code" or market(case)
        for named in [isinstance(case, tuple) and isinstance(case[0], str)]
    ]


def is_market_body(case):
    """A Market recordInfo body (``data.state``), as opposed to a Veo record."""
    payload = case[0] if isinstance(case, tuple) else case
    return isinstance(payload, dict) and "state" in (payload.get("data") or {})


@pytest.mark.parametrize(
    ("parse", "name", "payload", "status", "urls"),
    with_parsers(SHAPES, lambda case: case[0] in MARKET_SHAPES),
)
def test_parse_every_documented_shape(parse, name, payload, status, urls):
    """Each shape KIE or the n8n template produces is read as the right status and URLs."""
    result = parse(payload)
    assert result.status is status
    assert result.video_urls == urls


FAILURES = [
    (
        {
            "code": 200,
            "data": {
                "successFlag": 2,
                "errorCode": 400,
                "errorMessage": "Your prompt violates content policy",
            },
        },
        ErrorCode.MODERATION_REJECTED,
    ),
    (
        {
            "code": 200,
            "data": {"state": "fail", "failCode": 451, "failMsg": "Failed to fetch the image"},
        },
        ErrorCode.ASSET_FETCH_FAILED,
    ),
    (
        {
            "code": 200,
            "data": {
                "successFlag": 2,
                "errorCode": 408,
                "errorMessage": "No result has been returned for 10 minutes",
            },
        },
        ErrorCode.PROVIDER_TIMEOUT,
    ),
    (
        {"code": 200, "data": {"state": "fail", "failCode": "501", "failMsg": "failed"}},
        ErrorCode.UNKNOWN_PROVIDER_ERROR,
    ),
]


@pytest.mark.parametrize(("parse", "payload", "code"), with_parsers(FAILURES, is_market_body))
def test_task_failures_are_normalized(parse, payload, code):
    """Failure codes and messages map to our error codes; the text stays in detail only."""
    result = parse(payload)
    assert result.status is PollStatus.FAILED and result.error_code is code


@pytest.mark.parametrize("parse", PARSERS.values(), ids=PARSERS.keys())
def test_envelope_errors_inside_http_200(parse):
    """KIE puts failures in body.code with HTTP 200: credits, auth, rate limit, maintenance."""
    with pytest.raises(ProviderTaskFailed) as credits:
        parse({"code": 402, "msg": "Credits insufficient"})
    assert credits.value.code is ErrorCode.INSUFFICIENT_CREDITS
    with pytest.raises(ProviderTaskFailed) as auth:
        parse({"code": 401, "msg": "You do not have access permissions"})
    assert auth.value.code is ErrorCode.AUTH_FAILED
    with pytest.raises(ProviderUnavailable) as limited:
        parse({"code": 429, "msg": "Rate limit exceeded"})
    assert limited.value.rate_limited
    with pytest.raises(ProviderUnavailable):
        parse({"code": 455, "msg": "maintenance"})


@pytest.mark.parametrize("parse", PARSERS.values(), ids=PARSERS.keys())
@pytest.mark.parametrize(
    "body",
    [
        "<html>502</html>",
        "",
        "[]",
        "null",
        '{"hello": 1}',
        '{"code": 200, "data": {"state": "levitating"}}',
    ],
)
def test_unreadable_bodies_are_unrecognized(parse, body):
    """Bodies we cannot read raise UnrecognizedResponse, which the core treats as transient."""
    with pytest.raises(UnrecognizedResponse):
        parse(body)


@pytest.fixture
def emulator():
    emu = kie.KieEmulator()
    with serve_in_thread(emu.app) as url:
        emu.url = url
        yield emu


@pytest.fixture(params=["code", "declarative"])
def market_adapter(request):
    """Builds the KIE Market adapter: the code one, or the declarative YAML section."""

    def build(base_url, api_key):
        if request.param == "declarative":
            return kie_declarative.adapter(base_url, api_key)
        settings = settings_from_mapping({})
        return KieMarketAdapter({"base_url": base_url, "api_key": api_key}, PluginContext(settings))

    build.kind = request.param
    return build


async def test_adapter_sends_key_and_hides_it(emulator, market_adapter):
    """The adapter sends the bearer key, and no error it raises contains the key."""
    good = market_adapter(emulator.url, kie.API_KEY)
    bad = market_adapter(emulator.url, "wrong-secret-key")
    emulator.script("t1", [kie.market("generating")])
    task = ProviderTask("t1", "sora-2", "kie-market")
    async with httpx.AsyncClient() as http:
        assert (await good.poll(task, http)).status is PollStatus.PENDING
        with pytest.raises(ProviderTaskFailed) as err:
            await bad.poll(task, http)
    assert emulator.calls_for("t1")[0]["auth"] == f"Bearer {kie.API_KEY}"
    assert err.value.code is ErrorCode.AUTH_FAILED
    assert "wrong-secret-key" not in f"{err.value} {err.value.detail}"


async def test_adapter_maps_http_trouble_to_transient(emulator, market_adapter):
    """5xx, 429 with Retry-After, refused connections and HTML are transient, never final."""
    adapter = market_adapter(emulator.url, kie.API_KEY)
    task = ProviderTask("t2", "sora-2", "kie-market")
    async with httpx.AsyncClient() as http:
        emulator.script("t2", [(500, {"code": 500, "msg": "oops"}, {})])
        with pytest.raises(ProviderUnavailable):
            await adapter.poll(task, http)
        emulator.script("t2", [(429, {"code": 429, "msg": "slow"}, {"Retry-After": "7"})])
        with pytest.raises(ProviderUnavailable) as limited:
            await adapter.poll(task, http)
        assert limited.value.rate_limited and limited.value.retry_after_s == 7
        emulator.script("t2", [(200, "<html>gateway</html>", {})])
        with pytest.raises(UnrecognizedResponse):
            await adapter.poll(task, http)
        closed = market_adapter("http://127.0.0.1:9", "k")
        with pytest.raises(ProviderUnavailable):
            await closed.poll(task, http)


def kie_config(tmp_path, emulator, market="code", **extra):
    """The service on the emulator; ``market="declarative"`` routes Market models to the
    declarative KIE Market section instead of the code adapter."""
    cfg = base_config(tmp_path, providers={"kie": {"base_url": emulator.url}}, **extra)
    if market == "declarative":
        routed = kie_declarative.config(emulator.url, kie.API_KEY)
        cfg["providers"].update(routed["providers"])
        cfg["models"] = routed["models"]
    return cfg


def post(client, task_id, model, **extra):
    resp = client.post(
        "/poll-video", json={"sessionId": "s", "taskId": task_id, "model": model, **extra}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["jobId"]


def finished(client, job_id, timeout=20.0):
    def check():
        body = client.get(f"/jobs/{job_id}").json()
        return body if body["status"] in ("succeeded", "failed") else None

    return wait_for(check, timeout)


@pytest.mark.parametrize("market", ["code", "declarative"])
def test_veo_and_market_jobs_complete_through_transient_trouble(tmp_path, emulator, market):
    """Veo and Market tasks finish through 500s, a 429 and garbage; only answers count."""
    video = f"{emulator.url}/files/a.mp4"
    emulator.script(
        "veo-1",
        [
            kie.veo_pending(),
            (500, {"code": 500, "msg": "x"}, {}),
            (200, "<html>bad gateway</html>", {}),
            kie.veo_pending(),
            kie.veo_success([video]),
        ],
    )
    emulator.script(
        "sora-1",
        [
            kie.market("queuing"),
            (429, {"code": 429, "msg": "slow"}, {"Retry-After": "1"}),
            kie.market("generating"),
            kie.market("success", [video]),
        ],
    )
    cfg = kie_config(tmp_path, emulator, market)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        veo = finished(c, post(c, "veo-1", "veo3_fast"))
        sora = finished(c, post(c, "sora-1", "sora-2-text-to-video"))
    assert veo["status"] == "succeeded" and veo["attempts"] == 3
    assert sora["status"] == "succeeded" and sora["attempts"] == 3
    assert sora["provider"] == ("kie-market" if market == "code" else kie_declarative.SECTION)
    assert veo["metadata"][0]["codec"] == "h264"
    calls = emulator.calls_for("sora-1")
    assert calls[0]["path"] == "/api/v1/jobs/recordInfo"
    after_429 = calls[2]["time"] - calls[1]["time"]
    assert after_429 >= 1.0, "Retry-After is honoured"
    assert emulator.calls_for("veo-1")[0]["path"] == "/api/v1/veo/record-info"


def test_min_interval_spaces_polls_of_one_task(tmp_path, emulator):
    """No task is polled more often than providers.kie.min_interval_s."""
    emulator.script(
        "spaced",
        [kie.veo_pending(), kie.veo_pending(), kie.veo_success([f"{emulator.url}/files/a.mp4"])],
    )
    cfg = kie_config(tmp_path, emulator)
    cfg["providers"]["kie"]["min_interval_s"] = 0.4
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        assert finished(c, post(c, "spaced", "veo3"))["status"] == "succeeded"
    times = [call["time"] for call in emulator.calls_for("spaced")]
    assert all(b - a >= 0.39 for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(
    ("answers", "code"),
    [
        ([kie.envelope(402, "Credits insufficient")], "insufficient_credits"),
        ([kie.veo_failed(400, "content policy violation: unsafe")], "moderation_rejected"),
        ([kie.envelope(404, "Task not found")], "unknown_provider_error"),
        ([kie.veo_success([])], "output_missing"),
    ],
)
def test_final_provider_answers_fail_with_named_codes(tmp_path, emulator, answers, code):
    """Final answers end the job failed with a normalized code and no provider text."""
    emulator.script("f", answers)
    with run_service(kie_config(tmp_path, emulator)) as url, httpx.Client(base_url=url) as c:
        done = finished(c, post(c, "f", "veo3"))
    assert done["status"] == "failed" and done["error"]["code"] == code
    assert "policy" not in json.dumps(done) and "Credits" not in json.dumps(done)


@pytest.mark.parametrize("market", ["code", "declarative"])
@pytest.mark.parametrize(
    ("answers", "code"),
    [
        ([kie.envelope(402, "Credits insufficient")], "insufficient_credits"),
        (
            [kie.market("fail", fail_code="400", fail_msg="content policy: unsafe")],
            "moderation_rejected",
        ),
        ([kie.envelope(404, "Task not found")], "unknown_provider_error"),
        ([kie.market("success", [])], "output_missing"),
    ],
)
def test_final_market_answers_fail_with_named_codes(tmp_path, emulator, market, answers, code):
    """Market tasks end failed with the same normalized codes through either adapter."""
    emulator.script("mf", answers)
    cfg = kie_config(tmp_path, emulator, market)
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        done = finished(c, post(c, "mf", "sora-2-text-to-video"))
    assert done["status"] == "failed" and done["error"]["code"] == code
    assert "policy" not in json.dumps(done) and "Credits" not in json.dumps(done)


def test_wrong_key_fails_with_auth_failed(tmp_path, emulator):
    """A refused API key fails the job with auth_failed."""
    emulator.script("k", [kie.veo_pending()])
    cfg = kie_config(tmp_path, emulator)
    cfg["providers"]["kie"]["api_key"] = "not-the-key"
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        done = finished(c, post(c, "k", "veo3"))
    assert done["error"]["code"] == "auth_failed"


@pytest.mark.parametrize("market", ["code", "declarative"])
def test_slow_task_goes_delayed_then_times_out(tmp_path, emulator, market):
    """Past max_attempts the job is delayed (and told so); past the deadline it fails."""
    emulator.script("slow", [kie.market("generating")])
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        polling = {"max_attempts": 2, "give_up_after_s": 1.5}
        cfg = kie_config(tmp_path, emulator, market, polling=polling)
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            job_id = post(c, "slow", "kling-2.6", callbackUrl=f"{hook}/h")
            wait_for(lambda: c.get(f"/jobs/{job_id}").json()["status"] == "delayed")
            delayed = c.get(f"/jobs/{job_id}").json()
            done = finished(c, job_id)
            wait_for(lambda: receiver.events("video.failed"))
    assert delayed["message"].startswith("This is taking longer than usual")
    assert done["status"] == "failed" and done["error"]["code"] == "provider_timeout"
    assert done["error"]["message"] == "The provider did not return a result in time."
    assert [e["body"]["event"] for e in receiver.events()] == ["video.delayed", "video.failed"]
    assert receiver.events()[0]["body"]["status"] == "delayed"


def test_result_url_that_is_not_video_fails_download(tmp_path, emulator):
    """A result URL serving HTML fails the job with download_failed, saying why."""
    emulator.script("html", [kie.veo_success([f"{emulator.url}/files/not-video"])])
    with run_service(kie_config(tmp_path, emulator)) as url, httpx.Client(base_url=url) as c:
        done = finished(c, post(c, "html", "veo3"))
    assert done["error"]["code"] == "download_failed"
    assert "not a video" in done["error"]["reason"]


def test_ssrf_guard_refuses_private_result_url(tmp_path, emulator):
    """With private URLs not allowed, a result URL on loopback fails with the reason."""
    emulator.script("ssrf", [kie.veo_success([f"{emulator.url}/files/a.mp4"])])
    emulator.script("meta", [kie.veo_success(["http://169.254.169.254/latest/meta-data"])])
    cfg = kie_config(tmp_path, emulator, security={"allow_private_urls": False})
    with run_service(cfg) as url, httpx.Client(base_url=url) as c:
        loop = finished(c, post(c, "ssrf", "veo3"))
        meta = finished(c, post(c, "meta", "veo3"))
    assert loop["error"]["code"] == "download_failed"
    assert "loopback" in loop["error"]["reason"]
    assert "metadata" in meta["error"]["reason"] or "link-local" in meta["error"]["reason"]
