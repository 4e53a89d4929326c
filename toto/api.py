"""Forecast a pandas DataFrame with Toto: the one typed inference entry point behind `toto forecast`.

    from toto.api import predict_df
    forecast = predict_df(df, prediction_length=48)  # one row per series, variate and future step

The input may be wide (a timestamp column and one numeric column per variate) or long (an id column as well,
one series per id, each numeric column a variate of that series). The timestamp and id columns are found by
name or content unless named. Each series is put on a regular time grid whose frequency pandas infers; missing
values and gaps in the grid become NaN, which the model treats as unobserved. The forecast keeps the input's
column names and continues each series' timestamps at its frequency.

Whatever a user can get wrong in the table raises `InputError`, whose message says what and how to fix it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pandas.tseries.frequencies import to_offset
from tqdm.auto import tqdm

from toto.data.util.dataset import MaskedTimeseries, stack_ragged
from toto.inference.forecaster import DEFAULT_CONTEXT_LENGTH, TotoForecaster, row_seeds
from toto.model.toto import Toto

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# pandas needs three timestamps to infer a frequency.
MIN_TIME_STEPS = 3
# A grid this many times longer than its rows is mostly holes: more likely a wrong frequency or a stray
# timestamp than real data, and filling it could exhaust memory.
MAX_GRID_PER_ROW = 10

_TIMESTAMP_NAMES = ("timestamp", "ts", "time", "date", "datetime", "ds", "period", "quarter", "month", "week")
_ID_NAMES = ("id", "item_id", "unique_id", "series_id", "series", "item")


class InputError(ValueError):
    """The table cannot be forecast as it is; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Series:
    """One (multivariate) series on a regular time grid, as the model will see it."""

    id: object  # the value of the id column, as in the table; None for a wide table
    variates: list[str]  # the target column names, one per row of `values`
    index: pd.DatetimeIndex  # the regular grid; `index.freq` is its frequency
    values: np.ndarray  # (variates, time) float64, NaN where missing

    @property
    def interval_seconds(self) -> int:
        """Seconds per step. Exact for fixed frequencies; the mean step for calendar ones such as months."""
        span = self.index[-1] - self.index[0]
        return max(1, round(span.total_seconds() / (len(self.index) - 1)))

    def future_index(self, prediction_length: int) -> pd.DatetimeIndex:
        return pd.date_range(self.index[-1], periods=prediction_length + 1, freq=self.index.freq)[1:]


@dataclass(frozen=True)
class Panel:
    """The series of one table, with the column names that the forecast table reuses."""

    series: list[Series]
    timestamp_column: str
    id_column: str | None

    @property
    def form(self) -> str:
        return "long" if self.id_column else "wide"


def to_panel(
    df: pd.DataFrame,
    timestamp_column: str | None = None,
    id_column: str | None = None,
    target_columns: Sequence[str] | None = None,
    freq: str | None = None,
) -> Panel:
    """Validate a wide or long table and put each of its series on a regular time grid.

    Columns left as None are detected: the timestamp column by dtype, name or parsable content; the id column
    by name or as the one remaining text column; the targets as all remaining numeric columns. `freq` (a
    pandas frequency string such as "30min" or "MS") overrides frequency inference.
    """
    if isinstance(df.index, pd.DatetimeIndex):  # a frame indexed by time, as pandas users often have
        df = df.reset_index(names=df.index.name or "timestamp")
    if df.empty:
        raise InputError("the table has no rows")
    df = df.rename(columns=str)
    columns = list(df.columns)
    for name, flag in (
        (timestamp_column, "timestamp"),
        (id_column, "id"),
        *((t, "target") for t in target_columns or ()),
    ):
        if name is not None and name not in columns:
            raise InputError(f"the {flag} column {name!r} is not in the table; its columns are {columns}")

    timestamp_column = timestamp_column or _detect_timestamp_column(df)
    timestamps = _parse_timestamps(df[timestamp_column], timestamp_column)
    rest = [c for c in columns if c != timestamp_column]
    id_column = id_column or _detect_id_column(df, rest)
    rest = [c for c in rest if c != id_column]
    targets = list(target_columns) if target_columns else [c for c in rest if _is_numeric(df[c])]
    if not targets:
        raise InputError(
            f"no numeric column to forecast: the columns besides {timestamp_column!r}"
            f"{f' and {id_column!r}' if id_column else ''} are {rest or 'none'}{_non_numeric_hint(df, rest)}"
        )
    for column in targets:
        if not _is_numeric(df[column]):
            raise InputError(f"target column {column!r} is not numeric{_non_numeric_hint(df, [column])}")

    values = df[targets].astype("float64").replace([np.inf, -np.inf], np.nan).set_index(timestamps)
    if id_column and df[id_column].isna().any():
        raise InputError(
            f"id column {id_column!r} is empty in row {_first_row(df[id_column].isna())}: fill it in"
        )
    groups = values.groupby(df[id_column].to_numpy(), sort=False) if id_column else [(None, values)]
    series = [_regularise(key, group, freq) for key, group in groups]
    return Panel(series=series, timestamp_column=timestamp_column, id_column=id_column)


