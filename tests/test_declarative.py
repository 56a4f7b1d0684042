"""Declarative providers: a YAML section is an adapter, checked at load, polled over real HTTP,
and a user-declared provider goes end to end through the running service."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import emu_acme as acme
from tests.support.servers import serve_in_thread
from tests.support.service import CallbackReceiver, base_config, deep_merge, run_service, wait_for
from webhook_poller.adapters.declarative import DeclarativeAdapter
from webhook_poller.config import interpolate, load_settings, settings_from_mapping
from webhook_poller.errors import (
    ConfigError,
    ProviderTaskFailed,
    ProviderUnavailable,
    UnrecognizedResponse,
)
from webhook_poller.interfaces import PluginContext, PollStatus, ProviderTask
from webhook_poller.model import ErrorCode
from webhook_poller.services import build_services


@pytest.fixture
def emulator():
    emu = acme.AcmeEmulator()
    with serve_in_thread(emu.app) as url:
        emu.url = url
        yield emu


def acme_tree(base_url: str, key: str = acme.API_KEY) -> dict:
    """The README's YAML example pointed at ``base_url``, interpolated like a config file."""
    return interpolate(yaml.safe_load(acme.ACME_YAML.format(base_url=base_url)), {"ACME_KEY": key})


def acme_adapter(base_url: str, key: str = acme.API_KEY) -> DeclarativeAdapter:
    settings = settings_from_mapping(acme_tree(base_url, key))
    options = settings.provider_options("acme")
    return DeclarativeAdapter({**options, "name": "acme"}, PluginContext(settings))


def test_yaml_file_with_declarative_provider_loads(tmp_path):
    """The README example loads from a YAML file with ${ACME_KEY}; the model routes to it."""
    path = tmp_path / "config.yaml"
    path.write_text(acme.ACME_YAML.format(base_url="https://api.acme.example"))
    settings = load_settings(path, {"ACME_KEY": "k-1"})
    assert settings.models == {"acme-*": "acme"}
    assert settings.providers["acme"]["api_key"] == "k-1"
    with pytest.raises(ConfigError, match=r"ACME_KEY"):
        load_settings(path, {})


