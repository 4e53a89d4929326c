"""The published metric columns, computed with `gluonts.ev` over all windows and variates of a configuration.

`evaluate` is GluonTS's `evaluate_forecasts(..., axis=None, mask_invalid_label=True,
allow_nan_forecast=False, seasonality=...)` done in one vectorised batch: the same `gluonts.ev` metric
definitions are fed one stacked array per forecast statistic instead of stacking forecasts 100 at a time, and
sample quantiles are taken for all windows with one sort. `tests/test_boom_metrics.py` proves the results
equal GluonTS's own `evaluate_forecasts`. CRPS is the leaderboard's name for
`mean_weighted_sum_quantile_loss` over the quantiles 0.1 ... 0.9.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import numpy as np
from gluonts.dataset.split import TestData
from gluonts.ev.aggregations import Mean
from gluonts.ev.metrics import (
    MAE,
    MAPE,
    MASE,
    MSE,
    MSIS,
    ND,
    NRMSE,
    RMSE,
    SMAPE,
    BaseMetricDefinition,
    DirectMetric,
    MeanWeightedSumQuantileLoss,
)
from gluonts.ev.stats import absolute_percentage_error
from gluonts.ev.ts_stats import seasonal_error
from gluonts.model.forecast import Forecast, SampleForecast

from toto.options import DECILES

QUANTILE_LEVELS = DECILES  # the levels BOOM's published results score
MSIS_ALPHA = 0.05
COLUMN_PREFIX = "eval_metrics/"


def arctangent_absolute_percentage_error(data: dict[str, np.ndarray], forecast_type: str) -> np.ndarray:
    return np.arctan(absolute_percentage_error(data, forecast_type))


@dataclass
class MAAPE(BaseMetricDefinition):
    """Mean arctangent absolute percentage error: a published column that `gluonts.ev` does not define."""

    forecast_type: str = "0.5"

    def __call__(self, axis=None) -> DirectMetric:
        return DirectMetric(name=f"MAAPE[{self.forecast_type}]", aggregate=Mean(axis=axis),
                            stat=partial(arctangent_absolute_percentage_error, forecast_type=self.forecast_type))


# In the order of the published all_results.csv columns.
METRICS = [
    MSE(forecast_type="mean"),
    MSE(forecast_type="0.5"),
    MAE(forecast_type="0.5"),
    MASE(forecast_type="0.5"),
    MAPE(forecast_type="0.5"),
    MAAPE(forecast_type="0.5"),
    SMAPE(forecast_type="0.5"),
    MSIS(alpha=MSIS_ALPHA),
    RMSE(forecast_type="mean"),
    NRMSE(forecast_type="mean"),
    ND(forecast_type="0.5"),
    MeanWeightedSumQuantileLoss(quantile_levels=QUANTILE_LEVELS),
]
METRIC_NAMES = [metric(axis=None).name for metric in METRICS]
COLUMNS = [COLUMN_PREFIX + name for name in METRIC_NAMES]
# Every forecast statistic the metrics read: the mean, the quantile levels and MSIS's interval ends.
STATISTICS = ["mean", *map(str, QUANTILE_LEVELS), str(MSIS_ALPHA / 2), str(1 - MSIS_ALPHA / 2)]


def _quantile_arrays(forecasts: list[Forecast]) -> dict[str, np.ndarray]:
    """Each statistic stacked over forecasts with the variate axis before time, as `gluonts.ev` expects.

    SampleForecasts are sorted once for all windows; the nearest-rank quantile is GluonTS's own definition.
    Other forecast types (e.g. QuantileForecast) are asked for each statistic.
    """
    samples = [f.samples for f in forecasts if isinstance(f, SampleForecast)]
    if len(samples) == len(forecasts) and len({s.shape for s in samples}) == 1:
        ordered = np.sort(np.stack(samples), axis=1)  # (forecast, sample, time[, variate])
        num_samples = ordered.shape[1]
        arrays = {key: ordered[:, int(np.round((num_samples - 1) * float(key)))] for key in STATISTICS[1:]}
        arrays["mean"] = np.stack([f.mean for f in forecasts])
        arrays = {key: np.swapaxes(value, -1, -2) if value.ndim == 3 else value for key, value in arrays.items()}
    else:
        arrays = {key: np.stack([f[key].T for f in forecasts]) for key in STATISTICS}
    for key, value in arrays.items():
        if np.isnan(value).any():
            raise ValueError(f"Forecasts contain NaN ({key}); the published evaluation does not allow that.")
    return arrays


def evaluate(forecasts: Iterable[Forecast], test_data: TestData, seasonality: int) -> dict[str, float]:
    """All published metrics of one configuration, keyed by their `all_results.csv` column names.

    Labels that are NaN are masked out; MASE and MSIS scale by each window's in-sample seasonal error at
    lag `seasonality` (computed on the window's whole history, NaNs masked), exactly as GluonTS does.
    """
    forecasts = list(forecasts)
    labels = np.ma.masked_invalid(np.stack([label["target"] for label in test_data.label]))
    if len(forecasts) != len(labels):
        raise ValueError(f"Got {len(forecasts)} forecasts for {len(labels)} test windows.")
    scales = [seasonal_error(np.ma.masked_invalid(entry["target"]), seasonality=seasonality, time_axis=-1)
              for entry in test_data.input]
    data = {"label": labels, "seasonal_error": np.array(scales), **_quantile_arrays(forecasts)}
    axis = tuple(range(labels.ndim))
    results = {}
    for definition in METRICS:
        metric = definition(axis=axis)
        results[COLUMN_PREFIX + metric.name] = float(metric.update(data).get())
    return results
