"""Turn a batch of series tasks into as few forward passes as possible, and the forecasts into JSON bodies.

The batcher (`serve.batching`) hands `forecast` the series of every request queued together. Tasks that share a width and
decoding settings (variates, exogenous variables, horizon, samples, feedback) run as one `TotoForecaster.forecast` call, with
shorter contexts left-padded with NaN. Each task keeps its own random stream (one seed per batch row), and the
forecaster is invariant to left-padding, so a series gets the same numbers whether it is served alone or merged
with others, up to float32 rounding in the batched matrix products (docs/serving.md states and tests the bound).

Memory: every forward pass is planned to fit a byte limit (`memory.plan_forecast` for sampling models, a
one-pass estimate for quantile models), so a merged group is split into passes that fit. `request_cost` is
what the service admits a request on: the memory its answer holds plus its largest single-series pass.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, Field

from serve.checks import Problem
from serve.schemas import STRICT, ForecastRequest, QuantileLevel, SeriesForecast, SeriesInput, VariateForecast
from toto.api import load_model
from toto.data.util.dataset import MaskedTimeseries, stack_ragged, unobserved_in_context
from toto.inference.forecaster import Cancellation, Feedback, Forecast, TotoForecaster
from toto.inference.memory import FLOAT32, MemoryBudgetExceeded, plan_forecast
from toto.inference.streams import row_seeds
from toto.pipeline import ForecastPipeline

log = logging.getLogger(__name__)

# Bytes one value of an answer costs until it is sent: a Python float in a list (32 B) in the list made from the
# tensor and in the pydantic answer, and its JSON text (about 20 B) in BentoML's body and the transport's buffer,
# rounded up generously.
RESULT_BYTES_PER_VALUE = 128


class SeriesTask(BaseModel):
    """One series of a request, with the request's decoding settings and the series' own random stream: what the
    batcher queues and `ForecastEngine.forecast` merges across requests."""

    model_config = STRICT

    series: SeriesInput
    prediction_length: int = Field(ge=1)
    num_samples: int = Field(ge=1)
    quantile_levels: list[QuantileLevel]
    return_samples: bool
    feedback: Feedback = "sample"
    row_seed: int = Field(ge=0, lt=2**32)

    @classmethod
    def split(cls, request: ForecastRequest, seed: int) -> list[SeriesTask]:
        """Series i gets `row_seeds(seed, n)[i]`: the stream `TotoForecaster.forecast(<all n series>, seed=seed)`
        gives it, so the service answers what the forecaster would for the same input and seed."""
        seeds = row_seeds(seed, len(request.series))
        return [
            cls.model_construct(  # the request was validated; its series need no second pass here
                series=series, prediction_length=request.prediction_length, num_samples=request.num_samples,
                quantile_levels=request.quantile_levels, return_samples=request.return_samples,
                feedback=request.feedback, row_seed=row_seed,
            )
            for series, row_seed in zip(request.series, seeds)
        ]


@dataclass(frozen=True)
class RequestCost:
    """The memory a request is admitted on, in bytes."""

    result_bytes: int
    """Its answer (mean, median, quantiles, samples) as Python objects and JSON, held until it is sent."""
    working_bytes: int
    """The largest forward pass it needs on its own (one series), under what the budget leaves after its answer."""

    @property
    def total_bytes(self) -> int:
        return self.result_bytes + self.working_bytes


@dataclass(frozen=True)
class PassPlan:
    """One forward pass over tasks of equal shape key: which tasks, and how many sample paths are decoded together."""

    indices: list[int]
    paths_per_chunk: int


@dataclass(frozen=True)
class EngineSpec:
    """What builds the service's engine: read from the settings, and sent (pickled) to the model's process."""

    checkpoint: str
    device: str | None
    dtype: torch.dtype
    """The weights' and matmuls' dtype (the series, the scaler and the sampling stay float32)."""
    samples_per_batch: int
    memory_budget_bytes: int


def load_engine(spec: EngineSpec) -> ForecastEngine:
    """The model behind the service: the one place that says how a checkpoint becomes a forecaster."""
    return ForecastEngine(load_model(spec.checkpoint, spec.device, spec.dtype), spec.samples_per_batch,
                          spec.memory_budget_bytes)


class ForecastEngine:
    """A loaded model of either family (`ForecastPipeline`) and the batching rules above."""

    def __init__(self, pipeline: ForecastPipeline, samples_per_batch: int, memory_budget_bytes: int) -> None:
        self.pipeline = pipeline
        self.memory_budget_bytes = memory_budget_bytes
        self.forecaster = (TotoForecaster(pipeline.model.model, memory_budget_bytes) if pipeline.samples else None)
        self.patch_size = pipeline.patch_size
        # The most sample paths decoded together (fewer when a pass would not fit its memory limit).
        self.samples_per_batch = samples_per_batch

    def release_weights(self) -> None:
        """Keep only what planning needs (limits and memory costs read the config and the weights' dtype): the
        service's planning copy, whose forward passes run in another process, then does not hold the weights
        twice. `forecast` cannot run afterwards."""
        self.pipeline.model.to("meta")

    def problems(self, request: ForecastRequest) -> list[Problem]:
        """What this model cannot do for a request within the limits and with valid timestamps: sample paths from a
        quantile model, or variates with no observed value in the context the model reads."""
        if request.return_samples and not self.pipeline.samples:
            return [Problem(("return_samples",), f"{self.pipeline.family} is a quantile model: it forecasts quantiles"
                            " in one pass and has no sample paths to return; set return_samples to false")]
        if request.feedback != "sample" and not self.pipeline.samples:
            return [Problem(("feedback",), f"{self.pipeline.family} is a quantile model: it forecasts quantiles in"
                            " one pass and feeds back no samples; leave feedback out")]
        context = self.pipeline.context_length
        problems = []
        for i, series in enumerate(request.series):
            names = [*series.variates, *series.exogenous]
            if empty := unobserved_in_context(series.context(series.time_grid()), names, context):
                problems.append(Problem(("series", i, "variates"), f"{empty} have no observed value in the last "
                                        f"{context} steps, the context this model reads (its default context): "
                                        "send recent values or drop them"))
        return problems

    def request_cost(self, request: ForecastRequest) -> RequestCost:
        """What `request` is admitted on; raises MemoryBudgetExceeded when it can never fit the budget."""
        levels = len(request.quantile_levels)
        values = sum(len(s.variates) for s in request.series) * request.prediction_length * (
            2 + levels + (request.num_samples if request.return_samples else 0))
        result = values * RESULT_BYTES_PER_VALUE
        room = self.memory_budget_bytes - result
        try:
            working = max(self._pass_bytes(task, 1, self._context_steps(task), room)[0]
                          for task in SeriesTask.split(request, seed=0))
        except MemoryBudgetExceeded as error:
            raise MemoryBudgetExceeded(result + max(error.needed_bytes, 0), self.memory_budget_bytes) from None
        return RequestCost(result, working)

    def forecast(self, tasks: Sequence[SeriesTask], pass_limit_bytes: int | None = None,
                 cancel: Cancellation | None = None) -> list[SeriesForecast]:
        """One forecast per task, in order. Each forward pass fits `pass_limit_bytes` (by default the budget):
        groups are split where needed. `cancel` is checked between decoding steps (ForecastCancelled)."""
        limit = self.memory_budget_bytes if pass_limit_bytes is None else pass_limit_bytes
        groups: dict[tuple[int | str, ...], list[int]] = defaultdict(list)
        for i, task in enumerate(tasks):
            groups[self._shape_key(task)].append(i)
        passes = [plan for indices in groups.values() for plan in self._split(tasks, indices, limit)]
        results: list[SeriesForecast | None] = [None] * len(tasks)
        for plan in passes:
            group = [tasks[i] for i in plan.indices]
            for i, result in zip(plan.indices, self._forecast_group(group, plan.paths_per_chunk, cancel)):
                results[i] = result
        log.debug("forecast %d series in %d forward pass(es)", len(tasks), len(passes))
        return results

    def _split(self, tasks: Sequence[SeriesTask], indices: list[int], limit: int) -> list[PassPlan]:
        """Passes over the tasks `indices` (of one shape key) that each fit `limit` bytes and decode as many paths
        together as their first task would alone; similar context lengths go together (less padding)."""
        lengths = {i: self._context_steps(tasks[i]) for i in indices}
        passes: list[PassPlan] = []
        for i in sorted(indices, key=lengths.__getitem__):  # longest last: the pass's context is its length
            if passes:
                current = passes[-1]
                try:
                    _, paths = self._pass_bytes(tasks[i], len(current.indices) + 1, lengths[i], limit)
                except MemoryBudgetExceeded:
                    paths = 0
                if paths >= current.paths_per_chunk:
                    current.indices.append(i)
                    continue
            _, paths = self._pass_bytes(tasks[i], 1, lengths[i], limit)  # admission made sure one series fits
            passes.append(PassPlan([i], paths))
        return passes

    def _pass_bytes(self, task: SeriesTask, count: int, context: int, limit: int) -> tuple[int, int]:
        """(peak bytes, sample paths decoded together) of one forward pass over `count` tasks shaped like `task`
        with contexts of at most `context` steps, under `limit` bytes; raises MemoryBudgetExceeded if it cannot fit."""
        width = len(task.series.variates) + len(task.series.exogenous)
        if self.forecaster is not None:
            model = self.forecaster.model
            plan = plan_forecast(model.config, count, width, context, task.prediction_length, task.num_samples,
                                 limit, self.samples_per_batch, element_size=next(model.parameters()).element_size())
            return plan.peak_bytes, plan.paths_per_chunk
        peak = self._quantile_pass_bytes(count * width, context, task.prediction_length, len(task.quantile_levels))
        if peak > limit:
            raise MemoryBudgetExceeded(peak, limit)
        return peak, 1

    def _quantile_pass_bytes(self, rows: int, context: int, horizon: int, levels: int) -> int:
        """An upper estimate of a quantile model's single pass (context and horizon patches through every layer),
        in the spirit of `memory.plan_forecast`: inputs, one layer's activations of every token, the attention
        scores of one layer, and the quantiles."""
        config = self.pipeline.model.config
        tokens = math.ceil(context / config.patch_size) + math.ceil(horizon / config.patch_size)
        inputs = rows * (context + horizon) * 64
        activations = rows * tokens * (6 * config.d_model + 3 * config.d_ff) * FLOAT32
        attention = 2 * rows * config.num_heads * tokens**2 * FLOAT32
        outputs = 3 * rows * horizon * (9 + levels + 1) * FLOAT32
        return inputs + activations + attention + outputs

    def _context_steps(self, task: SeriesTask) -> int:
        """The time steps the model reads: the series' length (its time grid's when gaps are filled in), cut to
        the model's default context (`ForecastPipeline.context_length`: the context it was trained with, or the
        one its validation chose), as `predict_df` and `toto forecast` cut it."""
        series = task.series
        length = series.length if series.timestamps is None else len(series.time_grid())
        return min(length, self.pipeline.context_length)

    @staticmethod
    def _shape_key(task: SeriesTask) -> tuple[int | str, ...]:
        series = task.series
        width = len(series.variates) + len(series.exogenous)
        return width, len(series.exogenous), task.prediction_length, task.num_samples, task.feedback

    def _forecast_group(self, tasks: list[SeriesTask], paths_per_chunk: int,
                        cancel: Cancellation | None) -> list[SeriesForecast]:
        """One forward pass over tasks of equal shape key; contexts are left-padded with NaN (missing)."""
        series = [task.series for task in tasks]
        first = tasks[0]
        inputs = stack_ragged([s.context(s.time_grid()) for s in series], self.pipeline.context_length)
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
                samples_per_batch=paths_per_chunk,
                future_exogenous_variables=future,
                exogenous_layout="aligned",
                seed=[task.row_seed for task in tasks],
                cancel=cancel,
                context_ensemble=self.pipeline.context_ensemble,
                feedback=first.feedback,
            )
        return self._summarise(forecast, tasks)

    @staticmethod
    def _summarise(forecast: Forecast, tasks: list[SeriesTask]) -> list[SeriesForecast]:
        """The JSON bodies: mean, median and each task's quantiles (and samples) per target variate."""
        levels = sorted({0.5, *(level for task in tasks for level in task.quantile_levels)})
        stats = {"mean": forecast.mean, **dict(zip(levels, forecast.quantile(levels)))}  # one sort for all levels
        stats["median"] = stats[0.5]
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
