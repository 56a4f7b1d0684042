"""The files in deploy/ work: Prometheus rules pass promtool, every metric the rules and the
Grafana dashboard name is one the running service exports, and the Kubernetes manifests are
valid for a pinned Kubernetes version and agree with the service's config and endpoints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.s3_server import ACCESS_KEY, SECRET_KEY
from tests.support.servers import free_port
from tests.support.service import (
    CallbackReceiver,
    base_config,
    deep_merge,
    run_service,
    wait_status,
)
from webhook_poller.config import check_listen_safety, interpolate, load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "webhook-poller.json"
KUBE = DEPLOY / "kubernetes"
#: The Kubernetes version the manifests are validated for (kubernetes-validate's schemas).
KUBERNETES_VERSION = "1.34.0"
#: Metrics a query may name that Prometheus makes itself, not the service.
PROMETHEUS_OWN = frozenset({"up"})
#: Words of PromQL that look like metric names but are not.
PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "inf", "nan", "atan2"}
)

promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None,
    reason="promtool not found: install Debian's 'prometheus' package (scripts/test.sh does)",
)


# --- PromQL ----------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][\w:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function call or an operator
        names.add(word)
    return names


def test_metric_name_extraction() -> None:
    """The parser the name check relies on: names in, functions and labels out."""
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(foo_bucket{job=~"$job",a="b c"}'
        "[$__rate_interval]))) / on () group_left sum(bar_total offset 5m) > 1e3 and up == 0"
    )
    assert metric_names(expr) == {"foo_bucket", "bar_total", "up"}
    assert metric_names("deriv(max(q)[30m:1m]) > 0") == {"q"}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        query = var.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if var["type"] == "query" and isinstance(query, str):
            inner = re.fullmatch(r"label_values\(\s*(.+?)\s*,\s*\w+\s*\)", query)
            exprs.append(inner.group(1) if inner else query)
    return exprs


def as_plain_promql(expr: str) -> str:
    """Grafana's variables replaced by values, so promtool can parse the expression."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__range", "1h")
        .replace("$__interval", "1m")
        .replace("$job", ".+")
    )


# --- promtool --------------------------------------------------------------------------


@needs_promtool
def test_alert_rules_pass_promtool() -> None:
    assert promtool is not None
    run = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in run.stdout


