"""integrations/n8n/generate.json read as a file, for machines without n8n: one /generate
call with the fields /generate takes, an Idempotency-Key from the execution, a Wait node that
outlasts our polling, and nothing a user must keep secret or change written into it.
(tests/test_n8n_generate_real.py runs it on a real n8n.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from webhook_poller.config import PollingSettings
from webhook_poller.generate import FIELDS

WORKFLOW = Path(__file__).resolve().parents[1] / "integrations" / "n8n" / "generate.json"
UNIT_S = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


def workflow() -> dict[str, Any]:
    return dict(json.loads(WORKFLOW.read_text()))


def nodes_by_type() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for node in workflow()["nodes"]:
        out.setdefault(node["type"].rsplit(".", 1)[-1], []).append(node)
    return out


def top_level_keys(expression: str) -> list[str]:
    """The keys of the outermost object literal in ``JSON.stringify({ ... })``."""
    body = expression[expression.index("JSON.stringify({") + len("JSON.stringify(") :]
    depth, outer = 0, ""
    for char in body:
        depth += (char in "{[(") - (char in "}])")
        if depth == 0:
            break
        outer += char if depth == 1 else " "
    return re.findall(r"(\w+)\s*:", outer)


def test_one_request_to_generate_with_an_idempotency_key_and_the_resume_url():
    """The only HTTP Request goes to /generate with Header Auth, an Idempotency-Key made from
    the execution id, callbackUrl = $execution.resumeUrl, and only fields /generate takes."""
    [request] = nodes_by_type()["httpRequest"]
    params = request["parameters"]
    assert params["url"] == "={{ $json.pollerUrl }}/generate" and params["method"] == "POST"
    assert params["genericAuthType"] == "httpHeaderAuth"
    assert set(request["credentials"]) == {"httpHeaderAuth"}
    [header] = params["headerParameters"]["parameters"]
    assert header["name"] == "Idempotency-Key" and "$execution.id" in header["value"]
    keys = top_level_keys(params["jsonBody"])
    assert {"sessionId", "model", "prompt", "callbackUrl"} <= set(keys) <= FIELDS, keys
    assert "callbackUrl: $execution.resumeUrl" in params["jsonBody"]
    # a retried request is safe only because of the key: the retry is on
    assert request["retryOnFail"] is True and request["maxTries"] >= 2


def test_wait_node_resumes_on_our_post_and_outlasts_give_up_after_s():
    [wait] = nodes_by_type()["wait"]
    params = wait["parameters"]
    assert params["resume"] == "webhook" and params["httpMethod"] == "POST"
    assert params["limitWaitTime"] is True and params["limitType"] == "afterTimeInterval"
    limit_s = params["resumeAmount"] * UNIT_S[params["resumeUnit"]]
    assert limit_s > PollingSettings().give_up_after_s


def test_url_comes_from_env_and_no_secret_or_provider_call_is_in_the_file():
    text = WORKFLOW.read_text()
    assert "Bearer" not in text and "whsec_" not in text and "kie.ai" not in text
    [settings] = [n for n in nodes_by_type()["set"] if n["name"] == "Settings"]
    values = {a["name"]: a["value"] for a in settings["parameters"]["assignments"]["assignments"]}
    assert re.fullmatch(r"=\{\{ \$env\.WEBHOOK_POLLER_URL \}\}", values["pollerUrl"])


def test_switch_routes_succeeded_failed_and_waits_again_on_delayed():
    [switch] = nodes_by_type()["switch"]
    rules = switch["parameters"]["rules"]["values"]
    events = [r["conditions"]["conditions"][0]["rightValue"] for r in rules]
    assert events == ["video.succeeded", "video.failed", "video.delayed"]
    outputs = workflow()["connections"][switch["name"]]["main"]
    targets = [[link["node"] for link in output] for output in outputs]
    [wait] = nodes_by_type()["wait"]
    assert targets == [["Video ready"], ["Video failed"], [wait["name"]], ["No answer in time"]]
    # trigger -> Settings -> the request -> Wait, nothing else on the way
    chain = {
        k: [link["node"] for link in v["main"][0]] for k, v in workflow()["connections"].items()
    }
    assert chain["Start (webhook)"] == chain["Start (manual)"] == ["Settings"]
    assert chain["Settings"] == ["Generate with webhook-poller"]
    assert chain["Generate with webhook-poller"] == [wait["name"]]
