"""Turn a batch of series tasks into as few forward passes as possible, and the forecasts into JSON bodies.

The batcher (`serve.batching`) hands `forecast` the series of every request queued together. Tasks that share a width
and decoding settings (variates, exogenous variables, horizon, samples, feedback) run as one `ForecastPipeline.predict`
call, with shorter contexts left-padded with NaN. Each task keeps its own random stream (one seed per batch row), and
the forecaster is invariant to left-padding, so a series gets the same numbers whether it is served alone or merged
with others, up to float32 rounding in the batched matrix products (docs/serving.md states and tests the bound).

Memory: every forward pass is planned to fit a byte limit (`ForecastPipeline.plan`, the model family's cost plan), so
a merged group is split into passes that fit. `request_cost` is what the service admits a request on: the memory its
answer holds plus its largest single-series pass. Time: `request_work` counts the tokens the model forwards for a
request, which the service divides by the throughput it measured to refuse what cannot finish within its timeout.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field

from serve.checks import Problem
from serve.schemas import (
    STRICT,
    CombinedScores,
    DetectRequest,
    DetectSeries,
    ForecastRequest,
    QuantileLevel,
    SeriesForecast,
    SeriesInput,
    SeriesScores,
    VariateForecast,
    VariateScores,
)
from toto.anomaly.detector import DetectionSettings
from toto.api import load_model
from toto.data.util.dataset import stack_ragged, unobserved_in_context
from toto.inference.cancel import Cancellation, raise_if_cancelled
from toto.inference.memory import ForecastPlan, MemoryBudgetExceeded
from toto.inference.streams import row_seeds
from toto.options import Feedback
from toto.pipeline import ForecastPipeline, Prediction
from toto.tables import grid_from_start, parse_timestamps
from toto.validation import InputError

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
    num_samples: int | None = Field(None, ge=1)  # None: the model family's default
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


class DetectTask(BaseModel):
    """One series of a /detect request, with the request's settings: what the batcher queues beside the forecast
    tasks, and `ForecastEngine.detect` scores together with the other series of the same settings and length."""

    model_config = STRICT

    series: DetectSeries
    alerts_per_day: float | None = None
    false_alarm_rate: float | None = None
    band_level: float = 0.99
    window: int = 0
    steps_ahead: int | None = None

    @classmethod
    def split(cls, request: DetectRequest) -> list[DetectTask]:
        return [cls.model_construct(series=series, alerts_per_day=request.alerts_per_day,
                                    false_alarm_rate=request.false_alarm_rate, band_level=request.band_level,
                                    window=request.window, steps_ahead=request.steps_ahead)
                for series in request.series]

    def settings(self) -> DetectionSettings:
        return DetectionSettings(steps_ahead=self.steps_ahead, window=self.window, band_level=self.band_level,
                                 false_alarm_rate=self.false_alarm_rate, alerts_per_day=self.alerts_per_day or 1.0)

    def timestamps(self) -> pd.DatetimeIndex:
        """The values' timestamps (UTC, naive), read by the table rules (`toto.tables`: a start on its frequency's
        grid), or 0, 1, 2, ... seconds for a series without time."""
        series = self.series
        if series.timestamps is not None:
            stamps = parse_timestamps(pd.Series(series.timestamps, dtype=object), "timestamps")
        elif series.start is not None:
            assert series.freq is not None  # ObservedSeries._check_values: start needs freq
            stamps = grid_from_start(series.start, series.length, series.freq)
        else:
            return pd.DatetimeIndex(pd.to_datetime(np.arange(series.length), unit="s"))
        return stamps.tz_convert(None) if stamps.tz is not None else stamps


Task = SeriesTask | DetectTask
Answer = SeriesForecast | SeriesScores


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
        self.patch_size = pipeline.patch_size
        # The most sample paths decoded together (fewer when a pass would not fit its memory limit).
        self.samples_per_batch = samples_per_batch

    def release_weights(self) -> None:
        """Keep only what planning needs (limits and memory costs read the config and the weights' dtype): the
        service's planning copy, whose forward passes run in another process, then does not hold the weights
        twice. `forecast` cannot run afterwards."""
        self.pipeline.model.to("meta")

    def problems(self, request: ForecastRequest) -> list[Problem]:
        """What this model cannot do for a request within the limits and with valid timestamps: options it cannot
        honour (`ForecastPipeline.check_options`: sample paths from a quantile model, say), or variates with no
        observed value in the context the model reads."""
        try:
            self.pipeline.check_options(return_samples=request.return_samples, feedback=request.feedback,
                                        num_samples=request.num_samples)
        except InputError as error:
            return [Problem((error.field or "body",), str(error))]
        context = self.pipeline.context_length
        problems = []
        for i, series in enumerate(request.series):
            names = [*series.variates, *series.exogenous]
            if empty := unobserved_in_context(series.context(series.time_grid()), names, context):
                problems.append(Problem(("series", i, "variates"), f"{empty} have no observed value in the last "
                                        f"{context} steps, the context this model reads (its default context): "
                                        "send recent values or drop them"))
        return problems

    def num_samples(self, request: ForecastRequest) -> int | None:
        """The sample paths the answer to `request` is made of (None for a quantile model)."""
        return self.pipeline.sample_count(request.num_samples)

    def request_cost(self, request: ForecastRequest) -> RequestCost:
        """What `request` is admitted on; raises MemoryBudgetExceeded when it can never fit the budget."""
        levels = len(request.quantile_levels)
        samples_back = (self.num_samples(request) or 0) if request.return_samples else 0
        values = sum(len(s.variates) for s in request.series) * request.prediction_length * (2 + levels + samples_back)
        result = values * RESULT_BYTES_PER_VALUE
        room = self.memory_budget_bytes - result
        try:
            working = max(self._plan(task, 1, self._context_steps(task), room).peak_bytes
                          for task in SeriesTask.split(request, seed=0))
        except MemoryBudgetExceeded as error:
            raise MemoryBudgetExceeded(result + max(error.needed_bytes, 0), self.memory_budget_bytes) from None
        return RequestCost(result, working)

    def request_work(self, request: ForecastRequest) -> int:
        """The tokens the model forwards to answer `request`: `task_work` of each of its series."""
        return sum(self.task_work(task) for task in SeriesTask.split(request, seed=0))

    def task_work(self, task: SeriesTask) -> int:
        """What a forecast costs in time, counted in tokens (a patch of one variate) that the model forwards: the
        context's, encoded once, then the horizon's, once per sample path decoded (a quantile model decodes the
        horizon in one pass, and mean feedback one path per series). Decoding dominates a sampling model's large
        requests (64 variates, 256 paths and 64 steps: a million tokens against 8,192 for the context)."""
        series = task.series
        rows = len(series.variates) + len(series.exogenous)
        decoded = 1 if task.feedback == "mean" else self.pipeline.sample_count(task.num_samples) or 1
        patches = math.ceil(self._context_steps(task) / self.patch_size)
        return rows * (patches + decoded * math.ceil(task.prediction_length / self.patch_size))

    def detect_cost(self, request: DetectRequest) -> RequestCost:
        """What a /detect request is admitted on; raises MemoryBudgetExceeded when it can never fit the budget."""
        values = sum(s.length * len(s.variates) for s in request.series)
        result = values * 5 * RESULT_BYTES_PER_VALUE  # anomaly_score, is_anomaly, lower, upper, median
        working = max(self.pipeline.detection_cost_bytes(s.length, len(s.variates), request.steps_ahead)
                      for s in request.series)
        if result + working > self.memory_budget_bytes:
            raise MemoryBudgetExceeded(result + working, self.memory_budget_bytes)
        return RequestCost(result, working)

    def run(self, tasks: Sequence[Task], pass_limit_bytes: int | None = None,
            cancel: Cancellation | None = None) -> list[Answer]:
        """One answer per task, in order: the forecasts of the forecast tasks (`forecast`), the scores of the
        detection tasks (`detect`)."""
        forecasts = [i for i, task in enumerate(tasks) if isinstance(task, SeriesTask)]
        detections = [i for i, task in enumerate(tasks) if isinstance(task, DetectTask)]
        answers: dict[int, Answer] = {}
        if forecasts:
            forecast_tasks = [task for task in tasks if isinstance(task, SeriesTask)]
            answers |= zip(forecasts, self.forecast(forecast_tasks, pass_limit_bytes, cancel))
        if detections:
            detect_tasks = [task for task in tasks if isinstance(task, DetectTask)]
            answers |= zip(detections, self.detect(detect_tasks, cancel))
        return [answers[i] for i in range(len(tasks))]

    def detect(self, tasks: Sequence[DetectTask], cancel: Cancellation | None = None) -> list[SeriesScores]:
        """The scores of each task's series. Series of the same settings and variates are scored as one table, so
        that those of one length share their passes (`ForecastPipeline.detect_table`); `cancel` is checked
        between tables (ForecastCancelled)."""
        groups: dict[tuple[DetectionSettings, tuple[str, ...]], list[int]] = defaultdict(list)
        for i, task in enumerate(tasks):
            groups[(task.settings(), tuple(task.series.variates))].append(i)
        answers: dict[int, SeriesScores] = {}
        for (settings, names), indices in groups.items():
            raise_if_cancelled(cancel)
            frames = [pd.DataFrame({SERIES_COLUMN: i, TIME_COLUMN: tasks[i].timestamps(),
                                    **{name: np.asarray(tasks[i].series.variates[name], dtype=float)
                                       for name in names}}) for i in indices]
            table = pd.concat(frames, ignore_index=True)
            scored, placement = self.pipeline.detect_table(table, TIME_COLUMN, SERIES_COLUMN, list(names),
                                                           settings=settings)
            for i, placed in zip(indices, placement.series, strict=True):  # series in order of first appearance
                answers[i] = _scores(tasks[i], scored.iloc[np.sort(placed.rows)], list(names), placed.summary())
        return [answers[i] for i in range(len(tasks))]

    def forecast(self, tasks: Sequence[SeriesTask], pass_limit_bytes: int | None = None,
                 cancel: Cancellation | None = None) -> list[SeriesForecast]:
        """One forecast per task, in order. Each forward pass fits `pass_limit_bytes` (by default the budget):
        groups are split where needed. `cancel` is checked between decoding steps (ForecastCancelled)."""
        limit = self.memory_budget_bytes if pass_limit_bytes is None else pass_limit_bytes
        groups: dict[tuple[object, ...], list[int]] = defaultdict(list)
        for i, task in enumerate(tasks):
            groups[self._shape_key(task)].append(i)
        passes = [plan for indices in groups.values() for plan in self._split(tasks, indices, limit)]
        results: dict[int, SeriesForecast] = {}
        for plan in passes:
            group = [tasks[i] for i in plan.indices]
            results |= zip(plan.indices, self._forecast_group(group, plan.paths_per_chunk, cancel))
        log.debug("forecast %d series in %d forward pass(es)", len(tasks), len(passes))
        return [results[i] for i in range(len(tasks))]

    def _split(self, tasks: Sequence[SeriesTask], indices: list[int], limit: int) -> list[PassPlan]:
        """Passes over the tasks `indices` (of one shape key) that each fit `limit` bytes and decode as many paths
        together as their first task would alone; similar context lengths go together (less padding)."""
        lengths = {i: self._context_steps(tasks[i]) for i in indices}
        passes: list[PassPlan] = []
        for i in sorted(indices, key=lengths.__getitem__):  # longest last: the pass's context is its length
            if passes:
                current = passes[-1]
                try:
                    paths = self._plan(tasks[i], len(current.indices) + 1, lengths[i], limit).paths_per_chunk
                except MemoryBudgetExceeded:
                    paths = 0
                if paths >= current.paths_per_chunk:
                    current.indices.append(i)
                    continue
            paths = self._plan(tasks[i], 1, lengths[i], limit).paths_per_chunk  # admission made sure one fits
            passes.append(PassPlan([i], paths))
        return passes

    def _plan(self, task: SeriesTask, count: int, context: int, limit: int) -> ForecastPlan:
        """The cost plan of one forward pass over `count` tasks shaped like `task` with contexts of at most
        `context` steps, under `limit` bytes; raises MemoryBudgetExceeded if it cannot fit."""
        width = len(task.series.variates) + len(task.series.exogenous)
        return self.pipeline.plan(count, width, context, task.prediction_length, task.num_samples,
                                  len(task.quantile_levels), limit, self.samples_per_batch)

    def _context_steps(self, task: SeriesTask) -> int:
        """The time steps the model reads: the series' length (its time grid's when gaps are filled in), cut to
        the model's default context (`ForecastPipeline.context_length`: the context it was trained with, or the
        one its validation chose), as `predict_df` and `toto forecast` cut it."""
        series = task.series
        grid = series.time_grid()
        length = series.length if series.timestamps is None or grid is None else len(grid)
        return min(length, self.pipeline.context_length)

    @staticmethod
    def _shape_key(task: SeriesTask) -> tuple[object, ...]:
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
        levels = sorted({0.5, *(level for task in tasks for level in task.quantile_levels)})
        prediction = self.pipeline.predict(
            inputs._replace(num_exogenous_variables=num_exogenous), first.prediction_length, levels,
            future_exogenous=future, num_samples=first.num_samples, seed=[task.row_seed for task in tasks],
            feedback=first.feedback, cancel=cancel, memory_budget_bytes=self.memory_budget_bytes,
            paths_per_batch=paths_per_chunk,
        )
        return _answers(prediction, tasks)


def _answers(prediction: Prediction, tasks: list[SeriesTask]) -> list[SeriesForecast]:
    """The JSON bodies: mean, median and each task's quantiles (and samples) per target variate."""
    mean = prediction.mean.cpu().numpy()
    by_level = {level: values.cpu().numpy() for level, values in zip(prediction.levels, prediction.quantiles)}
    results = []
    for row, task in enumerate(tasks):
        series = task.series
        variates = {}
        for v, name in enumerate(series.variates):  # targets come first; exogenous variates are not reported
            samples = None
            if task.return_samples and prediction.samples is not None:
                samples = prediction.samples[row, v].T.cpu().numpy().tolist()
            variates[name] = VariateForecast(
                mean=mean[row, v].tolist(),
                median=by_level[0.5][row, v].tolist(),
                quantiles={str(level): by_level[level][row, v].tolist() for level in task.quantile_levels},
                samples=samples,
            )
        timestamps = series.future_timestamps(series.time_grid(), task.prediction_length)
        results.append(SeriesForecast(id=series.id, timestamps=timestamps, variates=variates))
    return results


