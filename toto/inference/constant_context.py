"""Targets whose context never changes are forecast as the value they hold, in both families.

A model reads a series through its scaler. Given one value repeated, Toto 1.0's scaler subtracts it and divides by
its floor (the square root of `minimum_scale`, an absolute 0.1), so the model sees a flat line of zeros and answers
with its generic spread in those units: a band some tens wide around any constant from the embedded toto-tiny, and
sample means that wander far from it. Toto 2.0 sees the same flat line. Nothing in the context supports either.

What such a context says is that the value holds: a replica count, a quota, a gauge that has not moved. A naive or
an exponential-smoothing forecast gives exactly that value, and so does a user's expectation. So `ForecastPipeline`
forecasts such a target as its last observed value: every quantile, the mean and every sample path equal it, a band
of zero width (a forecast anomaly rule then fires on the first change, which is what a constant metric's change is).

"Never changes" is judged to float32 precision, the precision the model computes in: values within a few units in
the last place of each other (text round trips such as 7.0000001) count as one value. A series that moves by more,
however little, is the model's to forecast. At least `MIN_TIME_STEPS` observed values are needed: one or two points
do not say that anything holds.
"""

from __future__ import annotations

import torch
from torch import Tensor

from toto.validation import MIN_TIME_STEPS

# float32 resolves about 6e-8 of a value: values this close (relative to their magnitude) are one value.
RELATIVE_TOLERANCE = 1e-6


def held_values(series: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
    """For contexts `series` (..., time) with `observed` (..., time) marking the values that count: (...) whether
    each context holds one value, and (...) its last observed value (meaningful where it does)."""
    values = series.to(torch.float64)
    seen = observed & torch.isfinite(values)
    highest = torch.where(seen, values, -torch.inf).amax(dim=-1)
    lowest = torch.where(seen, values, torch.inf).amin(dim=-1)
    magnitude = torch.maximum(highest.abs(), lowest.abs())
    holds = (seen.sum(dim=-1) >= MIN_TIME_STEPS) & (highest - lowest <= RELATIVE_TOLERANCE * magnitude)
    steps = torch.arange(values.shape[-1], device=values.device)
    last_step = torch.where(seen, steps, -1).amax(dim=-1, keepdim=True).clamp_min(0)
    last = values.gather(-1, last_step).squeeze(-1)
    return holds, last
