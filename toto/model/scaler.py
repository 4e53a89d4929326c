"""Input scalers: normalise each variate by statistics of its own (observed) history.

Toto 1.0 uses the causal patch scaler: the statistics for patch k are the running mean and standard deviation of all
observed values up to the end of patch k (Welford's algorithm in float64), optionally clamped to within
10**±scale_factor_exponent of the statistics of the whole context ("stabilise with global"). The whole context is
all past when it is forecast; a detector scores values inside a window, so there the clamp can be made causal too
(`causal_stabilisation`: the bounds of each step from the values up to it). Every time step of a
patch shares its patch's statistics, so the model never sees the future and still gets a stable scale.

Missing values carry weight 0. Their raw values are never read (NaN is allowed there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from einops import repeat
from torch import Tensor


def _masked(data: Tensor, weights: Tensor) -> Tensor:
    """Zero the unobserved positions so that NaN or garbage there cannot leak into sums."""
    return torch.where(weights > 0, data, torch.zeros((), dtype=data.dtype, device=data.device))


def _prefix_weights(weights: Tensor, prefix_length: int | None) -> Tensor:
    if prefix_length is None:
        return weights
    keep = torch.arange(weights.shape[-1], device=weights.device) < prefix_length
    return weights * keep


def global_statistics(data: Tensor, weights: Tensor, minimum_scale: float) -> tuple[Tensor, Tensor]:
    """Weighted mean and population std over the time axis, in float64. Shapes (..., time) -> (..., 1)."""
    x = _masked(data.double(), weights)
    w = weights.double()
    denominator = w.sum(-1, keepdim=True).clamp_min(1.0)
    mean = torch.nan_to_num((x * w).sum(-1, keepdim=True) / denominator)
    variance = (((x - mean) * w) ** 2).sum(-1, keepdim=True) / denominator
    return mean, torch.sqrt(variance + minimum_scale)


@dataclass
class CausalState:
    """Where a causal scaler stands after the last step of a series: running sums per variate, (..., 1) float64,
    and the clamp bounds of global stabilisation (fixed by the context). Continuing from it gives the statistics
    a whole-series recomputation would, so decoding never rescans the history."""

    weight: Tensor
    total: Tensor
    m2: Tensor
    mean: Tensor
    lower: Tensor | None = None
    upper: Tensor | None = None

    def repeat(self, times: int) -> CausalState:
        """The state of `times` copies of the batch, rows ordered (copy, row)."""

        def copies(t: Tensor) -> Tensor:
            return t.repeat(times, *([1] * (t.ndim - 1)))

        return CausalState(copies(self.weight), copies(self.total), copies(self.m2), copies(self.mean),
                           None if self.lower is None else copies(self.lower),
                           None if self.upper is None else copies(self.upper))


def causal_statistics(
    data: Tensor,
    weights: Tensor,
    minimum_scale: float,
    use_bessel_correction: bool = True,
    stabilize_with_global: bool = False,
    scale_factor_exponent: float = 10.0,
    prefix_length: int | None = None,
    state: CausalState | None = None,
    causal_stabilisation: bool = False,
) -> tuple[Tensor, Tensor, CausalState]:
    """Running mean and std at every time step, using only observed values up to that step.

    Welford's update written with cumulative sums, in float64 for values of very different magnitudes.
    `prefix_length` restricts the global statistics used for stabilisation to the first steps (the context), so
    that generated values never move the clamp bounds during decoding. With `causal_stabilisation`, each step's
    bounds come from the population std of the values up to it instead of the whole series. With `state`, `data`
    continues the series that state ends; the returned state ends `data`.
    """
    x = _masked(data.double(), weights)
    w = weights.double()
    zero = torch.zeros_like(x[..., :1])
    start = state or CausalState(zero, zero, zero, zero)
    cum_weights = start.weight + torch.cumsum(w, dim=-1)
    denominator = cum_weights.clamp_min(1.0)
    totals = start.total + torch.cumsum(w * x, dim=-1)
    means = totals / denominator
    previous_means = torch.cat([start.mean, means[..., :-1]], dim=-1)
    m2 = start.m2 + torch.cumsum((x - previous_means) * (x - means) * w, dim=-1)
    variance = m2 / ((denominator - 1.0).clamp_min(1.0) if use_bessel_correction else denominator)
    scale = torch.sqrt(variance + minimum_scale)

    lower, upper = start.lower, start.upper
    if stabilize_with_global and (state is None or causal_stabilisation):
        if causal_stabilisation:  # continuing from a state too: the bounds follow the running statistics
            global_scale = torch.sqrt(m2 / denominator + minimum_scale)  # population std up to each step
        else:
            _, global_scale = global_statistics(data, _prefix_weights(weights, prefix_length), minimum_scale)
        factor = 10.0**scale_factor_exponent
        lower, upper = torch.clamp_min(global_scale / factor, minimum_scale), global_scale * factor
    if lower is not None:
        scale = torch.clamp(scale, min=lower, max=upper)
    if lower is not None and upper is not None and lower.shape[-1] > 1:  # causal bounds: those of the last step go on
        lower, upper = lower[..., -1:], upper[..., -1:]
    end = CausalState(cum_weights[..., -1:], totals[..., -1:], m2[..., -1:], means[..., -1:], lower, upper)
    return means.to(data.dtype), scale.to(data.dtype), end


class CausalPatchStdMeanScaler(torch.nn.Module):
    """Toto 1.0's scaler: causal statistics taken at the end of each patch and shared by the patch.

    The constructor and `forward` have Toto 1.0's signatures; `scale_from` is the stateful form decoding uses.
    """

    def __init__(
        self,
        dim: int = -1,
        patch_size: int = 32,
        minimum_scale: float = 0.1,
        use_bessel_correction: bool = True,
        stabilize_with_global: bool = False,
        scale_factor_exponent: float = 10.0,
    ) -> None:
        super().__init__()
        if dim != -1:
            raise ValueError(f"causal scalers scale along the last (time) axis only: dim must be -1, got {dim}")
        self.dim = dim
        self.patch_size = patch_size
        self.minimum_scale = minimum_scale
        self.use_bessel_correction = use_bessel_correction
        self.stabilize_with_global = stabilize_with_global
        self.scale_factor_exponent = scale_factor_exponent

    def forward(self, data: Tensor, padding_mask: Tensor | None = None, weights: Tensor | None = None,
                prefix_length: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(batch, variates, time) -> scaled data, loc, scale, each (batch, variates, time), as in Toto 1.0.

        A value's weight is `weights * padding_mask` (both default to one).
        """
        scaled, loc, scale, _ = self.scale_from(data, observation_weights(data, padding_mask, weights), prefix_length)
        return scaled, loc, scale

    @torch.no_grad()
    def scale_from(self, data: Tensor, weights: Tensor, prefix_length: int | None = None,
                   state: CausalState | None = None, causal_stabilisation: bool = False
                   ) -> tuple[Tensor, Tensor, Tensor, CausalState]:
        """Like `forward`, from per-value weights; also returns the state at the end of `data`.

        With `state`, `data` continues the series that state ends (whole patches, during decoding).
        `causal_stabilisation` bounds each patch's scale by the values up to it (`causal_statistics`).
        """
        if data.shape[-1] % self.patch_size:
            raise ValueError(f"series length {data.shape[-1]} is not a multiple of the patch size {self.patch_size}")
        means, scales, end = causal_statistics(
            data, weights, self.minimum_scale, self.use_bessel_correction,
            self.stabilize_with_global, self.scale_factor_exponent, prefix_length, state, causal_stabilisation,
        )
        # The statistic at the last step of each patch holds for the whole patch.
        loc = repeat(means[..., self.patch_size - 1 :: self.patch_size], "b v p -> b v (p s)", s=self.patch_size)
        scale = repeat(scales[..., self.patch_size - 1 :: self.patch_size], "b v p -> b v (p s)", s=self.patch_size)
        return (data - loc) / scale, loc, scale, end


