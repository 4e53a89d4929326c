"""Fixtures for tests that run a real Prometheus (tools/prometheus_server.py); a test module takes them with
`pytest_plugins = ["prometheus_fixtures"]`.

`prometheus_binaries` skips the test, saying how to install them, where `prometheus` and `promtool` are not on PATH:
the suite has to pass on a machine without them (`make test` tries to install them first, `make prometheus`).
`prometheus_storage` is an empty TSDB folder of the test's own, to backfill before a server starts on it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.prometheus_server import INSTALL_HINT, find_prometheus


@pytest.fixture(scope="session")
def prometheus_binaries() -> tuple[str, str]:
    """The paths of `prometheus` and `promtool`; the test skips without them."""
    found = find_prometheus()
    if found is None:
        pytest.skip(f"prometheus and promtool are not on PATH: {INSTALL_HINT}")
    return found


@pytest.fixture
def prometheus_storage(prometheus_binaries: tuple[str, str], tmp_path: Path) -> Path:
    """An empty storage folder for one server (after the binaries' check, so a test that takes it skips too)."""
    storage = tmp_path / "prometheus-data"
    storage.mkdir()
    return storage