@needs_promtool
def test_alert_rules_fire_on_their_conditions() -> None:
    """promtool's rule unit tests (alerts_test.yml): each alert fires on its condition."""
    assert promtool is not None
    tests = DEPLOY / "prometheus" / "alerts_test.yml"
    run = subprocess.run(
        [promtool, "test", "rules", str(tests)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tests.parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every dashboard query parses: they go through promtool as recording rules."""
    assert promtool is not None
    rules = [
        {"record": f"dashboard:query_{i}", "expr": as_plain_promql(expr)}
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stdout + run.stderr


# --- the rules and the dashboard name what the service exports -------------------------


@pytest.fixture(scope="module")
def exported_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Scrape /metrics of the real service after a demo job that succeeded, one that failed,
    and a delivered callback; every sample name (``_total``, ``_bucket`` ... included)."""
    tmp_path = tmp_path_factory.mktemp("metrics")
    receiver = CallbackReceiver()
    with receiver.serving() as hook, run_service(base_config(tmp_path)) as url:
        with httpx.Client(base_url=url, timeout=10) as client:
            jobs = []
            for task in ("metrics-ok", "metrics-fail"):
                body = {"sessionId": "s", "taskId": task, "model": "demo"}
                body["callbackUrl"] = f"{hook}/hook"
                resp = client.post("/poll-video", json=body)
                assert resp.status_code == 200, resp.text
                jobs.append(resp.json()["jobId"])
            wait_status(client, jobs[0], {"succeeded"})
            wait_status(client, jobs[1], {"failed"})
            text = client.get("/metrics").text
    names = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    assert any(n.startswith("webhook_poller_") for n in names), text[:500]
    return names


def test_every_alert_rule_metric_is_exported(exported_names: set[str]) -> None:
    named = {n for rule in alert_rules() for n in metric_names(rule["expr"])}
    assert {"webhook_poller_polls_total", "webhook_poller_intake_total"} <= named
    assert named - PROMETHEUS_OWN - exported_names == set()


def test_every_dashboard_metric_is_exported(exported_names: set[str]) -> None:
    named = {n for expr in dashboard_exprs() for n in metric_names(expr)}
    assert "webhook_poller_generation_seconds_bucket" in named
    assert named - PROMETHEUS_OWN - exported_names == set()


def test_name_check_would_catch_a_typo(exported_names: set[str]) -> None:
    """The comparison above is not vacuous: a misspelt or suffix-less name is not exported."""
    for wrong in ("webhook_poller_polls", "webhook_poller_pols_total", "webhook_poller_jobs_total"):
        assert wrong not in exported_names


# --- what the files cover ----------------------------------------------------------------


def test_alerts_cover_the_issue_topics() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    joined = "\n".join(exprs.values())
    assert "webhook_poller_schedule_lateness_seconds_bucket" in joined  # stuck jobs
    assert 'webhook_poller_jobs_finished_total{status="failed"}' in joined  # failure rate
    assert 'webhook_poller_jobs{status="notifying"}' in joined  # delivery backlog
    assert 'webhook_poller_polls_total{outcome="rate_limited"}' in joined  # provider 429s
    assert 'webhook_poller_intake_total{result="unavailable"}' in joined  # store down
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    dash = dashboard()
    assert dash["uid"] == "webhook-poller" and dash["title"] and "id" not in dash
    assert isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = list(dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    exprs = "\n".join(dashboard_exprs())
    for metric in (
        "webhook_poller_jobs{",  # jobs by state
        "webhook_poller_queue_length",
        "webhook_poller_polls_total",  # polls per provider
        "webhook_poller_schedule_lateness_seconds_bucket",
        "webhook_poller_generation_seconds_bucket",  # time to video per model
        "webhook_poller_job_failures_total",  # failures by code
        "webhook_poller_deliveries_total",
    ):
        assert metric in exprs, metric


# --- Kubernetes --------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted([*KUBE.glob("*.yaml"), *KUBE.glob("templates/*.yaml")]):
        name = str(path.relative_to(KUBE))
        docs.extend((name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def manifest(kind: str, name: str) -> dict[str, Any]:
    found = [d for _, d in manifests() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


@pytest.mark.parametrize("name,doc", manifests(), ids=lambda v: v if isinstance(v, str) else "")
def test_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_invalid_manifest_is_refused() -> None:
    """The validator really checks: a wrong field type and an unknown field fail."""
    bad = json.loads(json.dumps(manifest("Service", "webhook-poller")))
    bad["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)
    bad = json.loads(json.dumps(manifest("Deployment", "webhook-poller")))
    bad["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)


def secret_env() -> dict[str, str]:
    """The Secret template's keys with real-looking values (the template holds placeholders)."""
    keys = manifest("Secret", "webhook-poller")["stringData"]
    values = {k: f"test-{k.lower()}-0123456789abcdef" for k in keys}
    values["WEBHOOK_POLLER_CALLBACK_SECRET"] = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    return values


def test_configmap_config_is_a_valid_config_for_several_replicas(tmp_path: Path) -> None:
    config = manifest("ConfigMap", "webhook-poller-config")["data"]["config.yaml"]
    placeholders = set(re.findall(r"\$\{(\w+)", config))
    assert placeholders <= set(secret_env()), "every ${VAR} must be a key of the Secret"
    path = tmp_path / "config.yaml"
    path.write_text(config)
    settings = load_settings(path, environ=secret_env())
    check_listen_safety(settings)  # listens on 0.0.0.0 with a token
    assert settings.store.url.startswith("redis://webhook-poller-redis:")
    assert settings.storage.url.startswith("s3://")
    assert settings.server.public_url and settings.server.link_secret is not None
    redis_service = manifest("Service", "webhook-poller-redis")
    assert redis_service["spec"]["ports"][0]["port"] == 6379


def test_deployment_matches_the_service(tmp_path: Path) -> None:
    deployment = manifest("Deployment", "webhook-poller")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # graceful termination: preStop + server.shutdown_grace_s + a margin before SIGKILL
    path = tmp_path / "config.yaml"
    path.write_text(manifest("ConfigMap", "webhook-poller-config")["data"]["config.yaml"])
    grace = load_settings(path, environ=secret_env()).server.shutdown_grace_s
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + grace + 5
    # non-root, as the image's user (Dockerfile: useradd --uid 10001)
    uid = int(re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text()).group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    # config, secret and service wiring
    assert container["envFrom"][0]["secretRef"]["name"] == "webhook-poller"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "webhook-poller-config"
    assert container["args"][-1].startswith(
        next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "config")
    )
    service = manifest("Service", "webhook-poller")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports
    assert ports["http"] == 8080
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_probe_paths_answer_on_the_service(tmp_path: Path) -> None:
    """The probes the Deployment names exist: /healthz and /readyz answer 200 without a token."""
    deployment = manifest("Deployment", "webhook-poller")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    probes = [container[k]["httpGet"]["path"] for k in ("livenessProbe", "readinessProbe")]
    cfg = base_config(tmp_path, server={"auth_token": "a-real-token-0123456789abcdef"})
    with run_service(cfg) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/jobs").status_code == 401  # the token is in force ...
        for path in probes:
            assert client.get(path).status_code == 200, path  # ... and probes need none


@pytest.mark.redis
@pytest.mark.s3
def test_configmap_config_runs_two_replicas_on_redis_and_s3(  # type: ignore[no-untyped-def]
    redis_server, moto_server
) -> None:
    """The ConfigMap's config, only pointed at a local Redis and S3 and loopback ports, runs
    two replicas: a job posted to one is polled, stored in S3 and visible on the other."""
    config = manifest("ConfigMap", "webhook-poller-config")["data"]["config.yaml"]
    env = {
        **secret_env(),
        "S3_ACCESS_KEY_ID": ACCESS_KEY,
        "S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    tree = interpolate(yaml.safe_load(config), env)
    redis_server.flush()
    bucket = moto_server.make_bucket(f"k8s-{uuid.uuid4().hex[:12]}")
    local = {
        "store": {"url": redis_server.url},
        "storage": {"url": f"s3://{bucket}/videos/", "endpoint_url": moto_server.url},
        "security": {"allow_private_urls": True},
        "providers": {"demo": {"polls_until_done": 2, "interval_s": 0.05}},
        "polling": {"first_poll_delay_s": 0, "interval_s": 0.05, "tick_s": 0.05, "jitter": 0},
        "logging": {"level": "WARNING"},
    }
    replicas = []
    for _ in range(2):
        port = free_port()
        server = {"host": "127.0.0.1", "port": port, "public_url": f"http://127.0.0.1:{port}"}
        replicas.append(deep_merge(deep_merge(tree, local), {"server": server}))
    auth = {"Authorization": f"Bearer {env['WEBHOOK_POLLER_AUTH_TOKEN']}"}
    with run_service(replicas[0]) as one, run_service(replicas[1]) as two:
        with (
            httpx.Client(base_url=one, headers=auth) as a,
            httpx.Client(base_url=two, headers=auth) as b,
        ):
            for client in (a, b):
                assert client.get("/readyz").json()["checks"]["store"] is True
            resp = a.post("/poll-video", json={"sessionId": "s", "taskId": "k8s", "model": "demo"})
            assert resp.status_code == 200, resp.text
            done = wait_status(b, resp.json()["jobId"], {"succeeded", "failed"})
            assert done["status"] == "succeeded", done
            assert moto_server.keys(bucket), "the video is in the bucket"
