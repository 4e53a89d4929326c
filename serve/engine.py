"""Turn a batch of queued series tasks into as few forward passes as possible, and the forecasts into JSON bodies.

Adaptive batching hands `forecast` the series of every request that arrived together. Tasks that share a tensor
shape and decoding settings (variates, exogenous variables, horizon, samples, context patches) run as one
`TotoForecaster.forecast` call. Each task keeps its own random stream (one seed per batch row), and tasks are only
stacked when their contexts span the same number of patches (the NaN padding then stays inside the first patch,
where it changes nothing), so a series gets the same numbers whether it is served alone or merged with others.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from serve.checks import SeriesTask
from serve.schemas import SeriesForecast, VariateForecast
from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import Forecast, TotoForecaster, row_seeds
from toto.model.toto import Toto

log = logging.getLogger(__name__)


class ForecastEngine:
    """A loaded model and the batching rules above."""

    def __init__(self, model: Toto, samples_per_batch: int) -> None:
        self.forecaster = TotoForecaster(model.model)
        self.patch_size = model.model.patch_size
        # Fixed, not derived from the batch size: the chunking of sample paths selects the random streams.
        self.samples_per_batch = samples_per_batch

    def forecast(self, tasks: Sequence[SeriesTask]) -> list[SeriesForecast]:
        """One forecast per task, in order."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, task in enumerate(tasks):
            groups[self._shape_key(task)].append(i)
        results: list[SeriesForecast | None] = [None] * len(tasks)
        for indices in groups.values():
            group = [tasks[i] for i in indices]
            for i, result in zip(indices, self._forecast_group(group)):
                results[i] = result
        log.debug("forecast %d series in %d forward pass(es)", len(tasks), len(groups))
        return results

    def _shape_key(self, task: SeriesTask) -> tuple[int, ...]:
        series = task.series[0]
        width = len(series.variates) + len(series.exogenous)
        patches = math.ceil(series.length / self.patch_size)
        return width, len(series.exogenous), task.prediction_length, task.num_samples, patches

    def _forecast_group(self, tasks: list[SeriesTask]) -> list[SeriesForecast]:
        """One forward pass over tasks of equal shape key; contexts are left-padded with NaN (missing)."""
        series = [task.series[0] for task in tasks]
        first = tasks[0]
        length = max(s.length for s in series)
        values = np.full((len(series), len(series[0].variates) + len(series[0].exogenous), length), np.nan)
        for row, s in enumerate(series):
            values[row, :, length - s.length:] = np.array([*s.variates.values(), *s.exogenous.values()], dtype=float)
        num_exogenous = len(series[0].exogenous)
        future = None
        if num_exogenous:
            future = torch.tensor([list(s.future_exogenous.values()) for s in series], dtype=torch.float32)
        with torch.inference_mode():
            forecast = self.forecaster.forecast(
                MaskedTimeseries.from_series(values, num_exogenous_variables=num_exogenous),
                first.prediction_length,
                num_samples=first.num_samples,
                samples_per_batch=self.samples_per_batch,
                future_exogenous_variables=future,
                seed=[row_seeds(task.seed, task.series_index + 1)[task.series_index] for task in tasks],
            )
        return self._summarise(forecast, tasks)

    @staticmethod
    def _summarise(forecast: Forecast, tasks: list[SeriesTask]) -> list[SeriesForecast]:
        """The JSON bodies: mean, median and each task's quantiles (and samples) per target variate."""
        levels = sorted({level for task in tasks for level in task.quantile_levels})
        stats = {"mean": forecast.mean, "median": forecast.median}
        if levels:
            stats |= dict(zip(levels, forecast.quantile(levels)))
        stats = {key: value.cpu().numpy() for key, value in stats.items()}
        results = []
        for row, task in enumerate(tasks):
            series = task.series[0]
            variates = {}
            for v, name in enumerate(series.variates):  # targets come first; exogenous variates are not reported
                samples = forecast.samples[row, v].T.cpu().numpy().tolist() if task.return_samples else None
                variates[name] = VariateForecast(
                    mean=stats["mean"][row, v].tolist(),
                    median=stats["median"][row, v].tolist(),
                    quantiles={str(level): stats[level][row, v].tolist() for level in task.quantile_levels},
                    samples=samples,
                )
            timestamps = series.future_timestamps(task.prediction_length)
            results.append(SeriesForecast(id=series.id, timestamps=timestamps, variates=variates))
        return results