def test_readme_example_is_valid_and_built_as_a_declarative_adapter(tmp_path):
    """The README's worked example loads, and its model routes to a DeclarativeAdapter named
    after the section, with its own gate and the documented defaults."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### Declarative providers", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "config.yaml"
    path.write_text(example)
    settings = load_settings(path, {"ACME_KEY": "k-2"})
    services = build_services(settings)
    adapter = services.adapters[services.router.adapter_for("acme-v2") or ""]
    assert isinstance(adapter, DeclarativeAdapter) and adapter.name == "acme"
    assert services.gates["acme"].section == "acme"
    assert services.gates["acme"].limiter is not None  # max_requests_per_s defaults to 10
    task = ProviderTask("a b", "acme-v2", "acme")
    assert adapter.status_request(task) == (
        "https://api.acme.example/v1/jobs/a%20b",
        {"Accept": "application/json", "Authorization": "Bearer k-2"},
    )


def broken(change: dict) -> dict:
    """The example with some keys of its section replaced."""
    tree = acme_tree("https://api.acme.example")
    tree["providers"]["acme"].update(change)
    return tree


@pytest.mark.parametrize(
    ("change", "key", "why"),
    [
        ({"state": "data.[status"}, "providers.acme.state", "JMESPath"),
        ({"video_urls": "data.outputs[[].url"}, "providers.acme.video_urls", "JMESPath"),
        ({"states": {"done": "finished"}}, "providers.acme.states.done", "succeeded"),
        ({"states": {"queued": "running"}}, "providers.acme.states", "succeeded"),
        (
            {"error_codes": [{"match": "nsfw", "code": "naughty"}]},
            "providers.acme.error_codes.0.code",
            "moderation_rejected",
        ),
        (
            {"error_codes": [{"match": "(nsfw", "code": "moderation_rejected"}]},
            "providers.acme.error_codes.0.match",
            "regular expression",
        ),
        (
            {"status": {"url": "{base_url}/v1/jobs/{task}"}},
            "providers.acme.status.url",
            "placeholder",
        ),
        (
            {"status": {"url": "https://elsewhere.example/v1/jobs/{taskId}"}},
            "providers.acme",
            "host",
        ),
        (
            {"status": {"url": "{taskId}"}},
            "providers.acme",
            "host",
        ),
        ({"stats": "data.status"}, "providers.acme.stats", "Extra inputs"),
    ],
)
def test_bad_declarative_sections_are_one_clear_error(change, key, why):
    """A bad expression, state target, error code, regex, placeholder or host names its key."""
    with pytest.raises(ConfigError) as err:
        settings_from_mapping(broken(change))
    assert key in str(err.value) and why in str(err.value)
    assert acme.API_KEY not in str(err.value)


def test_unknown_type_names_the_known_adapters():
    """``type: <name>`` must be an adapter that exists."""
    with pytest.raises(ConfigError, match=r"providers\.acme\.type: .*declarative"):
        settings_from_mapping(broken({"type": "declaritive"}))


async def test_polls_read_every_shape_over_http(emulator):
    """202 pending, capitalised states, numbers as strings, outputs as a JSON string."""
    adapter = acme_adapter(emulator.url)
    a, b = f"{emulator.url}/files/a.mp4", "https://cdn.acme.example/b.mp4"
    emulator.script(
        "j1",
        [
            acme.queued("12"),
            acme.running(40),
            acme.done([a]),
            acme.done([a, b, a], as_string=False),
            acme.done([]),
        ],
    )
    task = ProviderTask("j1", "acme-v1", "acme")
    async with httpx.AsyncClient() as http:
        first = await adapter.poll(task, http)
        second = await adapter.poll(task, http)
        one = await adapter.poll(task, http)
        several = await adapter.poll(task, http)
        empty = await adapter.poll(task, http)
    assert first.status is PollStatus.PENDING and first.progress == pytest.approx(0.12)
    assert second.status is PollStatus.PENDING and second.progress == pytest.approx(0.4)
    assert one.status is PollStatus.SUCCEEDED and one.video_urls == (a,)
    assert several.video_urls == (a, b)
    assert empty.status is PollStatus.SUCCEEDED and empty.video_urls == ()
    assert emulator.calls_to("/v1/jobs/")[0]["auth"] == f"Bearer {acme.API_KEY}"


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Blocked: NSFW content detected", ErrorCode.MODERATION_REJECTED),
        ("GPU exploded", ErrorCode.UNKNOWN_PROVIDER_ERROR),
    ],
)
async def test_failures_map_through_error_codes(emulator, message, code):
    """The first error_codes regex found in the message decides; the text stays in detail."""
    emulator.script("f", [acme.error(message)])
    async with httpx.AsyncClient() as http:
        result = await acme_adapter(emulator.url).poll(ProviderTask("f", "acme-v1", "acme"), http)
    assert result.status is PollStatus.FAILED and result.error_code is code
    assert result.detail == message


async def test_http_trouble_is_transient_and_bad_keys_final(emulator):
    """429 with Retry-After, 5xx, HTML, truncated JSON and unknown states are never final."""
    adapter = acme_adapter(emulator.url)
    task = ProviderTask("t", "acme-v1", "acme")
    async with httpx.AsyncClient() as http:
        emulator.script("t", [(429, {"error": "slow down"}, {"Retry-After": "7"})])
        with pytest.raises(ProviderUnavailable) as limited:
            await adapter.poll(task, http)
        assert limited.value.rate_limited and limited.value.retry_after_s == 7
        emulator.script("t", [(503, {"error": "busy"}, {})])
        with pytest.raises(ProviderUnavailable):
            await adapter.poll(task, http)
        for body in ("<html>bad gateway</html>", '{"data": {"status": "do', "[]"):
            emulator.script("t", [(200, body, {})])
            with pytest.raises(UnrecognizedResponse):
                await adapter.poll(task, http)
        emulator.script("t", [(200, {"data": {"status": "levitating"}}, {})])
        with pytest.raises(UnrecognizedResponse):
            await adapter.poll(task, http)
        with pytest.raises(ProviderTaskFailed) as unknown:
            await adapter.poll(ProviderTask("nope", "acme-v1", "acme"), http)
        assert unknown.value.code is ErrorCode.UNKNOWN_PROVIDER_ERROR
        with pytest.raises(ProviderTaskFailed) as auth:
            await acme_adapter(emulator.url, "wrong-secret").poll(task, http)
        assert auth.value.code is ErrorCode.AUTH_FAILED
        assert "wrong-secret" not in f"{auth.value} {auth.value.detail}"
        closed = acme_adapter("http://127.0.0.1:9")
        with pytest.raises(ProviderUnavailable):
            await closed.poll(task, http)


def test_numeric_and_capitalised_state_words():
    """`{0: running, 1: succeeded}` from YAML (int keys) and "Done" match answers' words."""
    tree = acme_tree("https://api.acme.example")
    tree["providers"]["acme"].update(
        yaml.safe_load("{state: data.flag, states: {0: running, 1: succeeded, Done: succeeded}}")
    )
    settings = settings_from_mapping(tree)
    adapter = DeclarativeAdapter(settings.provider_options("acme"), PluginContext(settings))
    assert adapter.parse({"data": {"flag": "0"}}).status is PollStatus.PENDING
    assert adapter.parse({"data": {"flag": 1}}).status is PollStatus.SUCCEEDED
    assert adapter.parse({"data": {"flag": "DONE"}}).status is PollStatus.SUCCEEDED
    with pytest.raises(UnrecognizedResponse):
        adapter.parse({"data": {"flag": 2}})


