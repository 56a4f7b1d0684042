#!/usr/bin/env bash
# Every benchmark in bench/README.md, in order, on an otherwise idle machine (about 27 min).
# Needs wrk (apt-get install -y wrk) and redis-server; run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.
PY=.venv/bin/python
$PY -m bench.intake --rounds 5 --seconds 10
$PY -m bench.polls --levels 250,500,750,1000 --interval 2 --window 10
$PY -m bench.inflight --jobs 100000
$PY -m bench.scale --jobs 2000 --rounds 3
$PY -m bench.sse_dashboards --streams 50 --rounds 3
$PY -m bench.s3_upload --mb 1024 --rounds 2
$PY -m bench.intake --rounds 3 --seconds 10 --workers 1,2
$PY -m bench.polls --levels 500,1000,1500 --workers 1,2
$PY -m bench.sqlite_lock --rounds 3 --seconds 5
