#!/usr/bin/env bash
# Installs n8n from the npm registry into a cache folder, once, for the n8n tests
# (tests/test_n8n_real.py) and for trying integrations/n8n/ locally.
#
#   N8N_INSTALL_DIR  where (default ~/.cache/webhook-poller/n8n-2.8.4)
#   N8N_VERSION      which (default 2.8.4, the newest n8n whose engines accept Node 20)
#
# About 4-8 minutes and 2.3 GB. n8n-nodes-base depends on "xlsx" by a URL outside the registry,
# so the install folder's package.json pins it to the registry's xlsx@0.18.5 ("overrides").
# The install goes to a .partial folder first: a broken install is never taken for a good one.
set -euo pipefail
N8N_VERSION="${N8N_VERSION:-2.8.4}"
DIR="${N8N_INSTALL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/webhook-poller/n8n-$N8N_VERSION}"

if [ -x "$DIR/node_modules/.bin/n8n" ]; then
    exit 0
fi
PARTIAL="$DIR.partial"
LOG="$DIR.install.log"
rm -rf "$PARTIAL"
mkdir -p "$PARTIAL"
cat > "$PARTIAL/package.json" <<'JSON'
{
  "name": "webhook-poller-n8n",
  "private": true,
  "overrides": {
    "xlsx": "0.18.5"
  }
}
JSON
echo "installing n8n@$N8N_VERSION into $DIR for the n8n tests (once, a few minutes)..."
if ! (cd "$PARTIAL" && npm install "n8n@$N8N_VERSION" --no-audit --no-fund --loglevel=error) \
    >"$LOG" 2>&1; then
    echo "n8n install failed; the last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2
    exit 1
fi
rm -rf "$DIR"
mv "$PARTIAL" "$DIR"
rm -f "$LOG"
