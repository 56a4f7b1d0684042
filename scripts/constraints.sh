#!/usr/bin/env bash
# Regenerate constraints.txt (the lock file) from .venv after a dependency change:
# every installed distribution at its installed version, the project and editable
# installs left out. The Docker image installs with it; tests/test_packaging.py checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Pinned: every dependency (runtime and test) at the version the test suite ran with."
  echo "# The Docker image installs with -c constraints.txt. Regenerate: scripts/constraints.sh"
  .venv/bin/pip freeze --all --exclude-editable 2>/dev/null | grep -v -i -E '^(pip|webhook-poller.*)=='
} > constraints.txt
