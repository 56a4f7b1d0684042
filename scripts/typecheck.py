"""Run mypy (strict, the ``[tool.mypy]`` section of pyproject.toml) over the package.

``adapters/`` and ``notifiers/`` sit at the top of the repository but install as
``webhook_poller.adapters`` and ``webhook_poller.notifiers`` (``package-dir`` in
pyproject.toml). mypy cannot follow that mapping, nor the editable install's import hook, so
this script lays the installed layout out under ``.mypy_cache/layout`` (copies of the source
files, timestamps kept so mypy's cache stays warm), checks it, and reports every error at its
path in the repository. Extra arguments go to mypy. tests/test_types.py runs it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".mypy_cache"
LAYOUT = CACHE / "layout"
# where each installed package's files come from
SOURCES = {
    "webhook_poller": ROOT / "webhook_poller",
    "webhook_poller/adapters": ROOT / "adapters",
    "webhook_poller/notifiers": ROOT / "notifiers",
}


def lay_out() -> None:
    shutil.rmtree(LAYOUT, ignore_errors=True)
    for target, source in SOURCES.items():
        for path in source.rglob("*"):
            if path.suffix in (".py", ".pyi") or path.name == "py.typed":
                dest = LAYOUT / target / path.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)


def to_repo(line: str) -> str:
    """``webhook_poller/adapters/kie.py:3: error`` -> ``adapters/kie.py:3: error``."""
    for target in sorted(SOURCES, key=len, reverse=True):
        if line.startswith(target + "/"):
            rel = SOURCES[target].relative_to(ROOT).as_posix()
            return rel + line[len(target) :]
    return line


def main(argv: list[str]) -> int:
    lay_out()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(CACHE),
            "--no-pretty",
            "--no-error-summary" if "--summary" not in argv else "--error-summary",
            *(a for a in argv if a != "--summary"),
            "-p",
            "webhook_poller",
        ],
        cwd=LAYOUT,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in result.stdout.splitlines():
        print(to_repo(line))  # noqa: T201 - command-line output
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
