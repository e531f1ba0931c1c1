"""Fixtures every kind of test may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from gigafab.local.layout import Layout
from gigafab.local.toolchain import ensure_gateway_edge


@pytest.fixture(scope="session")
def edge_binary() -> Path:
    """``gigafab-edge``, built from ``agents/edge`` into the cache (once per version of its sources)."""
    return ensure_gateway_edge(Layout.default())
