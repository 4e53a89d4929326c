"""`TOTO_SERVE_DTYPE=bfloat16`: the service runs the embedded model's weights and matmuls in bfloat16 and answers
what the float32 forecaster answers for the same input and seed, within bfloat16's rounding. In float32 it answers
exactly that forecast, the embedded model's sample paths pooled from its context ensemble."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

import numpy as np
from serve_fixtures import co2_weekly, serve_in_process, values

from serve.settings import ServeSettings
from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.pipeline import ForecastPipeline


def test_bfloat16_weights_answer_the_float32_forecast_within_rounding(toto_tiny: ForecastPipeline) -> None:
    window = co2_weekly().iloc[-300:]
    body = {"series": [{"variates": {"co2": values(window)}}], "prediction_length": 32, "num_samples": 128,
            "seed": 3, "return_samples": True}
    answers = {}
    for dtype in ("float32", "bfloat16"):
        # The service's defaults (the embedded toto-tiny, its limits), the forward passes in this process.
        with serve_in_process(ServeSettings(dtype=dtype, model_process=False)) as service:
            response = service.client.post("/forecast", json=body)
        assert response.status_code == 200, response.text
        answers[dtype] = response.json()["forecasts"][0]["variates"]["co2"]
    got = answers["bfloat16"]

    assert toto_tiny.context_ensemble == (128, 512, 2048)
    float32 = TotoForecaster(toto_tiny.model).forecast(
        MaskedTimeseries.from_series(window.to_numpy()[None, None]), 32, num_samples=128, seed=3,
        context_ensemble=toto_tiny.context_ensemble)
    np.testing.assert_allclose(answers["float32"]["samples"], float32.samples[0, 0].T.numpy(), rtol=1e-5, atol=1e-4)
    mean, spread = float32.mean[0, 0].numpy(), float32.samples[0, 0].std(dim=-1).numpy()
    gap = np.abs(np.array(got["mean"]) - mean)
    assert (gap <= 0.01 * np.abs(mean)).all()  # within 1% of the float32 mean
    # bf16 rounding can send a sample path to another mixture component, so the two sets of 128 paths may differ as
    # two independent draws do: their means then differ by sqrt(2 / 128) spreads in one standard deviation.
    noise = np.sqrt(2 / 128) * spread
    assert (gap <= 4 * noise).all() and gap.mean() <= 1.5 * noise.mean()
    assert not np.allclose(got["samples"], float32.samples[0, 0].T.numpy(), rtol=1e-6, atol=0)  # bf16 did run