class CausalStdMeanScaler(CausalPatchStdMeanScaler):
    """Per-step causal statistics (a patch size of one)."""

    def __init__(self, dim: int = -1, minimum_scale: float = 0.1, use_bessel_correction: bool = True,
                 stabilize_with_global: bool = False, scale_factor_exponent: float = 10.0) -> None:
        super().__init__(dim, 1, minimum_scale, use_bessel_correction, stabilize_with_global, scale_factor_exponent)


class StdMeanScaler(torch.nn.Module):
    """Non-causal: one mean and std per variate over the (prefix of the) series."""

    def __init__(self, dim: int = -1, keepdim: bool = True, minimum_scale: float = 1e-3) -> None:
        super().__init__()
        if dim != -1 or not keepdim:
            raise ValueError("StdMeanScaler scales along the last (time) axis and keeps it: use dim=-1, keepdim=True")
        self.dim = dim
        self.keepdim = keepdim
        self.minimum_scale = minimum_scale

    def forward(self, data: Tensor, padding_mask: Tensor | None = None, weights: Tensor | None = None,
                prefix_length: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(batch, variates, time) -> scaled data (batch, variates, time), loc and scale (batch, variates, 1)."""
        state = self._statistics(data, observation_weights(data, padding_mask, weights), prefix_length)
        return (data - state.loc) / state.scale, state.loc, state.scale

    @torch.no_grad()
    def scale_from(self, data: Tensor, weights: Tensor, prefix_length: int | None = None,
                   state: FixedState | None = None, causal_stabilisation: bool = False
                   ) -> tuple[Tensor, Tensor, Tensor, FixedState]:
        """Like the causal scalers; a continuation keeps the statistics of the series its `state` ends. It reads the
        whole series, so it cannot score values causally: `causal_stabilisation` is refused."""
        if causal_stabilisation:
            raise ValueError("a model with StdMeanScaler normalises by its whole window, so it cannot score values "
                             "from their past only: anomaly detection needs a causal scaler")
        state = state or self._statistics(data, weights, prefix_length)
        loc, scale = state.loc, state.scale
        return (data - loc) / scale, loc.expand_as(data), scale.expand_as(data), state

    @torch.no_grad()
    def _statistics(self, data: Tensor, weights: Tensor, prefix_length: int | None) -> FixedState:
        mean, scale = global_statistics(data, _prefix_weights(weights, prefix_length), self.minimum_scale)
        return FixedState(mean.to(data.dtype), scale.to(data.dtype))


def observation_weights(data: Tensor, padding_mask: Tensor | None, weights: Tensor | None) -> Tensor:
    """Toto 1.0's weight of each value: `weights * padding_mask`, each one where not given."""
    result = torch.ones_like(data) if weights is None else weights.to(data.dtype)
    return result if padding_mask is None else result * padding_mask.to(data.dtype)


@dataclass
class FixedState:
    """StdMeanScaler's statistics, which stay those of the context however the series continues."""

    loc: Tensor
    scale: Tensor

    def repeat(self, times: int) -> FixedState:
        return FixedState(self.loc.repeat(times, 1, 1), self.scale.repeat(times, 1, 1))


class Scaler(Protocol):
    """What the backbone uses of a scaler: `scale_from`, given None or the state that the same scaler returned for
    the series that `data` continues (a CausalState from the causal scalers, a FixedState from StdMeanScaler)."""

    def scale_from(self, data: Tensor, weights: Tensor, prefix_length: int | None = None,
                   state: Any = None, causal_stabilisation: bool = False
                   ) -> tuple[Tensor, Tensor, Tensor, CausalState | FixedState]: ...


SCALERS: dict[str, type[CausalPatchStdMeanScaler] | type[StdMeanScaler]] = {
    "<class 'model.scaler.CausalPatchStdMeanScaler'>": CausalPatchStdMeanScaler,
    "<class 'model.scaler.CausalStdMeanScaler'>": CausalStdMeanScaler,
    "<class 'model.scaler.StdMeanScaler'>": StdMeanScaler,
}


def build_scaler(
    scaler_cls: str, patch_size: int, stabilize_with_global: bool, scale_factor_exponent: float
) -> CausalPatchStdMeanScaler | StdMeanScaler:
    if scaler_cls not in SCALERS:
        raise ValueError(f"unknown scaler_cls {scaler_cls!r}; expected one of {sorted(SCALERS)}")
    # Toto 1.0 passes the patch size and stabilisation settings only to the patch scaler; the others keep defaults.
    if scaler_cls != "<class 'model.scaler.CausalPatchStdMeanScaler'>":
        return SCALERS[scaler_cls]()
    return CausalPatchStdMeanScaler(
        patch_size=patch_size, stabilize_with_global=stabilize_with_global, scale_factor_exponent=scale_factor_exponent
    )