def load_model(checkpoint: str | Path = "toto-tiny", device: str | None = None) -> Toto:
    """A Toto model in eval mode: the embedded "toto-tiny", a local folder or a Hugging Face hub id.

    The device defaults to the GPU when there is one.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Toto.from_pretrained(str(checkpoint), map_location=device).to(device).eval()


def forecast_panel(
    panel: Panel,
    prediction_length: int,
    model: str | Path | Toto = "toto-tiny",
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    num_samples: int = 256,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Forecast every series of `panel`; returns the tidy table described in `predict_df`.

    Series are forecast `batch_size` at a time; series i samples from its own stream `row_seeds(seed, ...)[i]`
    (see `toto.inference.forecaster.row_seeds`), whatever the batching.
    """
    _check_settings(prediction_length, quantiles, num_samples, context_length, batch_size)
    model = model if isinstance(model, Toto) else load_model(model)
    forecaster = TotoForecaster(model.model)
    device = next(model.parameters()).device
    names = [str(float(q)) for q in sorted(set(quantiles))]  # column names as the user wrote the levels
    levels = torch.tensor([float(q) for q in names])
    starts = range(0, len(panel.series), batch_size)
    frames = []
    for start in tqdm(starts, desc="forecasting", unit="batch", disable=not progress or len(starts) < 2):
        batch = panel.series[start : start + batch_size]
        inputs = _masked_timeseries(batch, context_length)
        with torch.inference_mode():
            forecast = forecaster.forecast(
                inputs.to(device), prediction_length, num_samples=num_samples,
                seed=row_seeds(seed, len(batch), first=start),
            )
        stats = {
            "mean": forecast.mean,
            "median": forecast.median,
            **dict(zip(names, forecast.quantile(levels), strict=True)),
        }
        stats = {name: value.float().cpu().numpy() for name, value in stats.items()}
        for row, series in enumerate(batch):
            future = series.future_index(prediction_length)
            for v, variate in enumerate(series.variates):
                frame = {panel.id_column: series.id} if panel.id_column else {}
                frame |= {"variate": variate, panel.timestamp_column: future}
                frame |= {name: value[row, v] for name, value in stats.items()}
                frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def predict_df(
    df: pd.DataFrame,
    prediction_length: int,
    model: str | Path | Toto = "toto-tiny",
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    num_samples: int = 256,
    timestamp_column: str | None = None,
    id_column: str | None = None,
    target_columns: Sequence[str] | None = None,
    freq: str | None = None,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Forecast the next `prediction_length` steps of every series in a wide or long DataFrame.

    Returns one row per (series, variate, future timestamp) with columns: the id column (long input only),
    "variate" (the target column's name), the timestamp column, "mean", "median" and one column per quantile
    level named like "0.1". Sampling uses `num_samples` paths and a fixed `seed`, so results are reproducible.
    """
    panel = to_panel(df, timestamp_column, id_column, target_columns, freq)
    return forecast_panel(
        panel, prediction_length, model, quantiles, num_samples, context_length, batch_size, seed, progress
    )


def quantile_columns(forecast: pd.DataFrame) -> list[str]:
    """The quantile columns of a forecast table ("0.1", "0.5", ...), from the lowest level to the highest."""
    levels = [c for c in forecast.columns if c.replace(".", "", 1).isdigit() and 0 < float(c) < 1]
    return sorted(levels, key=float)


def _masked_timeseries(batch: list[Series], context_length: int) -> MaskedTimeseries:
    """Cut each series to its last `context_length` steps, left-pad them with NaN (unobserved) to a common
    length and stack them for the model."""
    values = [s.values[:, -context_length:] for s in batch]
    for series, window in zip(batch, values, strict=True):
        empty = [name for name, row in zip(series.variates, window, strict=True) if np.isnan(row).all()]
        if empty:
            where = f"series {series.id!r}: " if series.id is not None else ""
            raise InputError(
                f"{where}{empty} have no values in the last {context_length} steps: raise the context length"
                " or drop them"
            )
    return stack_ragged(
        values,
        time_interval_seconds=[s.interval_seconds for s in batch],
        end_timestamp_seconds=[int(s.index[-1].timestamp()) for s in batch],
    )


def _check_settings(
    prediction_length: int, quantiles: Sequence[float], num_samples: int, context_length: int, batch_size: int
) -> None:
    if prediction_length < 1:
        raise InputError(f"prediction_length must be at least 1, got {prediction_length}")
    if not quantiles or not all(0 < q < 1 for q in quantiles):
        raise InputError(f"quantile levels must lie strictly between 0 and 1, got {list(quantiles)}")
    if num_samples < 1:
        raise InputError(
            f"num_samples must be at least 1 (quantiles come from sample paths), got {num_samples}"
        )
    if context_length < MIN_TIME_STEPS or batch_size < 1:
        raise InputError(f"context_length must be >= {MIN_TIME_STEPS} and batch_size >= 1")


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _non_numeric_hint(df: pd.DataFrame, columns: Sequence[str]) -> str:
    """Point at the first value that stops a column from being numeric, e.g. a stray 'n/a' or '1,5'."""
    for column in columns:
        mask = pd.to_numeric(df[column], errors="coerce").isna() & df[column].notna()
        if mask.any():
            value = df[column][mask].iloc[0]
            return (
                f" (column {column!r} holds non-numeric values such as {value!r} in row {_first_row(mask)})"
            )
    return ""


def _first_row(mask: pd.Series) -> int:
    """1-based position of the first True: the row number in a file, not counting its header."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


def _to_datetime(column: pd.Series) -> pd.Series:
    """Parse timestamps; numbers are read as Unix seconds, as exported by most monitoring systems."""
    if _is_numeric(column):
        return pd.to_datetime(column, unit="s", errors="coerce")
    with warnings.catch_warnings():  # pandas warns when it falls back to parsing element by element
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(column, errors="coerce")  # fast: one format, inferred from the first value
        if parsed.isna().sum() > column.isna().sum():  # e.g. "2024-03-01" among "2024-03-01 00:30" values
            parsed = pd.to_datetime(column, errors="coerce", format="mixed")
    return parsed


def _detect_timestamp_column(df: pd.DataFrame) -> str:
    """The first datetime column, else the first column with a usual timestamp name, else one that parses."""
    for column in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[column]):
            return column
    for column in df.columns:
        if column.strip().lower() in _TIMESTAMP_NAMES:
            return column
    for column in df.columns:  # the first 100 values are enough to tell; parsing is checked in full later
        head = df[column].head(100)
        if not _is_numeric(head) and head.notna().all() and _to_datetime(head).notna().all():
            return column
    raise InputError(
        f"no timestamp column found among {list(df.columns)}: add one (e.g. 'timestamp' with values like "
        "'2024-01-01 00:00') or name it with --timestamp-column / timestamp_column="
    )


def _parse_timestamps(column: pd.Series, name: str) -> pd.DatetimeIndex:
    parsed = _to_datetime(column)
    if column.isna().any():
        raise InputError(f"timestamp column {name!r} is empty in row {_first_row(column.isna())}: fill it in")
    if parsed.isna().any():
        bad = column[parsed.isna()]
        raise InputError(
            f"timestamp column {name!r} has {len(bad)} value(s) that are not timestamps, e.g. {bad.iloc[0]!r}"
            f" in row {_first_row(parsed.isna())}: write them like '2024-01-01 00:00:00' (ISO 8601) or as"
            " Unix seconds, or name the right column with --timestamp-column"
        )
    return pd.DatetimeIndex(parsed)


def _detect_id_column(df: pd.DataFrame, candidates: list[str]) -> str | None:
    """A column with a usual id name, else the single text column; a wide table has neither.

    A column of mostly numbers with a few stray strings ("n/a", "1,5") is a broken target, not an id.
    """
    for column in candidates:
        if column.strip().lower() in _ID_NAMES:
            return column
    text = [
        c
        for c in candidates
        if not _is_numeric(df[c]) and pd.to_numeric(df[c], errors="coerce").isna().mean() > 0.5
    ]
    if len(text) > 1:
        raise InputError(
            f"several non-numeric columns {text}: name the series id column with --id-column / id_column="
        )
    return text[0] if text else None


def _regularise(key: object, values: pd.DataFrame, freq: str | None) -> Series:
    """Sort one series by time, check its timestamps and reindex it to its regular grid, gaps becoming NaN."""
    where = f"series {key!r}: " if key is not None else ""
    duplicated = values.index[values.index.duplicated()]
    if len(duplicated):
        raise InputError(
            f"{where}{len(duplicated)} duplicate timestamp(s), e.g. {duplicated[0]}: keep one row per"
            " timestamp (aggregate them, e.g. df.groupby(timestamp).mean()), or name the id column if the"
            " table is long form"
        )
    values = values.sort_index()
    if len(values) < MIN_TIME_STEPS:
        raise InputError(
            f"{where}only {len(values)} time step(s); at least {MIN_TIME_STEPS} are needed to forecast"
        )
    offset = _parse_freq(freq) if freq else _infer_freq(values.index)
    grid = pd.date_range(values.index[0], values.index[-1], freq=offset)
    off_grid = values.index[~values.index.isin(grid)]
    if len(off_grid):
        raise InputError(
            f"{where}timestamps do not lie on a regular {offset.freqstr} grid, e.g. {off_grid[0]}: "
            "resample the data or give the frequency with --freq / freq= (e.g. '5min', 'h', 'D', 'MS')"
        )
    if len(grid) > MAX_GRID_PER_ROW * len(values):
        raise InputError(
            f"{where}{len(values)} rows spread over {len(grid)} steps of {offset.freqstr} from {grid[0]} to"
            f" {grid[-1]}: most of the grid would be missing; check the timestamps or give --freq / freq="
        )
    values = values.reindex(grid)
    empty = [c for c in values.columns if values[c].isna().all()]
    if empty:
        raise InputError(
            f"{where}column(s) {empty} have no values: drop them or name targets with --target-columns"
        )
    return Series(id=key, variates=list(values.columns), index=grid, values=values.to_numpy().T.copy())


def _parse_freq(freq: str) -> pd.DateOffset:
    try:
        return to_offset(freq)
    except ValueError as error:
        raise InputError(
            f"{freq!r} is not a pandas frequency; use e.g. '30s', '5min', 'h', 'D', 'W', 'MS'"
        ) from error


def _infer_freq(index: pd.DatetimeIndex) -> pd.DateOffset:
    """pandas' inferred frequency or, when gaps defeat it, the most common step (the gaps then become NaN)."""
    inferred = pd.infer_freq(index)
    if inferred:
        return to_offset(inferred)
    return to_offset(pd.Series(index).diff().mode().iloc[0])
