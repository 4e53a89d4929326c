"""toto-ts 0.2.0's tests stay as its wheel ships them, so what one needs beyond the core is said here: the GluonTS
predictor's tests need the 'boom' extra (gluonts, with its torch part), and skip, naming it, on an install without."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from partial_install import missing


class NeedsGluonTS(pytest.Module):
    def collect(self) -> Iterable[pytest.Item | pytest.Collector]:
        pytest.importorskip("gluonts.torch", reason=missing("boom"))
        return super().collect()


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    if module_path.name == "gluonts_predictor_test.py":
        return NeedsGluonTS.from_parent(parent, path=module_path)
    return None
