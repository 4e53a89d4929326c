"""Request and response bodies of `POST /forecast`, as pydantic models.

The models are strict (no "1" for 1, no true for 1, no unknown fields, no NaN or Infinity): monitoring code that
sends the wrong thing gets a 400 that names the field, instead of a forecast of something it did not mean.
What a field-by-field schema cannot say (variates of unequal length, timestamps that do not match the values)
is checked by the model validators below, also answered 400. Limits that depend on the server's configuration
live in `serve.checks` and are answered 422. Timestamps follow the rules of `toto.tables` (the ones the CLI and
training use): the frequency is `freq` or inferred, and gaps in the timestamps become missing values.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, cast

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.config import JsonDict, JsonValue

from toto.options import DEFAULT_NUM_SAMPLES, Feedback
from toto.tables import grid_from_start, parse_frequency, parse_timestamps, regular_grid
from toto.validation import MAX_ABS_VALUE, MAX_SEED, InputError

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)

Value = Annotated[float, Field(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
# A variate's values, at least one; and its name, not empty. Field constraints, so that the OpenAPI document states
# what the server refuses (a 400 naming the variate).
Values = Annotated[list[Value | None], Field(min_length=1)]
FutureValues = Annotated[list[Value], Field(min_length=1)]
Name = Annotated[str, Field(min_length=1)]
# `toto.validation.check_quantile_levels`'s rule, as a JSON schema (so that the OpenAPI document states it).
QuantileLevel = Annotated[float, Field(gt=0, lt=1)]
# ISO 8601 (date-only too) or Unix seconds, as monitoring systems export them.
Timestamp = Annotated[datetime, Field(strict=False)]


def null_first(schema: JsonDict) -> None:
    """A nullable list's JSON schema with null listed first. BentoML's client reads a field as the first of its
    `anyOf` schemas and encodes or decodes a null by it: with the list first, a null `timestamps` (the answer to a
    series without time, or a request that sends the field as null) failed in its serde ("'NoneType' object is not
    iterable"). With null first, it passes nulls and lists as they are (timestamps stay ISO 8601 strings)."""
    options = cast(list[JsonDict], schema["anyOf"])
    ordered: list[JsonDict] = sorted(options, key=lambda option: option.get("type") != "null")
    schema["anyOf"] = cast(list[JsonValue], ordered)


EXAMPLE_REQUEST: JsonDict = {
    "series": [
        {
            "id": "web-1",
            "variates": {"cpu": [0.41, 0.45, None, 0.52, 0.48, 0.50], "memory": [0.61, 0.62, 0.62, 0.63, 0.65, 0.64]},
            "start": "2024-05-01T00:00:00Z",
            "freq": "5min",
        }
    ],
    "prediction_length": 3,
    "num_samples": 32,
    "quantile_levels": [0.1, 0.5, 0.9],
    "seed": 0,
}


class TimestampError(ValueError):
    """The series' timestamps cannot be continued into the future; the message says why."""


class ObservedSeries(BaseModel):
    """Named variates observed at the same time steps, oldest value first, with their time: what `/forecast`'s and
    `/detect`'s series share."""

    model_config = STRICT

    id: str | None = Field(None, description="Echoed back in the answer, to match answers to questions.")
    variates: dict[Name, Values] = Field(
        min_length=1,
        description="Variate name -> values, oldest first; null marks a missing value. All of equal length.",
    )
    start: Timestamp | None = Field(None, description="Timestamp of the first value; needs freq.")
    freq: str | None = Field(None, description="pandas frequency of the steps, e.g. '5min', 'h', 'D', 'MS'.")
    timestamps: list[Timestamp] | None = Field(None, description="One timestamp per value, instead of start.",
                                                json_schema_extra=null_first)

    @property
    def length(self) -> int:
        return len(next(iter(self.variates.values())))

    def _check_values(self, columns: dict[str, Values]) -> None:
        """Columns (of at least one value each, `Values`) of equal length, each with an observed value; timestamps
        one per value."""
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"variates and exogenous variables must all have the same length, got {lengths}")
        if empty := [name for name, values in columns.items() if all(v is None for v in values)]:
            raise ValueError(f"{empty} have no observed value (all null): drop them or send some values")
        if self.timestamps is not None:
            if self.start is not None:
                raise ValueError("give either start (with freq) or timestamps, not both")
            if len(self.timestamps) != self.length:
                raise ValueError(f"{len(self.timestamps)} timestamps for {self.length} values; give one per value")
        elif self.start is not None and self.freq is None:
            raise ValueError("start needs freq (e.g. '5min') to place the following values")


