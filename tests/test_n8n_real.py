"""integrations/n8n/poll-video.json on a real n8n 2.8.4, end to end.

One n8n, one service and one KIE emulator for the module. n8n imports and activates the
shipped workflow through its public API; a POST to its webhook starts a generation at the
emulated KIE, hands the task to /poll-video with ``$execution.resumeUrl`` and parks on the
Wait node until our signed callback resumes it. n8n's resume URLs point at a recording
proxy, so the tests see exactly what n8n answered our callbacks (its 409s included).
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

from tests.support.kie_emulator import API_KEY, KieEmulator, veo_failed, veo_pending, veo_success
from tests.support.n8n import N8nServer, ReverseProxy, n8n_missing_reason
from tests.support.servers import serve_in_thread
from tests.support.service import base_config, run_service, wait_for, wait_status

WORKFLOW = Path(__file__).resolve().parents[1] / "integrations" / "n8n" / "poll-video.json"
TOKEN = "n8n-test-service-token-123"
MISSING = n8n_missing_reason()

pytestmark = [
    pytest.mark.n8n,
    pytest.mark.timeout(600),
    pytest.mark.skipif(MISSING is not None, reason=f"n8n tests skipped: {MISSING}"),
]


@dataclass
class Stack:
    n8n: N8nServer
    kie: KieEmulator
    kie_url: str
    service: httpx.Client
    to_service: ReverseProxy  # n8n -> service (/poll-video answers can be held back)
    to_n8n: ReverseProxy  # service -> n8n (our callbacks to the resume URL)
    workflow_id: str

    def trigger(self, body: dict[str, Any]) -> str:
        """POST to the workflow's webhook; return the id of the execution it started.

        The public API's execution list leaves out executions n8n holds in memory (waiting
        ones too), so the id is read from the context the workflow sends to /poll-video.
        """
        resp = httpx.post(f"{self.n8n.url}/webhook/webhook-poller-veo", json=body, timeout=30)
        assert resp.status_code == 200, resp.text

        def handed_over() -> str | None:
            for exchange in self.to_service.seen("/poll-video"):
                sent = json.loads(exchange["request"])
                if sent["sessionId"] == body["sessionId"]:
                    assert exchange["status"] == 200, exchange
                    execution_id = str(sent["context"]["executionId"])
                    resume = f"{self.n8n.webhook_url}webhook-waiting/{execution_id}"
                    assert sent["callbackUrl"] == resume, sent
                    return execution_id
            return None

        try:
            return str(wait_for(handed_over, timeout=30, interval=0.2))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nn8n log:\n{self.n8n.logs()[-3000:]}") from None

    def wait_execution(self, execution_id: str, states: set[str], timeout: float = 60) -> Any:
        def reached() -> dict[str, Any] | None:
            execution = self.n8n.execution(execution_id)
            return execution if execution["status"] in states else None

        try:
            return wait_for(reached, timeout=timeout, interval=0.3)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nn8n log:\n{self.n8n.logs()[-3000:]}") from None

    def job_for(self, session_id: str, states: set[str] | None = None) -> dict[str, Any]:
        """The service's job for ``session_id``, once it is in one of ``states`` if given
        (n8n can finish before the service has recorded the delivery and left "notifying")."""

        def found() -> dict[str, Any] | None:
            jobs = self.service.get("/jobs", params={"sessionId": session_id}).json()["jobs"]
            return jobs[0] if jobs else None

        job_id = wait_for(found, timeout=30)["jobId"]
        if states:
            return dict(wait_status(self.service, job_id, states))
        return dict(self.service.get(f"/jobs/{job_id}").json())


def node_outputs(execution: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """The first output item of each run of ``node`` in the execution."""
    runs = execution["data"]["resultData"]["runData"].get(node, [])
    return [run["data"]["main"][0][0]["json"] for run in runs if run["data"]["main"][0]]


def same_link(a: str, b: str) -> bool:
    """Two signed links to the same video (each answer signs with a fresh expiry)."""
    return a.split("?")[0] == b.split("?")[0] and "sig=" in a


def deployable(server: N8nServer) -> dict[str, Any]:
    """The shipped workflow, with the two Header Auth credentials a user would pick."""
    kie = server.create_credential(
        "KIE API key", "httpHeaderAuth", {"name": "Authorization", "value": f"Bearer {API_KEY}"}
    )
    poller = server.create_credential(
        "webhook-poller token",
        "httpHeaderAuth",
        {"name": "Authorization", "value": f"Bearer {TOKEN}"},
    )
    workflow = copy.deepcopy(json.loads(WORKFLOW.read_text()))
    ids = {"KIE API key": kie, "webhook-poller token": poller}
    for node in workflow["nodes"]:
        for ref in node.get("credentials", {}).values():
            ref["id"] = ids[ref["name"]]
    return dict(workflow)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("n8n")
    kie = KieEmulator()
    with contextlib.ExitStack() as stack:
        kie_url = stack.enter_context(serve_in_thread(kie.app))
        cfg = base_config(
            tmp,
            server={"auth_token": TOKEN},
            providers={"kie": {"base_url": kie_url}},
            # a job still pending after 5 polls sends video.delayed: the workflow waits again
            polling={"max_attempts": 5},
        )
        service_url = stack.enter_context(run_service(cfg))
        to_service = ReverseProxy(service_url)
        proxy_url = stack.enter_context(to_service.serving())
        n8n = N8nServer(tmp, {"WEBHOOK_POLLER_URL": proxy_url, "KIE_BASE_URL": kie_url})
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


def test_wait_node_is_resumed_by_our_callback_and_ends_on_the_succeeded_branch(stack: Stack):
    """The execution parks on the Wait node, is resumed by video.delayed and waits again, then
    video.succeeded resumes it onto the succeeded branch with our video URL."""
    stack.kie.generate_script = lambda base, body: [veo_pending()]
    prompt = "a lighthouse in a storm"
    execution_id = stack.trigger({"prompt": prompt, "sessionId": "n8n-ok"})
    [generated] = [g for g in stack.kie.generated if g["body"]["prompt"] == prompt]
    assert generated["body"]["model"] == "veo3_fast"

    job = stack.job_for("n8n-ok")
    assert job["taskId"] == generated["task_id"] and job["model"] == "veo3_fast"
    resume = f"/webhook-waiting/{execution_id}"
    wait_for(lambda: [e for e in stack.to_n8n.seen(resume) if e["status"] == 200], timeout=30)
    stack.wait_execution(execution_id, {"waiting"})  # parked again after video.delayed

    video_url = f"{stack.kie_url}/files/{generated['task_id']}.mp4"
    stack.kie.script(generated["task_id"], [veo_success([video_url])])
    execution = stack.wait_execution(execution_id, {"success", "error", "crashed"})
    assert execution["status"] == "success", execution["data"]["resultData"].get("error")

    waits = node_outputs(execution, "Wait for the video")
    assert [w["body"]["event"] for w in waits] == ["video.delayed", "video.succeeded"]
    assert all(w["headers"]["webhook-signature"].startswith("v1,") for w in waits)
    [ready] = node_outputs(execution, "Video ready")
    assert node_outputs(execution, "Video failed") == []
    done = stack.job_for("n8n-ok", {"succeeded"})
    assert same_link(ready["videoUrl"], done["videoUrls"][0]) and ready["jobId"] == job["jobId"]
    assert ready["sessionId"] == "n8n-ok" and ready["durationS"] > 0
    got = httpx.get(ready["videoUrl"])
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4"
    assert TOKEN not in json.dumps(execution["data"]["resultData"]["runData"]["Video ready"])


def test_failed_task_ends_on_the_failed_branch_with_the_error_code(stack: Stack):
    """A generation KIE fails resumes the Wait node with video.failed, onto the failed branch."""
    stack.kie.generate_script = lambda base, body: [veo_failed(400, "content policy violation")]
    execution_id = stack.trigger({"prompt": "something refused", "sessionId": "n8n-fail"})
    execution = stack.wait_execution(execution_id, {"success", "error", "crashed"})
    assert execution["status"] == "success", execution["data"]["resultData"].get("error")
    [failed] = node_outputs(execution, "Video failed")
    assert node_outputs(execution, "Video ready") == []
    job = stack.job_for("n8n-fail", {"failed"})
    assert failed["errorCode"] == job["error"]["code"] and failed["jobId"] == job["jobId"]
    assert failed["userMessage"] == job["message"]


def test_callback_before_the_wait_node_parks_gets_409_and_is_retried(stack: Stack):
    """n8n is still waiting for /poll-video's answer when the video is done: our callback gets
    409 "is running already", is tried again, and resumes the execution once it has parked."""
    stack.kie.generate_script = lambda base, body: [veo_success([f"{base}/files/race.mp4"])]
    stack.to_service.hold_paths = {"/poll-video"}
    stack.to_service.hold_s = 3.0
    try:
        execution_id = stack.trigger({"prompt": "a quick one", "sessionId": "n8n-race"})
        execution = stack.wait_execution(execution_id, {"success", "error", "crashed"})
    finally:
        stack.to_service.hold_s = 0.0
    assert execution["status"] == "success", execution["data"]["resultData"].get("error")
    [ready] = node_outputs(execution, "Video ready")
    job = stack.job_for("n8n-race", {"succeeded"})
    assert same_link(ready["videoUrl"], job["videoUrls"][0])

    answers = stack.to_n8n.seen(f"/webhook-waiting/{execution_id}")
    statuses = [a["status"] for a in answers]
    assert statuses[0] == 409 and "is running already" in answers[0]["text"], answers
    assert statuses[-1] == 200 and statuses.count(200) == 1, statuses

    def recorded() -> dict[str, Any] | None:
        rows = stack.service.get(f"/jobs/{job['jobId']}").json()["deliveries"]
        [row] = [d for d in rows if d["target"] == "callback"]
        return row if row["status"] == "sent" else None

    assert wait_for(recorded)["attempts"] == len(answers)


def test_manual_run_from_the_editor_uses_the_settings_defaults(stack: Stack):
    """A run started by hand (the editor's Execute button) uses the Settings node's default
    prompt and session, and is resumed by our callback like a webhook-started one."""
    stack.kie.generate_script = lambda base, body: [veo_success([f"{base}/files/manual.mp4"])]
    rest = stack.n8n.rest
    workflow = rest.get(f"/rest/workflows/{stack.workflow_id}").json()["data"]
    resp = rest.post(
        f"/rest/workflows/{stack.workflow_id}/run",
        json={"workflowData": workflow, "triggerToStartFrom": {"name": "Start (manual)"}},
    )
    assert resp.status_code == 200, resp.text
    execution_id = str(resp.json()["data"]["executionId"])
    execution = stack.wait_execution(execution_id, {"success", "error", "crashed"})
    assert execution["status"] == "success", execution["data"]["resultData"].get("error")
    assert execution["mode"] == "manual"
    [ready] = node_outputs(execution, "Video ready")
    assert ready["sessionId"] == f"n8n-{execution_id}"
    assert stack.kie.generated[-1]["body"]["prompt"].startswith("A red fox")
    job = stack.job_for(f"n8n-{execution_id}", {"succeeded"})
    assert same_link(ready["videoUrl"], job["videoUrls"][0])
