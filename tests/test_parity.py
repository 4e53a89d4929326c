"""Parity with the official Toto 1.0 (toto-ts 0.2.0), on fixtures written by tools/make_reference.py."""

from pathlib import Path

import pytest

from tools.compare_reference import compare

FIXTURE = Path(__file__).parent / "fixtures" / "toto_ts_small"


@pytest.fixture(scope="module")
def errors() -> dict[str, float]:
    return compare(FIXTURE)


@pytest.mark.parametrize("output", ["loc", "scale", "mean", "df", "component_loc", "component_scale", "probs",
                                    "log_prob"])
def test_forward_outputs_match_official(errors, output):
    assert errors[output] < 1e-5


@pytest.mark.parametrize("kv", [0, 1])
def test_mean_forecast_matches_official_with_and_without_kv_cache(errors, kv):
    assert errors[f"forecast_mean_kv{kv}"] < 1e-4
