"""integrations/n8n/poll-video.json read as a file, for machines without n8n: the Wait node
outlasts our polling, and nothing a user must keep secret or change is written into it.
(tests/test_n8n_real.py runs it on a real n8n.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from webhook_poller.config import PollingSettings

WORKFLOW = Path(__file__).resolve().parents[1] / "integrations" / "n8n" / "poll-video.json"
UNIT_S = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


def nodes_by_type() -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for node in json.loads(WORKFLOW.read_text())["nodes"]:
        out.setdefault(node["type"].rsplit(".", 1)[-1], []).append(node)
    return out


def test_wait_node_resumes_on_our_post_and_outlasts_give_up_after_s():
    """The Wait node resumes on a POST and its limit is longer than polling.give_up_after_s."""
    [wait] = nodes_by_type()["wait"]
    params = wait["parameters"]
    assert params["resume"] == "webhook" and params["httpMethod"] == "POST"
    assert params["limitWaitTime"] is True and params["limitType"] == "afterTimeInterval"
    limit_s = params["resumeAmount"] * UNIT_S[params["resumeUnit"]]
    assert limit_s > PollingSettings().give_up_after_s


def test_urls_and_tokens_come_from_env_and_credentials_not_the_file():
    """Every URL is an expression over $env-backed settings and every key a credential."""
    text = WORKFLOW.read_text()
    assert "Bearer" not in text and "whsec_" not in text
    nodes = nodes_by_type()
    [settings] = [n for n in nodes["set"] if n["name"] == "Settings"]
    values = {a["name"]: a["value"] for a in settings["parameters"]["assignments"]["assignments"]}
    assert "$env.WEBHOOK_POLLER_URL" in values["pollerUrl"]
    assert "$env.KIE_BASE_URL" in values["kieBaseUrl"]
    requests = nodes["httpRequest"]
    assert len(requests) == 2
    for node in requests:
        assert node["parameters"]["url"].startswith("={{ ")
        assert node["parameters"]["genericAuthType"] == "httpHeaderAuth"
        assert set(node["credentials"]) == {"httpHeaderAuth"}
    [hand_over] = [n for n in requests if n["parameters"]["url"].endswith("/poll-video")]
    assert "callbackUrl: $execution.resumeUrl" in hand_over["parameters"]["jsonBody"]


def test_switch_routes_succeeded_failed_and_waits_again_on_delayed():
    """The Switch has one output per event, and video.delayed leads back to the Wait node."""
    workflow = json.loads(WORKFLOW.read_text())
    [switch] = nodes_by_type()["switch"]
    rules = switch["parameters"]["rules"]["values"]
    events = [r["conditions"]["conditions"][0]["rightValue"] for r in rules]
    assert events == ["video.succeeded", "video.failed", "video.delayed"]
    outputs = workflow["connections"][switch["name"]]["main"]
    targets = [[link["node"] for link in output] for output in outputs]
    [wait] = nodes_by_type()["wait"]
    assert targets == [["Video ready"], ["Video failed"], [wait["name"]], ["No answer in time"]]
