"""Parity with the official Toto 2.0 (toto-2 2.0.0), on fixtures written by tools/make_reference_v2.py.

Each fixture is a random-weight configuration (grouped-query heads; variate layers first with xPos, norm weights
and per-dim scales; biases with three-layer groups). The error is max |ours - official| / max |official|.
"""

import pytest
from partial_install import missing

# toto2 imports its GluonTS wrapper (toto.inference.toto2_gluonts), so it needs the boom extra.
pytest.importorskip("gluonts.torch", reason=missing("boom"))

from pathlib import Path

from tools.compare_reference_v2 import compare

FIXTURES = Path(__file__).parent / "fixtures" / "toto2"
CASES = ["single", "block1", "block2", "ragged_horizon", "missing", "missing_block2", "groups", "groups_block1",
         "covariates", "covariates_block1", "no_missing_flag", "gluonts_options", "ragged_context",
         "gluonts", "forward_quantiles", "forward_loc", "forward_scale"]


@pytest.fixture(scope="module", params=["gqa", "xpos", "bias"])
def errors(request) -> dict[str, float]:
    return compare(FIXTURES / request.param)


def test_every_reference_case_is_compared(errors):
    assert sorted(errors) == sorted(CASES)


@pytest.mark.parametrize("case", CASES)
def test_forecasts_match_official(errors, case):
    assert errors[case] < 1e-4
