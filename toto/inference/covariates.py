"""Known-future covariates (exogenous variables) in Toto 1.0's layout: the one place that lays them out.

Toto is causal: its output at step t only sees inputs up to t, yet it predicts the next patch. For a covariate
whose future is known (a deploy schedule, a holiday flag), Toto 1.0 fine-tuning therefore shifts the covariate
one patch earlier, so that at step t the model reads the covariate of step t + patch_size: the patch it is
predicting. Training windows (`train.windows`) and `TotoForecaster.forecast(exogenous_layout="aligned")` (and
through it the pandas API, the CLI and the service) all take the layout from here.

`TotoForecaster.forecast` with the default exogenous_layout="model" keeps Toto 1.0's contract instead: covariates
and their future values already in the model's layout, injected as given.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def shift_exogenous(exogenous: np.ndarray, patch_size: int) -> np.ndarray:
    """(k, n) covariates aligned with the targets -> (k, n) with column t holding step t + patch_size.

    The last `patch_size` columns would need values past the end and are NaN (unobserved).
    """
    shifted = np.full_like(exogenous, np.nan)
    shifted[:, : max(exogenous.shape[-1] - patch_size, 0)] = exogenous[:, patch_size:]
    return shifted


def model_layout(past: Tensor, future: Tensor, context_length: int, patch_size: int) -> tuple[Tensor, Tensor]:
    """Naturally aligned covariates -> (context part (batch, k, context_length), future part (batch, k, horizon)).

    Column t of the result holds step t + patch_size. Values past the known future are unobserved (NaN) in the
    context and 0 in the future part, where they only influence steps beyond the horizon.
    """
    known = torch.cat([past, future], dim=-1)
    unknown = torch.full((*known.shape[:-1], patch_size), float("nan"), dtype=known.dtype, device=known.device)
    shifted = torch.cat([known, unknown], dim=-1)[..., patch_size:]
    horizon = future.shape[-1]
    return shifted[..., :context_length], torch.nan_to_num(shifted[..., context_length : context_length + horizon])
