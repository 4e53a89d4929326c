"""The patch-aware causal standard scaler of Toto 2.0.

Each position is normalised by the mean and standard deviation of all observed values up to the *end of its
patch* (cumulative, Welford-style, in float64), so every value of a patch shares one (loc, scale) and no patch
sees the future beyond itself. Positions after the last observation carry its statistics forward, which is why
a forecast made from a placeholder patch is mapped back with the statistics of the last observed patch.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor

MINIMUM_SCALE = 1e-6


def causal_patch_loc_scale(
    values: Tensor, observed: Tensor, patch_size: int, correction: int = 1
) -> tuple[Tensor, Tensor]:
    """(..., time) values and observed mask -> per-position (loc, scale), both (..., time) in `values.dtype`.

    `time` must be a multiple of `patch_size`. Unobserved positions do not count; where nothing has been observed
    yet, loc is 0 and the variance's denominator is clamped to 1.
    """
    data = values.to(torch.float64)
    weight = observed.to(torch.float64)
    count = weight.cumsum(-1).clamp_min(1)
    loc = (data * weight).cumsum(-1) / count
    previous_loc = torch.cat([torch.zeros_like(loc[..., :1]), loc[..., :-1]], dim=-1)
    # torch.where keeps a NaN or inf at an unobserved position from leaking into the running sums.
    increment = torch.where(observed, (data - previous_loc) * (data - loc), 0.0)
    variance = increment.cumsum(-1) / (count - correction).clamp_min(1)
    scale = variance.sqrt().clamp_min(MINIMUM_SCALE)

    def last_of_each_patch(x: Tensor) -> Tensor:
        x = rearrange(x, "... (n p) -> ... n p", p=patch_size)[..., -1]
        return repeat(x, "... n -> ... (n p)", p=patch_size)

    return last_of_each_patch(loc).to(values.dtype), last_of_each_patch(scale).to(values.dtype)


def scale_values(values: Tensor, observed: Tensor, loc: Tensor, scale: Tensor) -> Tensor:
    """The model's input space: asinh((x - loc) / scale) where observed, 0 elsewhere."""
    return torch.where(observed, (values - loc) / scale, 0.0).asinh()
