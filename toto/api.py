"""Forecast a pandas DataFrame with Toto: the one typed inference entry point behind `toto forecast`.

    from toto.api import predict_df
    forecast = predict_df(df, prediction_length=48)  # one row per series, variate and future step

The input may be wide (a timestamp column and one numeric column per variate) or long (an id column as well,
one series per id, each numeric column a variate of that series). `toto.tables` reads the table (the same rules as
training and evaluation): it finds the timestamp and id columns unless named, and puts each series on a regular
time grid, missing values and gaps becoming NaN, which the model treats as unobserved. The forecast keeps the input's
column names and continues each series' timestamps at its frequency.

Whatever a user can get wrong in the table raises `InputError`, whose message says what and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from toto.data.util.dataset import MaskedTimeseries, stack_ragged, unobserved_in_context
from toto.inference.forecaster import Feedback
from toto.inference.streams import row_seeds
from toto.model.checkpoint import DEFAULT_MODEL
from toto.pipeline import ForecastPipeline
from toto.tables import MIN_TIME_STEPS, InputError, Panel, Series, to_panel

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ModelLike = str | Path | torch.nn.Module | ForecastPipeline


def load_model(
    checkpoint: str | Path = DEFAULT_MODEL, device: str | None = None, dtype: torch.dtype | None = None,
    feedback: Feedback | None = None,
) -> ForecastPipeline:
    """A forecasting pipeline for the embedded default model, a local folder or a Hugging Face hub id, of either
    model family (Toto 1.0 or 2.0). The device defaults to the GPU when there is one. `feedback` (Toto 1.0) is
    what sample paths are decoded from (`ForecastPipeline.from_pretrained`)."""
    return ForecastPipeline.from_pretrained(checkpoint, device=device, dtype=dtype, feedback=feedback)


def forecast_panel(
    panel: Panel,
    prediction_length: int,
    model: ModelLike = DEFAULT_MODEL,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    num_samples: int | None = None,
    context_length: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
    exogenous_columns: Sequence[str] = (),
    future: Panel | None = None,
    series_index: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Forecast every series of `panel`; returns the tidy table described in `predict_df`.

    Series are forecast `batch_size` at a time; with a sampling model, series i samples from its own stream
    `row_seeds(seed, ...)[series_index[i]]` (see `toto.inference.streams.row_seeds`; `series_index` defaults
    to 0, 1, ...: a shard of a larger panel passes its series' positions in the whole), whatever the batching.
    `exogenous_columns` name variates of `panel` that are known-future covariates: `future` (a panel of the same
    series over the next `prediction_length` steps) gives their values there, and they are not forecast.
    `context_length` (most recent steps read per series) defaults to the model's (`ForecastPipeline.context_length`).
    """
    pipeline = ForecastPipeline.of(model)
    ensemble = pipeline.ensemble_for(context_length) is not None
    context_length = pipeline.context_length if context_length is None else context_length
    _check_settings(pipeline, prediction_length, quantiles, num_samples, context_length, batch_size)
    names = [str(float(q)) for q in sorted(set(quantiles))]  # column names as the user wrote the levels
    levels = sorted({float(q) for q in names} | {0.5})  # the median column is always there
    exogenous = list(exogenous_columns)
    futures = _future_covariates(panel, future, exogenous, prediction_length)
    positions = list(range(len(panel.series))) if series_index is None else list(series_index)
    starts = range(0, len(panel.series), batch_size)
    frames = []
    for start in tqdm(starts, desc="forecasting", unit="batch", disable=not progress or len(starts) < 2):
        batch = panel.series[start : start + batch_size]
        inputs = _masked_timeseries(batch, context_length, exogenous)
        prediction = pipeline.predict_quantiles(
            inputs, prediction_length, levels,
            future_exogenous=torch.tensor(np.stack(futures[start : start + batch_size])) if exogenous else None,
            num_samples=num_samples, seed=[row_seeds(seed, 1, first=i)[0] for i in positions[start : start + len(batch)]],
            ensemble=ensemble,
        )
        quantile_of = dict(zip(prediction.levels, prediction.quantiles, strict=True))
        stats = {"mean": prediction.mean, "median": quantile_of[0.5]}
        stats |= {name: quantile_of[float(name)] for name in names}
        stats = {name: value.cpu().numpy() for name, value in stats.items()}
        for row, series in enumerate(batch):
            future_index = series.future_index(prediction_length)
            for v, variate in enumerate(_targets(series, exogenous)):
                frame = {panel.id_column: series.id} if panel.id_column else {}
                frame |= {"variate": variate, panel.timestamp_column: future_index}
                frame |= {name: value[row, v] for name, value in stats.items()}
                frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def predict_df(
    df: pd.DataFrame,
    prediction_length: int,
    model: ModelLike = DEFAULT_MODEL,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    num_samples: int | None = None,
    timestamp_column: str | None = None,
    id_column: str | None = None,
    target_columns: Sequence[str] | None = None,
    freq: str | None = None,
    context_length: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
    exogenous_columns: Sequence[str] = (),
    future_df: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Forecast the next `prediction_length` steps of every series in a wide or long DataFrame.

    Returns one row per (series, target variate, future timestamp) with columns: the id column (long input
    only), "variate" (the target column's name), the timestamp column, "mean", "median" and one column per
    quantile level named like "0.1". `model` is a checkpoint name, folder or Hub id of either family, a loaded
    model or a `ForecastPipeline`. A sampling model (Toto 1.0) uses `num_samples` paths (default
    DEFAULT_NUM_SAMPLES) and a fixed `seed`, so results are reproducible; a quantile model (Toto 2.0) forecasts
    its knots in one pass, interpolates other levels, takes no `num_samples`, and its "mean" is the median.

    Known-future covariates: name them in `exogenous_columns` (columns of `df`) and give their values over the
    horizon in `future_df`, a table of the same layout (timestamp and id columns) holding those columns at the
    next `prediction_length` timestamps of every series.
    """
    exogenous = list(exogenous_columns)
    if exogenous and future_df is None:
        raise InputError(f"exogenous_columns {exogenous} need future_df: their values at the forecast timestamps")
    panel = to_panel(df, timestamp_column, id_column, columns_to_read(target_columns, exogenous), freq)
    future = None
    if exogenous:
        future = to_panel(future_df, panel.timestamp_column, panel.id_column, exogenous, freq or _freq_of(panel))
    return forecast_panel(panel, prediction_length, model, quantiles, num_samples, context_length, batch_size,
                          seed, progress, exogenous, future)


def columns_to_read(target_columns: Sequence[str] | None, exogenous_columns: Sequence[str]) -> list[str] | None:
    """The value columns to read from a table: the targets and the covariates (None: every numeric column)."""
    if not target_columns:
        return None
    return [*target_columns, *(c for c in exogenous_columns if c not in target_columns)]


def quantile_columns(forecast: pd.DataFrame) -> list[str]:
    """The quantile columns of a forecast table ("0.1", "0.5", ...), from the lowest level to the highest."""
    levels = [c for c in forecast.columns if c.replace(".", "", 1).isdigit() and 0 < float(c) < 1]
    return sorted(levels, key=float)


def _masked_timeseries(batch: list[Series], context_length: int, exogenous: Sequence[str] = ()) -> MaskedTimeseries:
    """Cut each series to its last `context_length` steps, left-pad them with NaN (unobserved) to a common
    length and stack them for the model, targets first and then the covariates named in `exogenous`."""
    values = []
    for series in batch:
        order = [*_targets(series, exogenous), *exogenous]
        rows = [series.variates.index(name) for name in order]
        window = series.values[rows, -context_length:]
        if empty := unobserved_in_context(window, order, context_length):
            where = f"series {series.id!r}: " if series.id is not None else ""
            raise InputError(
                f"{where}{empty} have no values in the last {context_length} steps: raise the context length"
                " or drop them"
            )
        values.append(window)
    inputs = stack_ragged(
        values,
        time_interval_seconds=[s.interval_seconds for s in batch],
        end_timestamp_seconds=[int(s.index[-1].timestamp()) for s in batch],
    )
    return inputs._replace(num_exogenous_variables=len(exogenous))


def _targets(series: Series, exogenous: Sequence[str]) -> list[str]:
    return [name for name in series.variates if name not in exogenous]


def _freq_of(panel: Panel) -> str:
    return panel.series[0].index.freqstr


def _future_covariates(
    panel: Panel, future: Panel | None, exogenous: list[str], prediction_length: int
) -> list[np.ndarray]:
    """Each series' (covariates, prediction_length) future values, checked to cover the whole horizon."""
    if not exogenous:
        return []
    missing = [c for c in exogenous if c not in panel.series[0].variates]
    if missing:
        raise InputError(f"exogenous column(s) {missing} are not in the table; its columns are {panel.series[0].variates}")
    by_id = {s.id: s for s in future.series}
    out = []
    for series in panel.series:
        where = f"series {series.id!r}: " if series.id is not None else ""
        if series.id not in by_id:
            raise InputError(f"{where}future_df has no rows for this series: give its covariates' future values")
        known = by_id[series.id]
        frame = pd.DataFrame(known.values.T, index=known.index, columns=known.variates)
        horizon = series.future_index(prediction_length)
        values = frame.reindex(horizon)[exogenous]
        if values.isna().any().any():
            first = values.index[values.isna().any(axis=1)][0]
            raise InputError(
                f"{where}future_df lacks covariate values at {first} (it needs {exogenous} at all "
                f"{prediction_length} timestamps from {horizon[0]} to {horizon[-1]})"
            )
        out.append(values.to_numpy(dtype=np.float32).T)
    return out


def _check_settings(
    pipeline: ForecastPipeline, prediction_length: int, quantiles: Sequence[float], num_samples: int | None,
    context_length: int, batch_size: int,
) -> None:
    if prediction_length < 1:
        raise InputError(f"prediction_length must be at least 1, got {prediction_length}")
    if not quantiles or not all(0 < q < 1 for q in quantiles):
        raise InputError(f"quantile levels must lie strictly between 0 and 1, got {list(quantiles)}")
    if num_samples is not None and not pipeline.samples:
        raise InputError(
            f"{pipeline.name} is a {pipeline.family} quantile model: it does not sample, so leave out num_samples"
            " (--num-samples)"
        )
    if num_samples is not None and num_samples < 1:
        raise InputError(
            f"num_samples must be at least 1 (quantiles come from sample paths), got {num_samples}"
        )
    if context_length < MIN_TIME_STEPS or batch_size < 1:
        raise InputError(f"context_length must be >= {MIN_TIME_STEPS} and batch_size >= 1")
