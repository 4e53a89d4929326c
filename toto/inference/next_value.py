"""The distribution each model family predicted for every value of a series before seeing it: causal passes.

`toto.anomaly.passes.plan_passes` says which windows and offsets to run; here each family runs them as batches of
forward passes (no sampling, no decoding loop) and returns, for every (series, variate, step), the parameters of its
predictive distribution in data space (`toto.anomaly.distributions`). `ForecastPipeline.value_distributions` calls
these; they are the training loss's computation, run without gradients:

- Toto 1.0: the backbone's output at step t (of patch i) is the Student-T mixture of the value one patch later,
  normalised by the causal scaler's statistics at t. The scaler's "stabilise with global" clamp reads the whole
  window in training and forecasting (where the window is all past); here it is made causal, so that a score never
  depends on later values.
- Toto 2.0: the output at patch i is the nine knots (asinh space) of patch i + 1, mapped with patch i's statistics.

A step gets no prediction (NaN parameters) in the series' first patch, and where nothing was observed in its pass
before it (a prediction made from padding alone says nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from toto.anomaly.distributions import QuantileKnots, StudentTMixture, ValueDistributions
from toto.anomaly.passes import PassPlan, Windows, gather_windows, plan_passes
from toto.model.backbone import ScalerState, TotoBackbone
from toto.model.kv_cache import KVCache
from toto.v2.model import Toto2Model

# Rows (a pass over one series) run through the model together: bounds the activations held at once.
ROWS_PER_FORWARD = 64

# A family's forward over rows (rows, variates, length) of values (NaN = missing): its per-step outputs (rows,
# variates, length, J) and the scaler's loc and scale (rows, variates, length).
RowForward = Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]


def _predictions(series: np.ndarray, plan: PassPlan, patch_size: int, forward: RowForward, device: torch.device
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run every pass of `plan` over (batch, variates, time) `series` and pick, for each step, the outputs and the
    scaler's statistics of the position that predicts it: (batch, variates, time, J), and twice (batch, variates,
    time), NaN where the step has no usable prediction."""
    windows = gather_windows(series.astype(np.float32), plan)  # (passes, batch, variates, length)
    passes, batch = windows.shape[:2]
    rows = torch.from_numpy(rearrange(windows, "p b v t -> (p b) v t"))
    outputs, locs, scales = [], [], []
    for chunk in rows.split(ROWS_PER_FORWARD):
        out, loc, scale = forward(chunk.to(device))
        outputs.append(out.double().cpu())
        locs.append(loc.double().cpu())
        scales.append(scale.double().cpu())
    out_all = rearrange(torch.cat(outputs).numpy(), "(p b) v t j -> p b v t j", p=passes)
    loc_all = rearrange(torch.cat(locs).numpy(), "(p b) v t -> p b v t", p=passes)
    scale_all = rearrange(torch.cat(scales).numpy(), "(p b) v t -> p b v t", p=passes)
    # Observed values in a pass up to the end of each patch: what the output at a position has read.
    seen = np.isfinite(windows).cumsum(-1)
    end_of_patch = (plan.position_of // patch_size + 1) * patch_size - 1
    pass_index = np.maximum(plan.pass_of, 0)
    usable = (plan.pass_of >= 0)[None, None, :] & (
        rearrange(seen[pass_index, :, :, end_of_patch], "t b v -> b v t") > 0)
    nan = np.where(usable, 0.0, np.nan)
    picked = rearrange(out_all[pass_index, :, :, plan.position_of], "t b v j -> b v t j")
    data_loc = rearrange(loc_all[pass_index, :, :, plan.position_of], "t b v -> b v t") + nan
    data_scale = rearrange(scale_all[pass_index, :, :, plan.position_of], "t b v -> b v t") + nan
    return picked, data_loc, data_scale


@torch.no_grad()
def student_t_mixtures(backbone: TotoBackbone, series: np.ndarray, plan: PassPlan) -> StudentTMixture:
    """Toto 1.0's next-value mixtures for (batch, variates, time) values (NaN = missing)."""

    def forward(values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mask = torch.isfinite(values)
        scaled, loc, scale, _ = backbone.scale(values, mask, causal_stabilisation=True)
        hidden = backbone.encode(scaled, mask, torch.zeros_like(values, dtype=torch.long))
        return backbone.head_projections(hidden).float(), loc, scale

    raw, data_loc, data_scale = _predictions(series, plan, backbone.patch_size, forward, backbone.device)
    weights, df, loc, scale = backbone.output_distribution.components_from_projected(torch.from_numpy(raw))
    return StudentTMixture(weights.numpy(), df.numpy(), loc.numpy(), scale.numpy(), data_loc, data_scale)


@torch.no_grad()
def quantile_knots(model: Toto2Model, series: np.ndarray, plan: PassPlan) -> QuantileKnots:
    """Toto 2.0's next-value knots for (batch, variates, time) values (NaN = missing)."""
    patch = model.config.patch_size

    def forward(values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        observed = torch.isfinite(values)
        out = model(torch.nan_to_num(values), observed)
        knots = rearrange(out.quantiles[..., :patch], "q r v n p -> r v (n p) q").sort(-1).values
        return knots, out.loc, out.scale

    knots, data_loc, data_scale = _predictions(series, plan, patch, forward, model.device)
    return QuantileKnots(knots, data_loc, data_scale)


class ValueStream(Protocol):
    """A series scored as its values arrive: `push` gives the distributions the model predicted for the new steps
    from everything before them, the numbers `plan_passes` gives a whole-series pass (up to float rounding), at a
    cost bounded by the window whatever the length of the history."""

    def push(self, values: np.ndarray) -> ValueDistributions:
        """(variates, n) new steps (NaN = missing) -> their distributions, (1, variates, n)."""

    def nbytes(self) -> int:
        """Memory held beyond the raw window (caches), which `release` frees."""

    def release(self) -> None:
        """Drop what can be rebuilt from the raw window (the next `push` rebuilds it)."""


class _Window:
    """The values of the current window (`Windows`) and the index of the next step: what every stream keeps."""

    def __init__(self, windows: Windows, variates: int) -> None:
        self.windows = windows
        self.steps = 0  # steps pushed so far: the index of the next one
        self.start = 0  # the current window's first step
        self.values = np.empty((variates, 0))  # its values so far, from `start` to `steps`

    def segments(self, values: np.ndarray) -> list[np.ndarray]:
        """`values` cut where windows end, so that no segment spans two windows."""
        out, i, steps, end = [], 0, self.steps, self.start + self.windows.window
        while i < values.shape[1]:
            if steps >= end:
                end += self.windows.stride
            count = min(values.shape[1] - i, end - steps)
            out.append(values[:, i : i + count])
            i, steps = i + count, steps + count
        return out

    def full(self) -> bool:
        """Whether the next step belongs to the next window."""
        return self.steps >= self.start + self.windows.window

    def advance(self) -> None:
        """Move to the next window, keeping the values it shares with this one."""
        self.start += self.windows.stride
        self.values = self.values[:, self.windows.stride :]

    def append(self, segment: np.ndarray) -> None:
        self.values = np.concatenate([self.values, segment], axis=1)
        self.steps += segment.shape[1]


class RecomputedStream:
    """A stream of either family that runs the current window's passes again over the values kept (at most a
    window) and keeps the predictions of its new steps."""

    def __init__(self, run: Callable[[np.ndarray, PassPlan], ValueDistributions], windows: Windows,
                 variates: int) -> None:
        self.run = run
        self.window = _Window(windows, variates)

    def push(self, values: np.ndarray) -> ValueDistributions:
        parts = []
        for segment in self.window.segments(np.asarray(values, dtype=np.float64)):
            if self.window.full():
                self.window.advance()
            self.window.append(segment)
            kept = self.window.values  # the window from its start, ending with `segment`
            new = np.arange(kept.shape[1] - segment.shape[1], kept.shape[1])
            parts.append(self.run(kept[None], plan_passes(kept.shape[1], self.window.windows)).take(new))
        return concatenate(parts)

    def nbytes(self) -> int:
        return 0

    def release(self) -> None:
        """Nothing beyond the raw window is kept."""


@dataclass
class _OffsetPass:
    """One offset's pass over the current window as far as it is encoded: its KV cache and scaler state, the patch
    being filled (`pending`, from step `boundary`; NaN for the padding before the window), and the outputs of the
    last encoded patch, which predict that patch."""

    boundary: int
    pending: np.ndarray  # (variates, < patch)
    seen: np.ndarray  # (variates,) observed values encoded so far
    cache: KVCache | None = None
    scaler: ScalerState | None = None
    next_raw: np.ndarray | None = None  # (variates, patch, J): the head's projections for the current patch
    next_loc: np.ndarray | None = None  # (variates,): the scaler's statistics at the end of the last encoded patch
    next_scale: np.ndarray | None = None


class CachedStudentTStream:
    """Toto 1.0 as a stream: the pass of each offset kept as a KV cache that a completed patch extends by one token,
    so that scoring a new patch costs a token per offset whatever the length of the history (plus a prefill of
    `min_context` steps each time a window starts). `release` drops the caches; the next push prefills them again
    from the window's values."""

    def __init__(self, backbone: TotoBackbone, windows: Windows, variates: int) -> None:
        self.backbone = backbone
        self.window = _Window(windows, variates)
        self.variates = variates
        self.offsets: dict[int, _OffsetPass] | None = None  # None: to be prefilled from the window's values
        # The head's projections per position (4 per mixture component).
        self.width = sum(linear.out_features for linear in backbone.output_distribution.projections())

    @torch.no_grad()
    def push(self, values: np.ndarray) -> ValueDistributions:
        parts = []
        for segment in self.window.segments(np.asarray(values, dtype=np.float64)):
            if self.window.full():
                self.window.advance()
                self.offsets = None
            if self.offsets is None:
                self.offsets = {o: self._fresh(o) for o in self.window.windows.offsets}
                for state in self.offsets.values():
                    self._feed(state, self.window.values)
            parts.append(self._predict_and_feed(segment))
            self.window.append(segment)
        return concatenate(parts)

    def _fresh(self, offset: int) -> _OffsetPass:
        """An offset's pass over the current window, padded so that its patches start where (t - offset) is a
        multiple of the patch size."""
        pad = (self.window.start - offset) % self.window.windows.patch_size
        return _OffsetPass(self.window.start - pad, np.full((self.variates, pad), np.nan), np.zeros(self.variates))

    def _predict_and_feed(self, segment: np.ndarray) -> StudentTMixture:
        """The predictions of `segment`'s steps, each from the offset whose pass scores it; every offset fed."""
        assert self.offsets is not None  # push prefills them first
        steps = np.arange(self.window.steps, self.window.steps + segment.shape[1])
        chosen = self.window.windows.offset_of(steps)
        picked: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        for offset, state in self.offsets.items():
            raw, loc, scale = self._feed(state, segment)
            if picked is None:
                picked = (np.full_like(raw, np.nan), np.full_like(loc, np.nan), np.full_like(scale, np.nan))
            mine = chosen == offset
            for whole, part in zip(picked, (raw, loc, scale), strict=True):
                whole[:, mine] = part[:, mine]
        assert picked is not None
        raw, loc, scale = picked
        weights, df, comp_loc, comp_scale = self.backbone.output_distribution.components_from_projected(
            torch.from_numpy(raw))
        return StudentTMixture(weights.numpy()[None], df.numpy()[None], comp_loc.numpy()[None],
                               comp_scale.numpy()[None], loc[None], scale[None])

    def _feed(self, state: _OffsetPass, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Append (variates, n) `values` to an offset's pass, encoding every patch they complete in one forward;
        returns the predictions each value had from this pass: the head's projections (variates, n, J), loc and
        scale (variates, n), NaN where the pass had read nothing observed."""
        patch = self.window.windows.patch_size
        backbone = self.backbone
        pending = np.concatenate([state.pending, values], axis=1)
        complete = pending.shape[1] // patch
        # Candidate predictions: the current patch's (before this feed), then those of each patch completed now.
        raws = [state.next_raw]
        locs, scales, seens = [state.next_loc], [state.next_scale], [state.seen]
        if complete:
            block = torch.from_numpy(pending[:, : complete * patch].astype(np.float32))[None].to(backbone.device)
            mask = torch.isfinite(block)
            scaled, loc, scale, state.scaler = backbone.scale(block, mask, state=state.scaler,
                                                              causal_stabilisation=True)
            if state.cache is None:
                state.cache = backbone.allocate_kv_cache(1, self.variates, self.window.windows.window + patch,
                                                         backbone.device, next(backbone.parameters()).dtype)
            hidden = backbone.encode(scaled, mask, torch.zeros_like(block, dtype=torch.long), state.cache)
            raw = backbone.head_projections(hidden)[0].double().cpu().numpy()  # (variates, complete * patch, J)
            ends = slice(patch - 1, complete * patch, patch)  # the last step of each completed patch
            seen = state.seen[:, None] + np.isfinite(pending[:, : complete * patch]).cumsum(axis=1)[:, ends]
            for i in range(complete):
                raws.append(raw[:, i * patch : (i + 1) * patch])
                locs.append(loc[0, :, ends][:, i].double().cpu().numpy())
                scales.append(scale[0, :, ends][:, i].double().cpu().numpy())
                seens.append(seen[:, i])
            state.next_raw, state.next_loc, state.next_scale, state.seen = raws[-1], locs[-1], scales[-1], seens[-1]
            state.boundary += complete * patch
        state.pending = pending[:, complete * patch :]
        # Value i of `values` sits at position p = (pending before) + i of the pending run: in patch p // patch,
        # predicted by candidate p // patch, at the patch's position p % patch.
        positions = np.arange(pending.shape[1] - values.shape[1], pending.shape[1])
        out_raw = np.full((self.variates, values.shape[1], self.width), np.nan)
        out_loc = np.full((self.variates, values.shape[1]), np.nan)
        out_scale = np.full((self.variates, values.shape[1]), np.nan)
        for candidate, (raw_c, loc_c, scale_c, seen_c) in enumerate(zip(raws, locs, scales, seens, strict=True)):
            mine = positions // patch == candidate
            if raw_c is None or not mine.any():
                continue
            usable = np.where(seen_c > 0, 0.0, np.nan)
            out_raw[:, mine] = raw_c[:, positions[mine] % patch]
            out_loc[:, mine] = (loc_c + usable)[:, None]
            out_scale[:, mine] = (scale_c + usable)[:, None]
        return out_raw, out_loc, out_scale

    def nbytes(self) -> int:
        if self.offsets is None:
            return 0
        return sum(s.cache.keys.nbytes + s.cache.values.nbytes for s in self.offsets.values() if s.cache is not None)

    def release(self) -> None:
        self.offsets = None


def concatenate(parts: Sequence[ValueDistributions]) -> ValueDistributions:
    """Distributions of consecutive steps (each (1, variates, n)) as one, along the values axis."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, StudentTMixture):
        mixtures = [p for p in parts if isinstance(p, StudentTMixture)]
        return StudentTMixture(*(np.concatenate([getattr(p, name) for p in mixtures], axis=axis)
                                 for name, axis in (("weights", -2), ("df", -2), ("loc", -2), ("scale", -2),
                                                    ("data_loc", -1), ("data_scale", -1))))
    knots = [p for p in parts if isinstance(p, QuantileKnots)]
    return QuantileKnots(np.concatenate([p.knots for p in knots], axis=-2),
                         np.concatenate([p.data_loc for p in knots], axis=-1),
                         np.concatenate([p.data_scale for p in knots], axis=-1), knots[0].levels)