class SeriesInput(ObservedSeries):
    """One series to forecast, and its known covariates."""

    variates: dict[Name, Values] = Field(
        min_length=1,
        description="Variate name -> values, oldest first; null marks a missing value. All of equal length. The "
        "model reads at most its default context, the most recent steps (docs/serving.md).",
    )
    exogenous: dict[Name, Values] = Field(
        default_factory=dict,
        description="Past values of known covariates (same length as the variates); they are not forecast.",
    )
    future_exogenous: dict[Name, FutureValues] = Field(
        default_factory=dict,
        description="Future values of every exogenous variable, prediction_length of them each.",
    )

    @model_validator(mode="after")
    def _check_shapes(self) -> SeriesInput:
        if overlap := sorted(self.variates.keys() & self.exogenous.keys()):
            raise ValueError(f"{overlap} are both variates and exogenous variables; give each name once")
        self._check_values({**self.variates, **self.exogenous})
        if self.exogenous.keys() != self.future_exogenous.keys():
            raise ValueError(
                "future_exogenous must give future values for exactly the exogenous variables "
                f"{sorted(self.exogenous)}, got {sorted(self.future_exogenous)}"
            )
        return self

    def time_grid(self) -> pd.DatetimeIndex | None:
        """The regular time grid of the values (`toto.tables.regular_grid`), None when the series has no time.

        Raises TimestampError when the timestamps cannot be put on a grid (unknown frequency, duplicates,
        timestamps off the grid or finer than a second, a start off its frequency's grid). Computed once: the
        checks, the admission and the forward pass all read it (about 1 ms for 4,096 timestamps).
        """
        return self._time_grid

    @functools.cached_property
    def _time_grid(self) -> pd.DatetimeIndex | None:
        try:
            if self.freq is not None:
                parse_frequency(self.freq)  # checked even when unused, rather than silently ignored
            if self.start is None and self.timestamps is None:
                return None
            if self.timestamps is None:
                assert self.start is not None and self.freq is not None  # _check_values: start needs freq
                return grid_from_start(self.start, self.length, self.freq)
            if not self._timestamp_index.is_monotonic_increasing:
                raise TimestampError("timestamps must be increasing")
            return regular_grid(self._timestamp_index, self.freq)
        except InputError as error:
            raise TimestampError(str(error)) from error
        except (ValueError, TypeError, OverflowError) as error:  # pandas' ways of saying "cannot"
            raise TimestampError(f"cannot place the timestamps: {error}") from error

    @functools.cached_property
    def _timestamp_index(self) -> pd.DatetimeIndex:
        """`timestamps` read by the table rules (`toto.tables.parse_timestamps`): to the second, years 1 to 9999,
        in UTC when their UTC offsets differ."""
        return parse_timestamps(pd.Series(self.timestamps, dtype=object), "timestamps")

    def context(self, grid: pd.DatetimeIndex | None) -> np.ndarray:
        """(variates + exogenous, time) float64 values on `grid` (from `time_grid`), NaN where missing or in a gap."""
        values = np.array([*self.variates.values(), *self.exogenous.values()], dtype=float)
        if grid is None or self.timestamps is None or len(grid) == self.length:
            return values
        on_grid = np.full((len(values), len(grid)), np.nan)
        on_grid[:, grid.get_indexer(self._timestamp_index)] = values
        return on_grid

    def future_timestamps(self, grid: pd.DatetimeIndex | None, prediction_length: int) -> list[datetime] | None:
        """The forecast's timestamps, continuing `grid` (from `time_grid`); None when the input has none."""
        if grid is None:
            return None
        try:
            future = pd.date_range(grid[-1], periods=prediction_length + 1, freq=grid.freq, unit="s")[1:]
            return future.to_pydatetime().tolist()
        except (ValueError, TypeError, OverflowError) as error:  # e.g. past the year 9999
            raise TimestampError(f"cannot continue the timestamps: {error}") from error


