"""Forecast a pandas DataFrame with Toto, or score its rows for anomalies, in two lines:

    from toto.api import detect_df, predict_df
    forecast = predict_df(df, prediction_length=48)  # one row per series, variate and future step
    scored = detect_df(df)                            # df's rows with anomaly_score, is_anomaly and the band

The input may be wide (a timestamp column and one numeric column per variate) or long (an id column as well,
one series per id, each numeric column a variate of that series). `predict_df` loads the model (the embedded one
unless told otherwise) and delegates to `ForecastPipeline.predict_df`, which says how tables are read and what
the forecast holds. Whatever a user can get wrong in the table raises `InputError`, whose message says what and how
to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from toto.options import DEFAULT_MODEL, Feedback
from toto.pipeline import ForecastPipeline, ModelLike
from toto.tables import Panel, columns_to_read, quantile_columns, to_panel
from toto.validation import InputError

__all__ = ["InputError", "Panel", "columns_to_read", "detect_df", "load_model", "predict_df", "quantile_columns",
           "to_panel"]


def load_model(
    checkpoint: str | Path = DEFAULT_MODEL, device: str | None = None, dtype: torch.dtype | None = None,
    feedback: Feedback | None = None,
) -> ForecastPipeline:
    """A forecasting pipeline for the embedded default model, a local folder or a Hugging Face hub id, of either
    model family (Toto 1.0 or 2.0). The device defaults to the GPU when there is one. `feedback` (Toto 1.0) is
    what sample paths are decoded from (`ForecastPipeline.from_pretrained`)."""
    return ForecastPipeline.from_pretrained(checkpoint, device=device, dtype=dtype, feedback=feedback)


def predict_df(df: pd.DataFrame, prediction_length: int, model: ModelLike | ForecastPipeline = DEFAULT_MODEL,
               **options: Any) -> pd.DataFrame:
    """Forecast every series of `df`: `ForecastPipeline.predict_df` with `model` (a checkpoint name, folder or Hub id
    of either family, a loaded model, or a `ForecastPipeline`); see there for the table layouts, the columns of the
    forecast and the `options` (quantiles, num_samples, timestamp/id/target columns, freq, context_length,
    batch_size, seed, progress, exogenous_columns, future_df)."""
    return ForecastPipeline.of(model).predict_df(df, prediction_length, **options)


def detect_df(df: pd.DataFrame, model: ModelLike | ForecastPipeline = DEFAULT_MODEL, **options: Any) -> pd.DataFrame:
    """Score every row of `df` for anomalies: `ForecastPipeline.detect_df` with `model` (as for `predict_df`); see
    there for the columns added and the `options` (timestamp/id/target columns, freq, settings: a
    `toto.anomaly.detector.DetectionSettings` with the alert budget, progress)."""
    return ForecastPipeline.of(model).detect_df(df, **options)
