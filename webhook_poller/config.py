"""Settings: one typed object, loaded once and passed down.

Precedence, lowest first: embedded defaults, the YAML file (``--config`` or
``WEBHOOK_POLLER_CONFIG``; ``${VAR}`` and ``${VAR:-default}`` are interpolated), then
environment overrides ``WEBHOOK_POLLER_<SECTION>__<KEY>`` (for example
``WEBHOOK_POLLER_SERVER__PORT=9000``) and ``KIE_API_KEY``. No file at all means the embedded
defaults: SQLite under ./data, videos under ./data/videos, 127.0.0.1:8080.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .errors import ConfigError
from .net import HostAllowlist
from .plugin_check import check_plugins

DEFAULT_MODELS: dict[str, str] = {
    "demo": "demo",
    # Gemini API model ids (veo-3.0-generate-001); KIE's are veo3, veo3_fast, veo3_lite.
    "veo-*-generate*": "gemini",
    "models/veo*": "gemini",
    "fal-ai/*": "fal",
    "veo*": "kie-veo",
    "sora*": "kie-market",
    "*seedance*": "kie-market",
    "bytedance/*": "kie-market",
    "kling*": "kie-market",
    "hailuo*": "kie-market",
    "wan*": "kie-market",
    "runway*": "kie-runway",
    # Direct providers, where the model names are their own (kling* stays KIE's above).
    "gen4*": "runway",
    "gen3*": "runway",
    "act_two*": "runway",
    "ray-*": "luma",
    "MiniMax-Hailuo*": "minimax",
    "T2V-*": "minimax",
    "I2V-*": "minimax",
    "S2V-*": "minimax",
    "video-01*": "minimax",
}

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "replace-me", "xxx"})


def _comma_list(value: Any) -> Any:
    """``"n8n, localhost:5678"`` (an environment variable) as a list; lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: Base of every absolute URL we hand out; default http://HOST:PORT.
    public_url: str | None = None
    auth_token: SecretStr | None = None
    allow_unauthenticated: bool = False
    #: Signs video links; default: a random secret kept in the job store.
    link_secret: SecretStr | None = None
    max_body_bytes: int = Field(64 * 1024, gt=0)
    max_context_bytes: int = Field(16 * 1024, gt=0)
    shutdown_grace_s: float = Field(10.0, ge=0)
    #: Host header values accepted besides loopback names and the public_url host
    #: (``poller``, ``*.example.com``; ``*`` accepts any).
    trusted_hosts: list[str] = Field(default_factory=list)
    #: A connection must finish sending its request head within this many seconds.
    header_timeout_s: float = Field(10.0, gt=0)
    #: An idle keep-alive connection is closed after this many seconds.
    keep_alive_timeout_s: int = Field(5, ge=1)
    #: Connections (and requests) served at once; past it new ones get 503.
    max_connections: int = Field(1000, ge=1)

    @field_validator("trusted_hosts", mode="before")
    @classmethod
    def _trusted_list(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("public_url")
    @classmethod
    def _absolute_http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("must not carry user-info, a query or a fragment")
        return value.strip()

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class StoreSettings(_Section):
    model_config = ConfigDict(extra="allow")
    url: str = "sqlite:///./data/webhook-poller.db"
    lease_s: float = Field(30.0, gt=0)
    #: How many times a job may be reclaimed after its worker died before it fails.
    max_reclaims: int = Field(20, ge=1)


class StorageSettings(_Section):
    model_config = ConfigDict(extra="allow")
    url: str = "file://./data/videos"
    max_video_bytes: int = Field(2 * 1024**3, gt=0)
    link_expiry_s: int = Field(7 * 24 * 3600, gt=0)
    retention_days: float | None = Field(None, gt=0)
    #: Seconds between two retention sweeps (only with retention_days).
    retention_sweep_s: float = Field(3600.0, gt=0)
    download_timeout_s: float = Field(600.0, gt=0)
    # S3-compatible storage (s3:// URLs); other keys go to the backend as they are.
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: Literal["path", "virtual", "auto"] = "auto"
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    public_base_url: str | None = None
    #: Presigned links are made for this endpoint (a host users reach) instead of endpoint_url.
    public_endpoint_url: str | None = None
    part_size_mb: float = Field(8.0, ge=5)


class CallbackSettings(_Section):
    secret: SecretStr | None = None
    max_age_s: float = Field(24 * 3600, gt=0)
    #: Seconds between attempts; the last value repeats until max_age_s.
    schedule_s: list[float] = Field(default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 3600.0])
    timeout_s: float = Field(15.0, gt=0)
    #: How long an n8n "is running already" 409 is retried before it counts as final.
    conflict_window_s: float = Field(600.0, ge=0)