class ForecastRequest(BaseModel):
    """One or many series to forecast with the same horizon and sampling settings."""

    model_config = ConfigDict(**STRICT, json_schema_extra={"example": EXAMPLE_REQUEST})

    series: list[SeriesInput] = Field(min_length=1, description="The series to forecast.")
    prediction_length: int = Field(ge=1, description="Number of future steps to forecast.")
    num_samples: int | None = Field(
        None, ge=1, description=f"Sample paths per series of a sampling model (Toto 1.0; {DEFAULT_NUM_SAMPLES} when "
        "left out); quantiles come from them. A quantile model (Toto 2.0) draws none: leave it out."
    )
    quantile_levels: list[QuantileLevel] = Field(
        default_factory=lambda: [0.1, 0.5, 0.9], description="Quantiles to return, each strictly between 0 and 1."
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED, description="Makes the answer reproducible; every series uses it. Random if unset."
    )
    return_samples: bool = Field(False, description="Also return the sample paths (large).")
    feedback: Feedback = Field(
        "sample", description="Sampling models only: what a sample path's next patch is decoded from. 'sample': its"
        " own draws (Toto 1.0; every path a trajectory). 'mean': the mean forecast, decoded once per series, each"
        " step's values drawn given it (marginals rather than paths; several times cheaper for many series, and"
        " long seasonal horizons keep their cycles).",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> ForecastRequest:
        if len(set(self.quantile_levels)) != len(self.quantile_levels):
            raise ValueError(f"quantile_levels has duplicates: {self.quantile_levels}")
        for i, series in enumerate(self.series):
            lengths = {name: len(values) for name, values in series.future_exogenous.items()}
            if any(n != self.prediction_length for n in lengths.values()):
                raise ValueError(
                    f"series {i}: future_exogenous needs prediction_length={self.prediction_length} values per "
                    f"variable, got {lengths}"
                )
        return self


class VariateForecast(BaseModel):
    """The forecast of one variate; every list has prediction_length values."""

    mean: list[float]
    median: list[float]
    quantiles: dict[str, list[float]] = Field(description="Quantile level (as sent, e.g. '0.1') -> values.")
    samples: list[list[float]] | None = Field(None, description="num_samples paths, when return_samples is set.")


class SeriesForecast(BaseModel):
    id: str | None = None
    timestamps: list[datetime] | None = Field(None, description="When the input had timestamps.",
                                              json_schema_extra=null_first)
    variates: dict[str, VariateForecast]


class ForecastResponse(BaseModel):
    model_id: str = Field(description="The checkpoint that made the forecast.")
    prediction_length: int
    num_samples: int | None = Field(description="The sample paths the forecast is made of; null for a quantile model.")
    seed: int = Field(description="The seed used; send it back to reproduce this answer.")
    forecasts: list[SeriesForecast] = Field(description="One per input series, in the same order.")


# ----- POST /detect -----------------------------------------------------------------------------------------------

EXAMPLE_DETECT_REQUEST: JsonDict = {
    "series": [
        {
            "id": "web-1",
            "variates": {"cpu": [0.41, 0.45, None, 0.52, 0.48, 0.50, 0.97, 0.49]},
            "start": "2024-05-01T00:00:00Z",
            "freq": "5min",
        }
    ],
    "alerts_per_day": 1,
}


class DetectSeries(ObservedSeries):
    """One series to score. Its `timestamps` may be irregular, as real exports are: gaps, repeated timestamps,
    steps off the grid and a clock that moves back are all scored (each value under the distribution of the grid step
    it is placed on, `toto.tables.place_rows`)."""

    @model_validator(mode="after")
    def _check_shapes(self) -> DetectSeries:
        self._check_values(self.variates)
        return self


class DetectRequest(BaseModel):
    """One or many series to score for anomalies, and the alert budget that flags them."""

    model_config = ConfigDict(**STRICT, json_schema_extra={"example": EXAMPLE_DETECT_REQUEST})

    series: list[DetectSeries] = Field(min_length=1, description="The series to score.")
    alerts_per_day: float | None = Field(
        None, gt=0, description="Alert budget: flagged values per day of each series (default 1, when "
        "false_alarm_rate is not given). Needs timestamps (or start and freq)."
    )
    false_alarm_rate: float | None = Field(
        None, gt=0, lt=1, description="Alert budget as the share of a series' normal values allowed to be flagged.",
    )
    band_level: float = Field(0.99, gt=0, lt=1, description="Central probability of the band (lower, upper).")
    window: int = Field(0, ge=0, description="Values a window test reads (drifts, broken cycles); 0 for none.")
    steps_ahead: int | None = Field(
        None, ge=1, description="Score each value at most this many steps past its context (default: half a patch).",
    )

    @model_validator(mode="after")
    def _check_budget(self) -> DetectRequest:
        if self.alerts_per_day is not None and self.false_alarm_rate is not None:
            raise ValueError("give alerts_per_day or false_alarm_rate, not both")
        return self


class VariateScores(BaseModel):
    """The scores of one variate, one entry per value sent (null where the value is missing or has no score)."""

    anomaly_score: list[float | None] = Field(description="In [0, 1]: 1 minus the calibrated tail probability.")
    is_anomaly: list[bool] = Field(description="Flagged at the alert budget.")
    lower: list[float | None]
    upper: list[float | None]
    median: list[float | None]


class CombinedScores(BaseModel):
    """A multivariate series' scores over its variates, one per step."""

    anomaly_score: list[float | None]
    is_anomaly: list[bool]


class SeriesScores(BaseModel):
    id: str | None = None
    variates: dict[str, VariateScores]
    combined: CombinedScores | None = Field(None, description="Over the variates (multivariate series).")
    placement: str = Field(description="How the values were placed on a grid, in one line.")


class DetectResponse(BaseModel):
    model_id: str = Field(description="The checkpoint that scored the values.")
    series: list[SeriesScores] = Field(description="One per input series, in the same order.")
