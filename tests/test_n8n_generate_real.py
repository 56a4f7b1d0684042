"""integrations/n8n/generate.json on a real n8n 2.8.4, end to end.

One n8n, one service and one KIE emulator for the module, as in tests/test_n8n_real.py. A
POST to the workflow's webhook makes ONE call to our /generate (``Idempotency-Key`` from the
execution, ``callbackUrl`` = ``$execution.resumeUrl``); the service creates the KIE task,
polls it and resumes the parked Wait node with the event. The emulator counts create calls:
one per run, also when n8n retries /generate after a lost answer.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.support.kie_emulator import KieEmulator, veo_failed, veo_pending, veo_success
from tests.support.n8n import N8nServer, ReverseProxy, n8n_missing_reason
from tests.support.servers import serve_in_thread
from tests.support.service import base_config, run_service, wait_for, wait_status

WORKFLOW = Path(__file__).resolve().parents[1] / "integrations" / "n8n" / "generate.json"
TOKEN = "n8n-test-service-token-456"
MISSING = n8n_missing_reason()

pytestmark = [
    pytest.mark.n8n,
    pytest.mark.timeout(600),
    pytest.mark.skipif(MISSING is not None, reason=f"n8n tests skipped: {MISSING}"),
]


class LossyProxy(ReverseProxy):
    """A ReverseProxy that can lose answers: the next ``lose[path]`` answers from the target
    to ``path`` are replaced by a 502 (the target already acted on the request)."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.lose: dict[str, int] = {}

    async def forward(self, request: Request) -> Response:
        answer = await super().forward(request)
        if self.lose.get(request.url.path, 0) > 0:
            self.lose[request.url.path] -= 1
            return JSONResponse({"error": "bad gateway"}, status_code=502)
        return answer


