"""Settings: defaults, the example file, interpolation, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from webhook_poller.config import load_settings
from webhook_poller.errors import ConfigError
from webhook_poller.plugins import load
from webhook_poller.services import build_services

ROOT = Path(__file__).resolve().parents[1]


def test_no_file_means_embedded_defaults():
    """Without a file the service runs on SQLite and local files on loopback:8080."""
    settings = load_settings(None, {})
    assert settings.store.url == "sqlite:///./data/webhook-poller.db"
    assert settings.storage.url == "file://./data/videos"
    assert settings.server.base_url() == "http://127.0.0.1:8080"
    # KIE's cadence and budget are the KIE adapter's own defaults, applied by its gate.
    gate = build_services(settings).gate_for("kie-veo")
    assert gate.min_interval_s == 30 and gate.rate == 10
    assert settings.polling.interval_s == 60 and settings.polling.max_attempts == 15


def test_example_config_is_valid_and_matches_defaults():
    """config.example.yaml loads and documents the same values as the embedded defaults."""
    example = load_settings(ROOT / "config.example.yaml", {})
    default = load_settings(None, {})
    assert example.polling == default.polling
    assert example.server == default.server
    assert example.models == default.models
    assert example.callbacks == default.callbacks


def test_example_documents_every_key():
    """Every settings key of every section appears in config.example.yaml."""
    text = (ROOT / "config.example.yaml").read_text()
    settings = load_settings(None, {})
    for section in (
        "server",
        "store",
        "storage",
        "callbacks",
        "polling",
        "security",
        "session",
        "logging",
        "analytics",
    ):
        for key in type(getattr(settings, section)).model_fields:
            assert f"  {key}:" in text, f"{section}.{key} is not documented"


def test_interpolation_and_env_overrides(tmp_path):
    """${VAR}, ${VAR:-default}, WEBHOOK_POLLER_* and KIE_API_KEY all apply."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "server": {"port": "${PORT:-9001}", "public_url": "https://${HOST}"},
                "callbacks": {"secret": "${CB_SECRET}"},
            }
        )
    )
    env = {
        "HOST": "poller.example.com",
        "CB_SECRET": "whsec_abc",
        "WEBHOOK_POLLER_POLLING__INTERVAL_S": "12",
        "KIE_API_KEY": "kie-key-1",
    }
    settings = load_settings(cfg, env)
    assert settings.server.port == 9001
    assert settings.server.base_url() == "https://poller.example.com"
    assert settings.polling.interval_s == 12
    assert settings.providers["kie"]["api_key"] == "kie-key-1"
    assert settings.callbacks.secret is not None
    assert settings.callbacks.secret.get_secret_value() == "whsec_abc"


def test_env_overrides_keep_secrets_verbatim_and_skip_empty_values():
    """A hex token that YAML would read as a number stays a string; an empty variable (what
    docker compose passes for ${X:-}) leaves the default alone."""
    env = {
        "WEBHOOK_POLLER_SERVER__AUTH_TOKEN": "1234e56",
        "WEBHOOK_POLLER_CALLBACKS__SECRET": "",
        "WEBHOOK_POLLER_POLLING__CONCURRENCY": "8",
    }
    settings = load_settings(None, env)
    assert settings.server.auth_token is not None
    assert settings.server.auth_token.get_secret_value() == "1234e56"
    assert settings.callbacks.secret is None
    assert settings.polling.concurrency == 8
    assert "whsec_abc" not in repr(settings)


def test_missing_variable_is_named(tmp_path):
    """A ${VAR} with no value and no default names the variable."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  auth_token: ${NOPE}\n")
    with pytest.raises(ConfigError, match="NOPE"):
        load_settings(cfg, {})


def test_bad_value_names_key_and_hides_secrets(tmp_path):
    """Validation errors name the key and value, but never echo a secret."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("polling:\n  interval_s: soon\nserver:\n  auth_token: [1]\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, {})
    assert "polling.interval_s" in str(err.value) and "'soon'" in str(err.value)
    assert "server.auth_token" in str(err.value) and "<hidden>" in str(err.value)


def test_unknown_key_is_refused(tmp_path):
    """A typo in a key is an error, not silently ignored."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("polling:\n  intervall_s: 5\n")
    with pytest.raises(ConfigError, match="intervall_s"):
        load_settings(cfg, {})


def test_placeholder_token_refused(tmp_path):
    """An obvious placeholder token is refused at start-up."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  auth_token: changeme\n")
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(cfg, {})


def test_missing_config_file_is_clear():
    """Naming a config file that does not exist says so."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/webhook-poller.yaml", {})


def test_unknown_plugin_lists_known_names():
    """An unknown plug-in name fails naming the ones that exist."""
    with pytest.raises(ConfigError, match=r"known adapters: .*kie-veo"):
        load("adapter", "pika")  # no first-party API (providers.md): no adapter


def test_provider_section_overrides_polling_cadence():
    """A provider section may set its own interval; others keep the global one."""
    from webhook_poller.services import build_services

    settings = load_settings(None, {})
    services = build_services(settings)
    assert services.gate_for("demo").polling.interval_s == 2.0
    assert services.gate_for("demo").polling.first_poll_delay_s == 1.0
    assert services.gate_for("kie-veo").polling.interval_s == 60.0
    assert services.gate_for("kie-veo") is services.gate_for("kie-market")
