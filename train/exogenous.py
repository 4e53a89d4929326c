"""Exogenous variables (known-future covariates) in Toto 1.0's layout.

Toto is causal: its output at step t only sees inputs up to t, yet it predicts the next patch. For a covariate
whose future is known (a deploy schedule, a holiday flag), Toto 1.0 fine-tuning therefore shifts the covariate
one patch earlier, so that at step t the model reads the covariate of step t + patch_size: the patch it is
predicting. Training windows (`train.windows`) and forecasts must use the same layout; `exogenous_forecast_inputs`
builds it from naturally aligned history and future covariates, for `TotoForecaster.forecast`.
"""

from __future__ import annotations

import numpy as np
import torch

from toto.data.util.dataset import MaskedTimeseries


def shift_exogenous(exogenous: np.ndarray, patch_size: int) -> np.ndarray:
    """(k, n) covariates aligned with the targets -> (k, n) with column t holding step t + patch_size.

    The last `patch_size` columns would need values past the end and are NaN (unobserved).
    """
    shifted = np.full_like(exogenous, np.nan)
    shifted[:, : max(exogenous.shape[-1] - patch_size, 0)] = exogenous[:, patch_size:]
    return shifted


def exogenous_forecast_inputs(
    target: torch.Tensor | np.ndarray,
    exogenous_history: torch.Tensor | np.ndarray,
    exogenous_future: torch.Tensor | np.ndarray,
    patch_size: int,
    time_interval_seconds: int = 1,
    start_timestamp_seconds: int = 0,
) -> tuple[MaskedTimeseries, torch.Tensor]:
    """Inputs for `TotoForecaster.forecast(inputs, horizon, future_exogenous_variables=...)`.

    target (batch?, v, t) and exogenous_history (batch?, k, t) are aligned in time (NaN = missing);
    exogenous_future (batch?, k, horizon) holds the covariates' known values over the forecast horizon.
    Returns the (batch, v + k, t) inputs with the covariates shifted one patch earlier and last, and the
    (batch, k, horizon) future values in the same shifted layout. Shifted values past the known future are
    unobserved in the context and 0 in the future part, where they only influence steps beyond the horizon.
    """
    target, history, future = (torch.as_tensor(x, dtype=torch.float32) for x in (target, exogenous_history, exogenous_future))
    if target.ndim == 2:
        target, history, future = target[None], history[None], future[None]
    if history.shape[-1] != target.shape[-1] or history.shape[:-2] != target.shape[:-2]:
        raise ValueError(f"exogenous_history {tuple(history.shape)} must match target {tuple(target.shape)} in batch and time")
    if future.shape[:-1] != history.shape[:-1]:
        raise ValueError(f"exogenous_future {tuple(future.shape)} must have the shape of exogenous_history but in time")
    length, horizon = target.shape[-1], future.shape[-1]
    known = torch.cat([history, future], dim=-1)
    unknown = torch.full((*known.shape[:-1], patch_size), float("nan"))
    shifted = torch.cat([known, unknown], dim=-1)[..., patch_size:]  # column t = step t + patch_size
    inputs = MaskedTimeseries.from_series(
        torch.cat([target, shifted[..., :length]], dim=-2),
        time_interval_seconds=time_interval_seconds,
        start_timestamp_seconds=start_timestamp_seconds,
        num_exogenous_variables=history.shape[-2],
    )
    return inputs, torch.nan_to_num(shifted[..., length : length + horizon], nan=0.0)
