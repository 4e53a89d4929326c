"""`TotoPredictor`: GluonTS entries in, one SampleForecast per entry out, reproducible whatever the batching."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("gluonts.torch", reason=missing("boom"))

import numpy as np
from gluonts.model.forecast import SampleForecast

from boom import data
from toto.inference.gluonts_predictor import TotoPredictor

pytest_plugins = ["boom_fixtures"]  # the sample dataset and tiny checkpoint fixtures


def test_forecasts_match_entries_and_do_not_depend_on_batching(boom_data, tiny_toto_checkpoint):
    births = data.SeriesDataset(boom_data / "ds-1-D", "short")  # 1-D targets, four windows
    elec = data.SeriesDataset(boom_data / "ds-0-30T", "short")  # 2-D targets (2 variates)
    entries = [*births.test_data.input, *list(elec.test_data.input)[:1]]
    predictor = TotoPredictor(tiny_toto_checkpoint, prediction_length=30, context_length=64, num_samples=6,
                              batch_size=4)
    forecasts = list(predictor.predict(entries))

    assert all(isinstance(f, SampleForecast) for f in forecasts)
    assert [f.samples.shape for f in forecasts] == [(6, 30)] * 4 + [(6, 30, 2)]
    assert [f.start_date for f in forecasts] == [e["start"] + np.shape(e["target"])[-1] for e in entries]
    assert forecasts[0].quantile(0.9).shape == (30,) and forecasts[4].quantile(0.9).shape == (30, 2)

    one_by_one = TotoPredictor(predictor.model, prediction_length=30, context_length=64, num_samples=6,
                               batch_size=1)
    for alone, batched in zip(one_by_one.predict(entries), forecasts):
        np.testing.assert_allclose(alone.samples, batched.samples, rtol=1e-4, atol=1e-4)


def test_rejects_bad_settings(tiny_toto_checkpoint):
    with pytest.raises(ValueError, match="positive"):
        TotoPredictor(tiny_toto_checkpoint, prediction_length=8, num_samples=0)
