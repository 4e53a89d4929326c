"""Scoring many series as their values arrive, within a memory bound.

    detector = StreamingDetector(pipeline, step_seconds=300)
    scores = detector.update("web-1", timestamps, values)   # the new rows' anomaly scores, bands and flags

Each series keeps: its grid (first timestamp and step), the model's stream over the current window
(`ForecastPipeline.open_value_stream`: Toto 1.0 keeps KV caches that a new patch extends by one token), and the
history the window tests and the calibration need (`toto.anomaly.detector.ScoreHistory`). A series' scores are those
a whole-history detection gives its values (up to float rounding: a KV-cached pass and a full one round differently),
and the score at t reads nothing after t.

Memory: the raw window and the histories are small and always kept; the caches are what grows with the number of
series. When they exceed `memory_budget_bytes`, the least recently updated series' caches are released, and rebuilt
from its raw window (one prefill) when it is next updated. The caches' total is kept up to date as series are updated
and released, and only the series that hold caches are queued for release, so an update costs the same with ten
series or ten thousand.

Rows: new rows are placed on the series' grid (the nearest step); steps between the last one and the new ones are
gaps (missing values); several rows on one step are averaged for the model and scored each on their own; a row for
a step already scored comes too late to score (NaN, counted in `late`). A gap longer than the model's window starts
the series' stream afresh (its calibration history is kept).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from toto.anomaly.detector import Detection, DetectionSettings, ScoreHistory, detect
from toto.pipeline import ForecastPipeline
from toto.tables import mean_per_step
from toto.validation import InputError

if TYPE_CHECKING:
    from toto.inference.next_value import ValueStream

# Caches of all series together, by default.
DEFAULT_MEMORY_BUDGET_BYTES = 1024**3


@dataclass
class _SeriesState:
    start: int  # the grid's first timestamp, Unix seconds
    step: int  # seconds
    variates: int
    stream: ValueStream
    history: ScoreHistory
    steps: int = 0  # grid steps pushed so far


@dataclass(frozen=True)
class StreamScores:
    """The scores of the rows given to one `update`, in their order (NaN for missing values and late rows)."""

    detection: Detection  # (1, variates, rows) arrays, as `ForecastPipeline.detect` gives them
    late: int  # rows for steps already scored


@dataclass
class StreamingDetector:
    """Anomaly scores of many series, updated as their values arrive (see the module docstring)."""

    pipeline: ForecastPipeline
    step_seconds: int | None = None  # the grid step of new series (None: inferred from their first rows)
    settings: DetectionSettings = field(default_factory=DetectionSettings)
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES
    bands: bool = True  # False: scores only, the band left NaN (`toto.anomaly.detector.detect` says why)
    released: int = field(default=0, init=False)  # caches dropped to keep within the budget, since the start
    _series: OrderedDict[Hashable, _SeriesState] = field(default_factory=OrderedDict, init=False, repr=False)
    # The series holding caches, least recently updated first, and the bytes their caches hold.
    _cached: OrderedDict[Hashable, None] = field(default_factory=OrderedDict, init=False, repr=False)
    _cache_bytes: int = field(default=0, init=False, repr=False)

    def __len__(self) -> int:
        return len(self._series)

    def nbytes(self) -> int:
        """The memory the series' caches hold now."""
        return self._cache_bytes

    def forget(self, key: Hashable) -> None:
        """Drop series `key` and everything kept for it (a series that stopped reporting)."""
        state = self._series.pop(key, None)
        if state is not None:
            self._cache_bytes -= state.stream.nbytes()
            self._cached.pop(key, None)

    def update(self, key: Hashable, timestamps: np.ndarray, values: np.ndarray) -> StreamScores:
        """Score the new rows of series `key`: `timestamps` (n,) Unix seconds (or datetime64) and `values` (n,) or
        (variates, n), NaN for missing."""
        seconds = _unix_seconds(timestamps)
        values = np.asarray(values, dtype=np.float64)
        values = values[None] if values.ndim == 1 else values
        if values.shape[-1] != len(seconds):
            raise InputError(f"{len(seconds)} timestamps for {values.shape[-1]} values: give one timestamp per value")
        state = self._series.get(key)
        if state is None:
            state = self._new_series(key, seconds, values.shape[0])
        elif values.shape[0] != state.variates:
            raise InputError(f"series {key!r} had {state.variates} variate(s), this update has {values.shape[0]}")
        self._series.move_to_end(key)
        held = state.stream.nbytes()
        slot = np.round((seconds - state.start) / state.step).astype(np.int64)
        fresh = slot >= state.steps
        if fresh.any() and slot[fresh].max() - state.steps > self.pipeline.scoring_windows().window:
            state.stream = self.pipeline.open_value_stream(state.variates, self.settings.steps_ahead)
            state.start, state.steps = int(seconds[fresh].min()), 0
            slot = np.round((seconds - state.start) / state.step).astype(np.int64)
            fresh = slot >= 0
        scores = self._score(state, slot, fresh, values)
        self._cache_bytes += state.stream.nbytes() - held
        if state.stream.nbytes():
            self._cached[key] = None
            self._cached.move_to_end(key)
        self._keep_within_budget()
        return StreamScores(scores, int((~fresh).sum()))

    def _new_series(self, key: Hashable, seconds: np.ndarray, variates: int) -> _SeriesState:
        step = self.step_seconds or _dominant_step(seconds, key)
        state = _SeriesState(int(seconds.min()), step, variates,
                             self.pipeline.open_value_stream(variates, self.settings.steps_ahead),
                             ScoreHistory.empty(variates))
        self._series[key] = state
        return state

    def _score(self, state: _SeriesState, slot: np.ndarray, fresh: np.ndarray, values: np.ndarray) -> Detection:
        """Push the new steps through the series' stream and score each fresh row under its step's distribution."""
        rows = values.shape[1]
        order = np.flatnonzero(fresh)[np.argsort(slot[fresh], kind="stable")]
        new_steps = int(slot[order].max()) + 1 - state.steps if len(order) else 0
        grid = mean_per_step(values[:, order], slot[order] - state.steps, max(new_steps, 0))
        distributions = state.stream.push(grid)
        state.steps += grid.shape[1]
        row_values = values[:, order][None]
        steps = slot[order] - (state.steps - grid.shape[1])  # each row's step among the pushed ones
        detection, (state.history,) = detect(row_values, distributions.take(steps), np.array([float(state.step)]),
                                             self.settings, [state.history], steps=slot[order], bands=self.bands)
        return _in_row_order(detection, order, rows)

    def _keep_within_budget(self) -> None:
        """Release the least recently updated series' caches until the caches fit the budget."""
        while self._cache_bytes > self.memory_budget_bytes and self._cached:
            key, _ = self._cached.popitem(last=False)
            stream = self._series[key].stream
            self._cache_bytes -= stream.nbytes()
            stream.release()
            self.released += 1