class PollingSettings(_Section):
    interval_s: float = Field(60.0, ge=0)
    jitter: float = Field(0.1, ge=0, le=1)
    max_attempts: int = Field(15, ge=1)
    delayed_interval_s: float = Field(300.0, ge=0)
    give_up_after_s: float = Field(7200.0, gt=0)
    concurrency: int = Field(32, ge=1)
    #: A "success" with no URL is polled again this many times before output_missing.
    empty_success_retries: int = Field(3, ge=0)
    backoff_base_s: float = Field(5.0, ge=0)
    backoff_max_s: float = Field(300.0, ge=0)
    #: Delay before the first status check of a new job.
    first_poll_delay_s: float = Field(10.0, ge=0)
    #: Transient download or storage failures in a row before the job fails.
    max_download_retries: int = Field(6, ge=0)
    max_active_jobs: int | None = Field(None, ge=1)
    #: Longest sleep of the scheduler between two looks at the store.
    tick_s: float = Field(1.0, gt=0)
    #: Poll spacing of a job whose provider pushes the result to /callbacks/{provider}
    #: (expectPush): the safety net for a missed push. An interval_s the user set rules
    #: when this key is not set (see PollPolicy).
    push_fallback_interval_s: float = Field(300.0, gt=0)


class SecuritySettings(_Section):
    allow_private_urls: bool = False
    #: Private hosts outgoing URLs may reach anyway: names, host:port, CIDR ranges.
    allowed_hosts: list[str] = Field(default_factory=list)

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _allowed_list(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("allowed_hosts")
    @classmethod
    def _parseable_hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                HostAllowlist([entry])
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not a host, host:port or CIDR: {exc}") from None
        return value

    def allowlist(self) -> HostAllowlist:
        return HostAllowlist(self.allowed_hosts)


class SessionSettings(_Section):
    url: str | None = None
    key_template: str = "session:{sessionId}"
    delete_on_complete: bool = False


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LoggingSettings(_Section):
    level: str = "INFO"
    format: Literal["auto", "json", "console"] = "auto"

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if str(value).upper() not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return str(value).upper()


class AnalyticsSettings(_Section):
    jsonl_path: str | None = None


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    polling: PollingSettings = Field(default_factory=PollingSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    analytics: AnalyticsSettings = Field(default_factory=AnalyticsSettings)
    #: Model-name glob -> adapter name, first match wins (order kept from the file).
    models: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_MODELS))
    #: Options per provider section (``kie``, ``demo`` ...), handed to the adapters as set;
    #: each adapter's own ``Options`` model holds its defaults (base URL, cadence, budget).
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    notifiers: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("providers")
    @classmethod
    def _merge_provider_defaults(
        cls, value: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for name, opts in (value or {}).items():
            if opts is not None and not isinstance(opts, dict):
                raise ValueError(f"providers.{name} must be a mapping")
            merged.setdefault(name, {}).update(opts or {})
        return merged

    @field_validator("notifiers")
    @classmethod
    def _notifiers_have_type(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, item in enumerate(value):
            if not isinstance(item, dict) or not item.get("type"):
                raise ValueError(f"notifiers[{i}] needs a 'type'")
        return value

    def provider_options(self, section: str) -> dict[str, Any]:
        return dict(self.providers.get(section) or {})


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of a YAML tree."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ and (environ[name] != "" or default is None):
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"config refers to ${{{name}}} but it is not set")

        return _VAR.sub(repl, value)
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    return value


def _deep_set(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot override {'.'.join(path)}: {part} is not a section")
    node[path[-1]] = value


def secret_text(value: Any) -> str:
    """The plain text of a ``SecretStr`` or a string from a plug-in's options ("" for none)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value or "")


_VERBATIM_SUFFIXES = ("token", "secret", "key", "key_id", "password", "url")


def _env_overrides(tree: dict[str, Any], environ: Mapping[str, str]) -> None:
    prefix = "WEBHOOK_POLLER_"
    for name, raw in environ.items():
        if not name.startswith(prefix) or name == "WEBHOOK_POLLER_CONFIG":
            continue
        path = [p.lower() for p in name[len(prefix) :].split("__") if p]
        if len(path) < 2 or raw == "":  # an empty variable (compose's ${X:-}) is "not set"
            continue
        # Secrets and URLs stay verbatim: YAML would read a hex token like 1234e56 as a number.
        verbatim = path[-1].endswith(_VERBATIM_SUFFIXES)
        _deep_set(tree, path, raw if verbatim else yaml.safe_load(raw))
    if environ.get("KIE_API_KEY"):
        kie = tree.setdefault("providers", {}).setdefault("kie", {})
        kie.setdefault("api_key", environ["KIE_API_KEY"])


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from ``path`` (or ``WEBHOOK_POLLER_CONFIG``), then the environment."""
    env = os.environ if environ is None else environ
    path = path or env.get("WEBHOOK_POLLER_CONFIG") or None
    tree: dict[str, Any] = {}
    if path:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {str(file)!r} does not exist")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(file)!r} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {str(file)!r} must hold a mapping at the top")
        tree = interpolate(loaded, env)
    _env_overrides(tree, env)
    return settings_from_mapping(tree)


def settings_from_mapping(tree: Mapping[str, Any]) -> Settings:
    """Validate a config tree, naming the key and the bad value on error."""
    try:
        settings = Settings.model_validate(dict(tree))
    except ValidationError as exc:
        raise ConfigError("invalid configuration: " + _problems(exc)) from None
    check_settings(settings)
    check_typed_providers(settings)
    check_plugins(settings)  # every plug-in named exists; its block has no unknown keys
    return settings


def _problems(exc: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in (*prefix, *err["loc"]))
        bad = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        hidden = ("secret", "token", "key", "headers")
        if any(w in key.lower() for w in hidden):
            problems.append(f"{key}: {msg} (got <hidden>)")
        elif isinstance(bad, Mapping) and bad:  # a whole section: it may hold secrets
            problems.append(f"{key}: {msg}")
        else:
            problems.append(f"{key}: {msg} (got {bad!r})")
    return "; ".join(problems)


def check_typed_providers(settings: Settings) -> None:
    """A ``providers.<name>`` section with ``type: <adapter>`` (``type: declarative``) is
    checked against that adapter's ``Options`` now, naming the key, not at the first poll."""
    from . import plugins

    for name, options in settings.providers.items():
        kind = options.get("type")
        if kind is None:
            continue
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"providers.{name}.type must be an adapter name such as declarative")
        try:
            model = plugins.options_model(plugins.load("adapter", kind))
        except ConfigError as exc:
            raise ConfigError(f"providers.{name}.type: {exc}") from None
        if model is None:
            continue
        try:
            model.model_validate(options)
        except ValidationError as exc:
            raise ConfigError(
                "invalid configuration: " + _problems(exc, ("providers", name))
            ) from None


def check_settings(settings: Settings) -> None:
    """Cross-field rules that a single field validator cannot see."""
    token = settings.server.auth_token
    if token is not None and token.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
        raise ConfigError("server.auth_token is a placeholder value; set a real random token")
    secret = settings.callbacks.secret
    if secret is not None and secret.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
        raise ConfigError("callbacks.secret is a placeholder value; set a real random secret")
    if not settings.models:
        raise ConfigError("models: at least one model pattern is needed")


def check_listen_safety(settings: Settings) -> None:
    """Refuse to listen beyond loopback without a token, unless the operator says so."""
    server = settings.server
    if server.is_loopback() or server.auth_token is not None or server.allow_unauthenticated:
        return
    raise ConfigError(
        f"server.host is {server.host!r} (not loopback) but server.auth_token is not set; "
        "set a token, or server.allow_unauthenticated: true if something else guards access"
    )
