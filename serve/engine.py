"""Turn a batch of series tasks into as few forward passes as possible, and the forecasts into JSON bodies.

Adaptive batching hands `forecast` the series of every request that arrived together. Tasks that share a width and
decoding settings (variates, exogenous variables, horizon, samples) run as one `TotoForecaster.forecast` call, with
shorter contexts left-padded with NaN. Each task keeps its own random stream (one seed per batch row), and the
forecaster is invariant to left-padding, so a series gets the same numbers whether it is served alone or merged
with others, up to float32 rounding in the batched matrix products (docs/serving.md states and tests the bound).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import torch
from pydantic import BaseModel, Field, model_validator

from serve.checks import Problem, find_problems
from serve.schemas import STRICT, ForecastRequest, QuantileLevel, SeriesForecast, SeriesInput, VariateForecast
from serve.settings import get_settings
from toto.api import load_model
from toto.data.util.dataset import MaskedTimeseries, stack_ragged
from toto.inference.forecaster import Forecast, TotoForecaster, row_seeds
from toto.pipeline import ForecastPipeline

log = logging.getLogger(__name__)


class SeriesTask(BaseModel):
    """One series of a request, with the request's decoding settings and the series' own random stream.

    Tasks are what the batchable endpoint receives, so they are validated like a one-series request (the same
    limits, answered 400 before the task joins a batch): a task sent to that endpoint directly cannot get past
    the limits that `/forecast` enforces.
    """

    model_config = STRICT

    series: SeriesInput
    prediction_length: int = Field(ge=1)
    num_samples: int = Field(ge=1)
    quantile_levels: list[QuantileLevel]
    return_samples: bool
    row_seed: int = Field(ge=0, lt=2**32)

    @model_validator(mode="after")
    def _within_limits(self) -> SeriesTask:
        request = ForecastRequest.model_construct(
            series=[self.series], prediction_length=self.prediction_length, num_samples=self.num_samples,
            quantile_levels=self.quantile_levels, return_samples=self.return_samples, seed=None,
        )
        if problems := find_problems(request, get_settings()):
            raise ValueError("; ".join(problem.msg for problem in problems))
        return self

    @classmethod
    def split(cls, request: ForecastRequest, seed: int) -> list[SeriesTask]:
        """Series i gets `row_seeds(seed, n)[i]`: the stream `TotoForecaster.forecast(<all n series>, seed=seed)`
        gives it, so the service answers what the forecaster would for the same input and seed."""
        seeds = row_seeds(seed, len(request.series))
        return [
            cls.model_construct(  # the request was validated; its series need no second pass here
                series=series, prediction_length=request.prediction_length, num_samples=request.num_samples,
                quantile_levels=request.quantile_levels, return_samples=request.return_samples, row_seed=row_seed,
            )
            for series, row_seed in zip(request.series, seeds)
        ]


def load_engine(checkpoint: str, device: str | None, samples_per_batch: int) -> ForecastEngine:
    """The model behind the service: the one place that says how a checkpoint becomes a forecaster."""
    return ForecastEngine(load_model(checkpoint, device), samples_per_batch)


class ForecastEngine:
    """A loaded model of either family (`ForecastPipeline`) and the batching rules above."""

    def __init__(self, pipeline: ForecastPipeline, samples_per_batch: int) -> None:
        self.pipeline = pipeline
        self.forecaster = TotoForecaster(pipeline.model.model) if pipeline.samples else None
        self.patch_size = pipeline.patch_size
        # Fixed, not derived from the batch size: the chunking of sample paths selects the random streams.
        self.samples_per_batch = samples_per_batch

    def problems(self, request: ForecastRequest) -> list[Problem]:
        """What this model cannot do for a well-formed request: sample paths from a quantile model."""
        if request.return_samples and not self.pipeline.samples:
            return [Problem(("return_samples",), f"{self.pipeline.family} is a quantile model: it forecasts quantiles"
                            " in one pass and has no sample paths to return; set return_samples to false")]
        return []

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

    @staticmethod
    def _shape_key(task: SeriesTask) -> tuple[int, ...]:
        series = task.series
        width = len(series.variates) + len(series.exogenous)
        return width, len(series.exogenous), task.prediction_length, task.num_samples

    def _forecast_group(self, tasks: list[SeriesTask]) -> list[SeriesForecast]:
        """One forward pass over tasks of equal shape key; contexts are left-padded with NaN (missing)."""
        series = [task.series for task in tasks]
        first = tasks[0]
        inputs = stack_ragged([s.context(s.time_grid()) for s in series])
        num_exogenous = len(series[0].exogenous)
        future = None
        if num_exogenous:
            future = torch.tensor([list(s.future_exogenous.values()) for s in series], dtype=torch.float32)
        if self.forecaster is None:  # a quantile model: one pass, no sampling
            return self._summarise_quantiles(inputs._replace(num_exogenous_variables=num_exogenous), future, tasks)
        with torch.inference_mode():
            forecast = self.forecaster.forecast(
                inputs._replace(num_exogenous_variables=num_exogenous),
                first.prediction_length,
                num_samples=first.num_samples,
                samples_per_batch=self.samples_per_batch,
                future_exogenous_variables=future,
                exogenous_layout="aligned",
                seed=[task.row_seed for task in tasks],
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
            series = task.series
            variates = {}
            for v, name in enumerate(series.variates):  # targets come first; exogenous variates are not reported
                samples = forecast.samples[row, v].T.cpu().numpy().tolist() if task.return_samples else None
                variates[name] = VariateForecast(
                    mean=stats["mean"][row, v].tolist(),
                    median=stats["median"][row, v].tolist(),
                    quantiles={str(level): stats[level][row, v].tolist() for level in task.quantile_levels},
                    samples=samples,
                )
            timestamps = series.future_timestamps(series.time_grid(), task.prediction_length)
            results.append(SeriesForecast(id=series.id, timestamps=timestamps, variates=variates))
        return results

    def _summarise_quantiles(self, inputs: MaskedTimeseries, future: torch.Tensor | None,
                             tasks: list[SeriesTask]) -> list[SeriesForecast]:
        """The JSON bodies of a quantile model: its median as mean and median, and the requested levels."""
        levels = sorted({0.5, *(level for task in tasks for level in task.quantile_levels)})
        first = tasks[0]
        prediction = self.pipeline.predict_quantiles(inputs, first.prediction_length, levels, future_exogenous=future)
        by_level = dict(zip(prediction.levels, prediction.quantiles.cpu().numpy(), strict=True))
        mean = prediction.mean.cpu().numpy()
        results = []
        for row, task in enumerate(tasks):
            series = task.series
            variates = {
                name: VariateForecast(
                    mean=mean[row, v].tolist(), median=by_level[0.5][row, v].tolist(),
                    quantiles={str(level): by_level[level][row, v].tolist() for level in task.quantile_levels},
                )
                for v, name in enumerate(series.variates)
            }
            timestamps = series.future_timestamps(series.time_grid(), task.prediction_length)
            results.append(SeriesForecast(id=series.id, timestamps=timestamps, variates=variates))
        return results