async def test_task_id_is_one_encoded_path_segment(emulator):
    """A task id with slashes or a '?' stays inside its path segment."""
    emulator.script("ops/1?x=2", [acme.running()])
    async with httpx.AsyncClient() as http:
        result = await acme_adapter(emulator.url).poll(
            ProviderTask("ops/1?x=2", "acme-v1", "acme"), http
        )
    assert result.status is PollStatus.PENDING
    assert emulator.calls_to("/v1/jobs/")[0]["raw_path"] == "/v1/jobs/ops%2F1%3Fx%3D2"


def test_declared_provider_goes_end_to_end(tmp_path, emulator):
    """POST /poll-video for acme-v1: polled through 202s, stored, the callback is sent once,
    and the key went to the status host only (not with the video download)."""
    video = f"{emulator.url}/files/a.mp4"
    emulator.script("job-1", [acme.queued(), acme.running(), acme.done([video])])
    receiver = CallbackReceiver()
    with receiver.serving() as hook:
        cfg = deep_merge(base_config(tmp_path), acme_tree(emulator.url))
        cfg["models"] = {**cfg["models"], "demo": "demo"}
        with run_service(cfg) as url, httpx.Client(base_url=url) as c:
            resp = c.post(
                "/poll-video",
                json={
                    "sessionId": "s",
                    "taskId": "job-1",
                    "model": "acme-v1",
                    "callbackUrl": f"{hook}/done",
                },
            )
            assert resp.status_code == 200, resp.text
            job_id = resp.json()["jobId"]

            def finished():
                body = c.get(f"/jobs/{job_id}").json()
                return body if body["status"] in ("succeeded", "failed") else None

            job = wait_for(finished)
            stored = c.get(job["videoUrls"][0])
            wait_for(lambda: receiver.events("video.succeeded"))
    assert job["status"] == "succeeded" and job["provider"] == "acme"
    assert job["attempts"] == 3
    assert stored.status_code == 200 and stored.content == emulator.video_bytes
    assert job["metadata"][0]["codec"] == "h264"
    [event] = receiver.events()
    assert event["verified"] and event["body"]["provider"] == "acme"
    # Links are signed when they are made, so the two answers may differ in expires/sig.
    paths = [u.split("?")[0] for u in job["videoUrls"]]
    assert [u.split("?")[0] for u in event["body"]["videoUrls"]] == paths
    assert all(c["auth"] == f"Bearer {acme.API_KEY}" for c in emulator.calls_to("/v1/jobs/"))
    assert [c["auth"] for c in emulator.calls_to("/files/")] == [""]