@dataclass
class Stack:
    n8n: N8nServer
    kie: KieEmulator
    kie_url: str
    service: httpx.Client
    to_service: LossyProxy  # n8n -> service (/generate answers can be held back or lost)
    to_n8n: ReverseProxy  # service -> n8n (our callbacks to the resume URL)
    workflow_id: str

    def trigger(self, body: dict[str, Any]) -> str:
        """POST to the workflow's webhook; return the id of the execution it started (read
        from the context the workflow sends to /generate: the public API's execution list
        leaves out the executions n8n holds in memory)."""
        resp = httpx.post(f"{self.n8n.url}/webhook/webhook-poller-generate", json=body, timeout=30)
        assert resp.status_code == 200, resp.text

        def sent() -> str | None:
            for request in self.generate_requests(body["sessionId"]):
                execution_id = str(request["context"]["executionId"])
                resume = f"{self.n8n.webhook_url}webhook-waiting/{execution_id}"
                assert request["callbackUrl"] == resume, request
                return execution_id
            return None

        try:
            return str(wait_for(sent, timeout=30, interval=0.2))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nn8n log:\n{self.n8n.logs()[-3000:]}") from None

    def generate_requests(self, session_id: str) -> list[dict[str, Any]]:
        """The bodies n8n sent to /generate for ``session_id``."""
        bodies = [json.loads(e["request"]) for e in self.to_service.seen("/generate")]
        return [b for b in bodies if b["sessionId"] == session_id]

    def creates_for(self, prompt: str) -> list[dict[str, Any]]:
        """The create calls KIE received for ``prompt``."""
        return [c for c in self.kie.creates if (c["body"] or {}).get("prompt") == prompt]

    def wait_execution(self, execution_id: str, states: set[str], timeout: float = 60) -> Any:
        def reached() -> dict[str, Any] | None:
            execution = self.n8n.execution(execution_id)
            return execution if execution["status"] in states else None

        try:
            return wait_for(reached, timeout=timeout, interval=0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nn8n log:\n{self.n8n.logs()[-3000:]}") from None

    def job_for(self, session_id: str, states: set[str] | None = None) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            jobs = self.service.get("/jobs", params={"sessionId": session_id}).json()["jobs"]
            return jobs[0] if jobs else None

        job_id = wait_for(found, timeout=30)["jobId"]
        if states:
            return dict(wait_status(self.service, job_id, states))
        return dict(self.service.get(f"/jobs/{job_id}").json())

    def finished(self, execution_id: str) -> dict[str, Any]:
        execution = dict(self.wait_execution(execution_id, {"success", "error", "crashed"}))
        assert execution["status"] == "success", execution["data"]["resultData"].get("error")
        return execution


def node_outputs(execution: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """The first output item of each run of ``node`` in the execution."""
    runs = execution["data"]["resultData"]["runData"].get(node, [])
    return [run["data"]["main"][0][0]["json"] for run in runs if run["data"]["main"][0]]


def same_link(a: str, b: str) -> bool:
    """Two signed links to the same video (each answer signs with a fresh expiry)."""
    return a.split("?")[0] == b.split("?")[0] and "sig=" in a


def deployable(server: N8nServer) -> dict[str, Any]:
    """The shipped workflow, with the Header Auth credential a user would pick."""
    poller = server.create_credential(
        "webhook-poller token",
        "httpHeaderAuth",
        {"name": "Authorization", "value": f"Bearer {TOKEN}"},
    )
    workflow = copy.deepcopy(json.loads(WORKFLOW.read_text()))
    for node in workflow["nodes"]:
        for ref in node.get("credentials", {}).values():
            assert ref["name"] == "webhook-poller token", ref
            ref["id"] = poller
    return dict(workflow)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("n8n-generate")
    kie = KieEmulator()
    with contextlib.ExitStack() as stack:
        kie_url = stack.enter_context(serve_in_thread(kie.app))
        kie.base_url = kie_url
        cfg = base_config(
            tmp,
            server={"auth_token": TOKEN},
            providers={"kie": {"base_url": kie_url}},
            # a job still pending after 5 polls sends video.delayed: the workflow waits again
            polling={"max_attempts": 5},
        )
        service_url = stack.enter_context(run_service(cfg))
        to_service = LossyProxy(service_url)
        proxy_url = stack.enter_context(to_service.serving())
        n8n = N8nServer(tmp, {"WEBHOOK_POLLER_URL": proxy_url})
        to_n8n = ReverseProxy(n8n.url)
        n8n.webhook_url = stack.enter_context(to_n8n.serving()) + "/"
        n8n.start()
        stack.callback(n8n.stop)
        n8n.set_up_owner()
        workflow_id = n8n.deploy(deployable(n8n))
        client = stack.enter_context(
            httpx.Client(base_url=service_url, headers={"Authorization": f"Bearer {TOKEN}"})
        )
        yield Stack(n8n, kie, kie_url, client, to_service, to_n8n, workflow_id)


def test_one_generate_call_resumes_the_wait_node_onto_the_succeeded_branch(stack: Stack):
    """One /generate call makes one KIE task; the Wait node is resumed by video.delayed and
    waits again, then video.succeeded resumes it onto the succeeded branch with our video."""
    stack.kie.generate_script = lambda base, body: [veo_pending()]
    prompt = "a lighthouse in a storm, generated"
    execution_id = stack.trigger({"prompt": prompt, "sessionId": "gen-ok"})
    [create] = wait_for(lambda: stack.creates_for(prompt), timeout=30)
    assert create["body"]["model"] == "veo3_fast" and create["body"]["aspect_ratio"] == "16:9"
    job = stack.job_for("gen-ok")
    assert job["taskId"] == create["task_id"] and job["model"] == "veo3_fast"
    resume = f"/webhook-waiting/{execution_id}"
    wait_for(lambda: [e for e in stack.to_n8n.seen(resume) if e["status"] == 200], timeout=30)
    stack.wait_execution(execution_id, {"waiting"})  # parked again after video.delayed

    video_url = f"{stack.kie_url}/files/{create['task_id']}.mp4"
    stack.kie.script(create["task_id"], [veo_success([video_url])])
    execution = stack.finished(execution_id)
    waits = node_outputs(execution, "Wait for the video")
    assert [w["body"]["event"] for w in waits] == ["video.delayed", "video.succeeded"]
    assert all(w["headers"]["webhook-signature"].startswith("v1,") for w in waits)
    [ready] = node_outputs(execution, "Video ready")
    assert node_outputs(execution, "Video failed") == []
    done = stack.job_for("gen-ok", {"succeeded"})
    assert same_link(ready["videoUrl"], done["videoUrls"][0]) and ready["jobId"] == job["jobId"]
    assert ready["sessionId"] == "gen-ok" and ready["durationS"] > 0
    assert len(stack.creates_for(prompt)) == 1 and len(stack.generate_requests("gen-ok")) == 1
    assert TOKEN not in json.dumps(execution["data"]["resultData"]["runData"])

    # the workflow sent the Idempotency-Key: the same request with it is the same job
    [sent] = stack.generate_requests("gen-ok")
    key = f"n8n-{stack.workflow_id}-{execution_id}"
    again = stack.service.post("/generate", json=sent, headers={"Idempotency-Key": key})
    assert again.status_code == 200 and again.json()["jobId"] == job["jobId"], again.text
    assert len(stack.creates_for(prompt)) == 1


def test_failed_generation_ends_on_the_failed_branch_with_the_error_code(stack: Stack):
    """A task KIE fails resumes the Wait node with video.failed, onto the failed branch."""
    stack.kie.generate_script = lambda base, body: [veo_failed(400, "content policy violation")]
    prompt = "something refused, generated"
    execution = stack.finished(stack.trigger({"prompt": prompt, "sessionId": "gen-fail"}))
    [failed] = node_outputs(execution, "Video failed")
    assert node_outputs(execution, "Video ready") == []
    job = stack.job_for("gen-fail", {"failed"})
    assert failed["errorCode"] == job["error"]["code"] and failed["jobId"] == job["jobId"]
    assert failed["userMessage"] == job["message"]
    assert len(stack.creates_for(prompt)) == 1


def test_lost_generate_answer_is_retried_by_n8n_without_a_second_task(stack: Stack):
    """The service took the request but n8n got a 502: the node's retry sends the same
    Idempotency-Key, gets the same job, and KIE sees one create call; the run still ends on
    the succeeded branch (the callback may come before the Wait node parks: 409, retried)."""
    stack.kie.generate_script = lambda base, body: [
        veo_pending(),
        veo_success([f"{base}/files/lost-answer.mp4"]),
    ]
    stack.to_service.lose["/generate"] = 1
    prompt = "a lost answer, generated"
    try:
        execution_id = stack.trigger({"prompt": prompt, "sessionId": "gen-lost"})
        execution = stack.finished(execution_id)
    finally:
        stack.to_service.lose.clear()
    sent = stack.generate_requests("gen-lost")
    assert len(sent) == 2 and sent[0] == sent[1], sent
    assert len(stack.creates_for(prompt)) == 1
    [ready] = node_outputs(execution, "Video ready")
    [generated] = node_outputs(execution, "Generate with webhook-poller")
    job = stack.job_for("gen-lost", {"succeeded"})
    assert generated["jobId"] == job["jobId"] == ready["jobId"]
    assert same_link(ready["videoUrl"], job["videoUrls"][0])
    assert len(stack.service.get("/jobs", params={"sessionId": "gen-lost"}).json()["jobs"]) == 1


def test_callback_before_the_wait_node_parks_gets_409_and_is_retried(stack: Stack):
    """n8n is still waiting for /generate's answer when the video is done: our callback gets
    409 "is running already", is tried again, and resumes the execution once it has parked."""
    stack.kie.generate_script = lambda base, body: [veo_success([f"{base}/files/race.mp4"])]
    stack.to_service.hold_paths = {"/generate"}
    stack.to_service.hold_s = 3.0
    try:
        execution_id = stack.trigger({"prompt": "a quick one, generated", "sessionId": "gen-race"})
        execution = stack.finished(execution_id)
    finally:
        stack.to_service.hold_s = 0.0
    [ready] = node_outputs(execution, "Video ready")
    job = stack.job_for("gen-race", {"succeeded"})
    assert same_link(ready["videoUrl"], job["videoUrls"][0])
    answers = stack.to_n8n.seen(f"/webhook-waiting/{execution_id}")
    statuses = [a["status"] for a in answers]
    assert statuses[0] == 409 and "is running already" in answers[0]["text"], answers
    assert statuses[-1] == 200 and statuses.count(200) == 1, statuses
    assert len(stack.creates_for("a quick one, generated")) == 1


def test_manual_run_from_the_editor_uses_the_settings_defaults(stack: Stack):
    """A run started by hand (the editor's Execute button) uses the Settings node's default
    prompt, model and session, and is resumed by our callback like a webhook-started one."""
    stack.kie.generate_script = lambda base, body: [veo_success([f"{base}/files/manual.mp4"])]
    before = len(stack.kie.creates)
    rest = stack.n8n.rest
    workflow = rest.get(f"/rest/workflows/{stack.workflow_id}").json()["data"]
    resp = rest.post(
        f"/rest/workflows/{stack.workflow_id}/run",
        json={"workflowData": workflow, "triggerToStartFrom": {"name": "Start (manual)"}},
    )
    assert resp.status_code == 200, resp.text
    execution_id = str(resp.json()["data"]["executionId"])
    execution = stack.finished(execution_id)
    assert execution["mode"] == "manual"
    [ready] = node_outputs(execution, "Video ready")
    assert ready["sessionId"] == f"n8n-{execution_id}"
    [create] = stack.kie.creates[before:]
    assert create["body"]["prompt"].startswith("A red fox")
    job = stack.job_for(f"n8n-{execution_id}", {"succeeded"})
    assert same_link(ready["videoUrl"], job["videoUrls"][0])
