"""Shared fixtures: every test starts with clean logging and environment."""

from __future__ import annotations

import pytest
import structlog


@pytest.fixture(autouse=True)
def _reset_structlog() -> None:
    """Each test starts from structlog's defaults so captured logs do not leak between tests."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
