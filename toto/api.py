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

from toto.data.util.dataset import MaskedTimeseries, stack_ragged
from toto.inference.forecaster import DEFAULT_CONTEXT_LENGTH, TotoForecaster, row_seeds
from toto.model.toto import Toto
from toto.tables import MIN_TIME_STEPS, InputError, Panel, Series, to_panel

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# Sample paths per series when the caller does not say: the CLI's and the service's default.
DEFAULT_NUM_SAMPLES = 256


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
