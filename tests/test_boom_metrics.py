"""`boom.metrics.evaluate` (vectorised) equals GluonTS's own `evaluate_forecasts` on the same forecasts."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("gluonts.torch", reason=missing("boom"))

import numpy as np
import pandas as pd
from boom_fixtures import SHARED_BOOM, write_series
from gluonts.ev.metrics import MAE, MAPE, MASE, MSE, MSIS, ND, NRMSE, RMSE, SMAPE, MeanWeightedSumQuantileLoss
from gluonts.model import evaluate_forecasts

from boom import data, forecasters
from boom.metrics import COLUMNS, MAAPE, evaluate
from toto.inference.gluonts_predictor import TotoPredictor

pytest_plugins = ["boom_fixtures"]  # the sample dataset and tiny checkpoint fixtures

# GIFT-Eval's metric list (what BOOM's published columns come from), plus the MAAPE column.
GLUONTS_METRICS = [MSE(forecast_type="mean"), MSE(forecast_type=0.5), MAE(), MASE(), MAPE(), SMAPE(), MSIS(),
                   RMSE(), NRMSE(), ND(), MeanWeightedSumQuantileLoss(quantile_levels=np.arange(1, 10) / 10),
                   MAAPE()]


def assert_equal_to_gluonts(forecasts, dataset: data.SeriesDataset) -> dict[str, float]:
    ours = evaluate(forecasts, dataset.test_data, dataset.seasonality)
    theirs = evaluate_forecasts(forecasts, test_data=dataset.test_data, metrics=GLUONTS_METRICS, axis=None,
                                mask_invalid_label=True, allow_nan_forecast=False,
                                seasonality=dataset.seasonality).iloc[0]
    theirs = {"eval_metrics/" + name: value for name, value in theirs.items()}
    assert set(ours) == set(theirs) == set(COLUMNS)
    for name in COLUMNS:
        assert np.isfinite(ours[name]), name
        assert ours[name] == pytest.approx(theirs[name], rel=1e-6), name
    return ours


def test_column_names_are_the_published_ones():
    header = (SHARED_BOOM / "results" / "toto" / "all_results.csv").read_text().splitlines()[0].split(",")
    assert [column for column in header if column.startswith("eval_metrics/")] == COLUMNS


def test_toto_sample_forecasts_multivariate(boom_data, tiny_toto_checkpoint):
    dataset = data.SeriesDataset(boom_data / "ds-0-30T", "short")
    predictor = TotoPredictor(tiny_toto_checkpoint, dataset.prediction_length, num_samples=11, batch_size=2)
    forecasts = list(predictor.predict(dataset.test_data.input))
    assert forecasts[0].samples.shape == (11, 48, 2)
    ours = assert_equal_to_gluonts(forecasts, dataset)
    # MAAPE by its definition, from GluonTS's median of each forecast.
    labels = np.stack([label["target"] for label in dataset.test_data.label])
    medians = np.stack([forecast.quantile(0.5).T for forecast in forecasts])
    expected = np.mean(np.arctan(np.abs(labels - medians) / np.abs(labels)))
    assert ours["eval_metrics/MAAPE[0.5]"] == pytest.approx(expected, rel=1e-5)


def test_statistical_quantile_forecasts_univariate(boom_data):
    dataset = data.SeriesDataset(boom_data / "ds-0-30T", "short", to_univariate=True)
    seasonal_naive = forecasters.classical("seasonalnaive", forecasters.CLASSICAL["seasonalnaive"])
    forecasts = list(seasonal_naive.build(dataset.prediction_length, dataset.freq).predict(dataset.test_data.input))
    ours = assert_equal_to_gluonts(forecasts, dataset)
    # Seasonal naive repeats the last day: its median error is the MAE of that rule.
    labels = np.stack([label["target"] for label in dataset.test_data.label])
    last_day = np.stack([entry["target"][-48:] for entry in dataset.test_data.input])
    assert ours["eval_metrics/MAE[0.5]"] == pytest.approx(np.mean(np.abs(labels - last_day)), rel=1e-5)


def test_missing_values_are_masked_like_gluonts(boom_data, tmp_path):
    births = data.SeriesDataset(boom_data / "ds-1-D", "short").hf_dataset[0]
    target = births["target"].astype(np.float64)
    target[[100, 101, 970, 985, 999]] = np.nan  # gaps in the history and in two test windows
    write_series(tmp_path / "ds-9-D", "ds-9-D", pd.Timestamp(births["start"].item()), "D", target)
    dataset = data.SeriesDataset(tmp_path / "ds-9-D", "short")
    seasonal_naive = forecasters.classical("seasonalnaive", forecasters.CLASSICAL["seasonalnaive"])
    forecasts = list(seasonal_naive.build(dataset.prediction_length, dataset.freq).predict(dataset.test_data.input))
    assert_equal_to_gluonts(forecasts, dataset)


@pytest.mark.parametrize("model", ["autoets", "autoarima", "autotheta"])
def test_classical_peers_forecast_all_quantiles(boom_data, model):
    dataset = data.SeriesDataset(boom_data / "ds-1-D", "short")
    forecaster = forecasters.classical(model, forecasters.CLASSICAL[model], context_length=200)
    forecasts = list(forecaster.build(dataset.prediction_length, dataset.freq).predict(dataset.test_data.input))
    assert len(forecasts) == dataset.windows
    assert forecasts[0].quantile(0.1)[0] < forecasts[0].quantile(0.9)[0]
    assert_equal_to_gluonts(forecasts, dataset)