def _in_row_order(detection: Detection, order: np.ndarray, rows: int) -> Detection:
    """A detection of the rows `order` (by time) laid out in the update's row order, NaN for the other rows."""

    def spread(values: np.ndarray, fill: float | bool) -> np.ndarray:
        out = np.full((*values.shape[:-1], rows), fill, dtype=values.dtype)
        out[..., order] = values
        return out

    return Detection(
        anomaly_score=spread(detection.anomaly_score, np.nan),
        combined_score=spread(detection.combined_score, np.nan),
        is_anomaly=spread(detection.is_anomaly, False),
        is_anomaly_combined=spread(detection.is_anomaly_combined, False),
        lower=spread(detection.lower, np.nan), upper=spread(detection.upper, np.nan),
        median=spread(detection.median, np.nan), surprise=spread(detection.surprise, np.nan),
        alarm_rate=detection.alarm_rate,
    )


def _unix_seconds(timestamps: np.ndarray) -> np.ndarray:
    array = np.asarray(timestamps)
    if np.issubdtype(array.dtype, np.datetime64):
        return array.astype("datetime64[s]").astype(np.int64)
    return np.round(array.astype(np.float64)).astype(np.int64)


def _dominant_step(seconds: np.ndarray, key: Hashable) -> int:
    distinct = np.unique(seconds)
    if len(distinct) < 3:
        raise InputError(f"series {key!r}: its first update has {len(distinct)} distinct timestamp(s), too few to tell "
                         "its step: send at least 3, or give the detector step_seconds")
    gaps, counts = np.unique(np.diff(distinct), return_counts=True)
    return int(gaps[np.argmax(counts)])
