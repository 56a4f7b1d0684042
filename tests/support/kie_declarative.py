"""The built-in KIE Market adapter written as a declarative provider (no code).

This is the proof that the YAML form is complete enough: tests/test_kie.py runs its Market
tests against both :class:`~webhook_poller.adapters.kie.KieMarketAdapter` and the adapter
this section builds. The regexes are the ones adapters/kie.py classifies failures with.
"""

from __future__ import annotations

from typing import Any

import yaml

from webhook_poller.adapters.declarative import DeclarativeAdapter
from webhook_poller.config import DEFAULT_MODELS, settings_from_mapping
from webhook_poller.interfaces import PluginContext

#: The section name tests route the Market models to.
SECTION = "kie-market-yaml"

KIE_MARKET_YAML = r"""
type: declarative
base_url: https://api.kie.ai
api_key: ${KIE_API_KEY}
min_interval_s: 30
max_requests_per_s: 10
result_link_ttl_s: 86400
status:
  url: "{base_url}/api/v1/jobs/recordInfo?taskId={taskId}"
  headers: {Authorization: "Bearer {api_key}"}
envelope:                       # failures inside HTTP 200: {"code": 402, "msg": "..."}
  code: "code"
  ok: [200]
  message: "msg || message"
  transient: [455]              # maintenance
state: "data.state"
states: {waiting: running, queuing: running, generating: running, success: succeeded,
         fail: failed}
video_urls: "data.resultJson.resultUrls"   # resultJson is a JSON string; it is decoded first
progress: "data.progress"
error_message: "data.failMsg"
error_codes:                    # first match wins, else unknown_provider_error
  - code: moderation_rejected
    match: "(?i)moderat|content polic|safety|unsafe|nsfw|sensitive|prohibit|violat|\
      inappropriate|flagged|guideline|public figure|copyright"
  - code: asset_fetch_failed
    match: "(?i)(fetch|download|read|load|access).{0,20}(image|asset|file|url)|\
      image.{0,20}(fetch|download|invalid|too (large|small))"
  - {code: insufficient_credits, match: "(?i)credit|balance|insufficient|quota"}
  - {code: provider_timeout, match: "(?i)time(d)? ?out|no result has been returned"}
"""


def section(base_url: str, api_key: str) -> dict[str, Any]:
    """The YAML above as a config section, pointed at ``base_url`` with ``api_key``."""
    tree: dict[str, Any] = yaml.safe_load(KIE_MARKET_YAML)
    tree.update(base_url=base_url, api_key=api_key, min_interval_s=0)
    return tree


def config(base_url: str, api_key: str) -> dict[str, Any]:
    """Config keys that route every KIE Market model to the declarative section."""
    models = {p: (SECTION if a == "kie-market" else a) for p, a in DEFAULT_MODELS.items()}
    return {"providers": {SECTION: section(base_url, api_key)}, "models": models}


def adapter(base_url: str = "https://api.kie.ai", api_key: str = "k") -> DeclarativeAdapter:
    """A DeclarativeAdapter built from the section after the config check accepted it."""
    settings = settings_from_mapping(config(base_url, api_key))
    options = settings.provider_options(SECTION)
    return DeclarativeAdapter({**options, "name": SECTION}, PluginContext(settings))