# The columns a /detect request's series are gathered under (a long table: `toto.tables.read_columns`).
SERIES_COLUMN, TIME_COLUMN = "__series__", "__time__"


def _scores(task: DetectTask, rows: pd.DataFrame, names: list[str], placement: str) -> SeriesScores:
    """A series' JSON body from its rows of `ForecastPipeline.detect_table`'s table (in the order sent)."""

    def floats(column: str) -> list[float | None]:
        return [None if not np.isfinite(v) else float(v) for v in rows[column].to_numpy(dtype=float)]

    def flags(column: str) -> list[bool]:
        return [bool(v) for v in rows[column].to_numpy()]

    single = len(names) == 1
    variates = {
        name: VariateScores(**{field: floats(column) for field, column in (
            ("anomaly_score", "anomaly_score" if single else f"{name}_anomaly_score"),
            ("lower", "lower" if single else f"{name}_lower"), ("upper", "upper" if single else f"{name}_upper"),
            ("median", "median" if single else f"{name}_median"))},
            is_anomaly=flags("is_anomaly" if single else f"{name}_is_anomaly"))
        for name in names
    }
    combined = None if single else CombinedScores(anomaly_score=floats("anomaly_score"), is_anomaly=flags("is_anomaly"))
    return SeriesScores(id=task.series.id, variates=variates, combined=combined, placement=placement)
