"""`Toto2Model`: Toto 2.0 as published (`Datadog/Toto-2.0-{4m,22m,313m,1B,2.5B}`), with forecasting and I/O.

Pipeline (shapes for one batch): values (batch, variates, time) -> causal patch scaler -> asinh -> patches of
`patch_size` with their missing mask -> residual-MLP embedding (batch, variates, patches, d_model) -> variate-time
decoder -> quantile head: nine knots (0.1 ... 0.9) per future value, in the scaled space -> sinh, * scale + loc
-> sorted. The output at patch i forecasts patch i + 1.

`forecast` predicts a whole horizon in one forward pass: the context is followed by placeholder patches (no
data), each of whose outputs forecasts the next patch. With `decode_block_size`, it decodes block by block
instead, feeding each block's median back as data and reusing the context's keys and values from a cache.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import Tensor

from toto import checkpoint_io

from . import checkpoint
from .config import QUANTILE_KNOTS, Toto2Config
from .kv_cache import KVCache
from .scaled import ResidualMLP
from .scaler import causal_patch_loc_scale, scale_values
from .transformer import VariateTimeDecoder


class Toto2Output(NamedTuple):
    """`forward`'s result: quantiles in the scaled space and the scaler's statistics."""

    quantiles: Tensor  # (9, batch, variates, patches, patch_size * num_output_patches)
    loc: Tensor  # (batch, variates, time)
    scale: Tensor  # (batch, variates, time)


class QuantileHead(torch.nn.Module):
    """d_model -> (patch_size * num_output_patches, 9) knots per patch, through a readout residual MLP."""

    def __init__(self, config: Toto2Config) -> None:
        super().__init__()
        self.knots = list(QUANTILE_KNOTS)
        self.output_shape = (config.patch_size * config.num_output_patches, len(self.knots))
        self.proj = ResidualMLP(config.d_model, 4 * config.d_model, math.prod(self.output_shape), readout=True)

    def forward(self, x: Tensor) -> Tensor:
        """(..., d_model) -> (9, ..., patch_size * num_output_patches)."""
        return rearrange(self.proj(x).unflatten(-1, self.output_shape), "... p q -> q ... p")


class _OutputHead(torch.nn.Module):
    """Holds the head under the official parameter names (`output_head.param_projection.proj.*`)."""

    def __init__(self, config: Toto2Config) -> None:
        super().__init__()
        self.param_projection = QuantileHead(config)
        self.knots = self.param_projection.knots

    def forward(self, x: Tensor) -> Tensor:
        return self.param_projection(x)


class Toto2Model(torch.nn.Module):
    def __init__(self, config: Toto2Config) -> None:
        super().__init__()
        self.config = config
        self.patch_proj = ResidualMLP(2 * config.patch_size, 4 * config.d_model, config.d_model)
        self.transformer = VariateTimeDecoder(config)
        self.output_head = _OutputHead(config)
        self.name_or_path: str | None = None  # set by from_pretrained

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    # ---------------------------------------------------------------- the network

    def embed(self, scaled: Tensor, observed: Tensor) -> Tensor:
        """(..., time) scaled values and mask -> (..., patches, d_model) patch embeddings."""
        p = self.config.patch_size
        patches = torch.cat(
            [
                rearrange(scaled, "... (n p) -> ... n p", p=p),
                rearrange((~observed).to(scaled.dtype), "... (n p) -> ... n p", p=p),
            ],
            dim=-1,
        )
        return self.patch_proj(patches.to(self.dtype))

    def head(self, hidden: Tensor) -> Tensor:
        """(..., d_model) -> (9, ..., patch_size): the next patch's knots (the first of `num_output_patches`)."""
        return self.output_head(hidden)[..., : self.config.patch_size].float()

    def forward(
        self,
        target: Tensor,
        target_mask: Tensor,
        cpm_mask: Tensor | None = None,
        series_ids: Tensor | None = None,
        num_return_steps: int | None = None,
    ) -> Toto2Output:
        """Training-time pass over (batch, variates, time) values; time must be a multiple of patch_size.

        `cpm_mask` is False at positions hidden from the model on purpose (future placeholders): unlike missing
        data, a hidden patch keeps its series' group id, as in forecasting. Returns knots for every patch.
        """
        if cpm_mask is None:
            cpm_mask = torch.ones_like(target_mask)
        if series_ids is None:
            series_ids = torch.zeros(target.shape[:-1], dtype=torch.long, device=target.device)
        p = self.config.patch_size
        visible = target_mask & cpm_mask
        loc, scale = causal_patch_loc_scale(target, visible, p)
        x = self.embed(scale_values(target, visible, loc, scale), visible)
        empty = (reduce(target_mask.int(), "... (n p) -> ... n", "sum", p=p) == 0) & reduce(
            cpm_mask.int(), "... (n p) -> ... n", "min", p=p
        ).bool()
        group_ids = repeat(series_ids, "... v -> ... v n", n=x.shape[-2]).masked_fill(empty, -1)
        hidden = self.transformer(x, group_ids)
        if num_return_steps is not None:
            hidden = hidden[..., -num_return_steps:, :]
            loc, scale = loc[..., -num_return_steps * p :], scale[..., -num_return_steps * p :]
        return Toto2Output(self.output_head(hidden).float(), loc, scale)

    # ---------------------------------------------------------------- forecasting

    @torch.no_grad()
    def forecast(
        self,
        inputs: dict[str, Tensor],
        horizon: int,
        decode_block_size: int | None = None,
        has_missing_values: bool = True,
        scaler_fallback_min_obs: int = 0,
        quantile_real_cap_k: float = 0.0,
    ) -> Tensor:
        """Quantile forecasts (9, batch, variates, horizon) of the official `Toto2Model.forecast`.

        `inputs`: "target" (batch, variates, time) float, "target_mask" (same shape, True where observed) and
        "series_ids" (batch, variates) grouping variates into series; optionally known-future covariates
        "known_dynamic" (batch, covariates, time + horizon), "known_dynamic_mask" and "known_dynamic_series_ids".
        `time` need not be a multiple of `patch_size`: the context is left-padded with unobserved values.
        `decode_block_size` (a multiple of patch_size) decodes in blocks with median feedback; None or 0 predicts
        the whole horizon in one pass. `scaler_fallback_min_obs` replaces the statistics of leading patches with
        fewer observations by those of the first such observations; `quantile_real_cap_k` clips quantiles to the
        context's range widened by k scales (0 disables both, as in the official defaults).
        """
        p = self.config.patch_size
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        num_patches = math.ceil(horizon / p)
        block = num_patches
        if decode_block_size:
            if decode_block_size % p:
                raise ValueError(f"decode_block_size ({decode_block_size}) must be a multiple of patch_size ({p})")
            block = min(decode_block_size // p, num_patches)

        values, observed, series_ids, num_targets = self._forecast_inputs(inputs, num_patches)
        context_len = values.shape[-1] - num_patches * p
        context_patches = context_len // p
        context_observed = reduce(observed[..., :context_len].int(), "... (n p) -> ... n", "sum", p=p) > 0
        group_ids = repeat(series_ids, "b v -> b v n", n=context_patches + num_patches).clone()
        group_ids[..., :context_patches].masked_fill_(~context_observed, -1)

        cache = KVCache(self.config.num_time_layers) if block < num_patches else None
        quantiles = values.new_zeros(len(QUANTILE_KNOTS), *values.shape[:-1], num_patches * p, dtype=torch.float32)
        median = QUANTILE_KNOTS.index(0.5)
        cap = None
        done = 0
        while done < num_patches:
            size = min(block, num_patches - done)
            start, end = context_len + done * p, context_len + (done + size) * p
            loc, scale = causal_patch_loc_scale(values, observed, p)
            if scaler_fallback_min_obs > 0:
                loc, scale = _backfill_short_patches(values, loc, scale, observed, p, scaler_fallback_min_obs)
            if quantile_real_cap_k > 0 and cap is None:
                cap = _context_cap(values[..., :context_len], observed[..., :context_len],
                                   scale[..., context_len - 1 : context_len], quantile_real_cap_k)
            if done == 0:  # the context, then placeholders for the first block
                first, last, positions = 0, end, None
            else:  # the previous block's medians (now data), then placeholders for this block
                first, last = start - block * p, end
                positions = torch.arange(context_patches + done - block, context_patches + done + size,
                                         device=values.device)
            segment_observed = observed[..., first:last].clone()
            if done > 0:
                segment_observed[..., : block * p] = True
            x = self.embed(scale_values(values[..., first:last], observed[..., first:last],
                                        loc[..., first:last], scale[..., first:last]), segment_observed)
            ids = group_ids[..., first // p : last // p]
            if cache is not None:
                cache.set_keep(x.shape[-2] - size)
            hidden = self.transformer(x, ids, positions, cache, has_missing_values)
            knots = self.head(hidden[..., -(size + 1) : -1, :])  # (9, batch, variates, size, p)
            block_loc = rearrange(loc[..., start:end], "... (n p) -> ... n p", p=p).float()
            block_scale = rearrange(scale[..., start:end], "... (n p) -> ... n p", p=p).float()
            real = _clamp_nonfinite(knots.sinh() * block_scale + block_loc)
            if cap is not None:
                real = torch.minimum(torch.maximum(real, cap[0]), cap[1])
            real = real.sort(dim=0).values
            quantiles[..., done * p : (done + size) * p] = rearrange(real, "q ... n p -> q ... (n p)")
            done += size
            if done < num_patches:  # feed the medians back as observed data
                values[:, :num_targets, start:end] = rearrange(real[median, :, :num_targets], "... n p -> ... (n p)")
                observed[:, :num_targets, start:end] = True
        return quantiles[:, :, :num_targets, :horizon]

    def _forecast_inputs(self, inputs: dict[str, Tensor], num_patches: int) -> tuple[Tensor, Tensor, Tensor, int]:
        """Context + horizon tensors (batch, rows, context + horizon): targets, then known-future covariates.

        The context is left-padded to a whole number of patches; its last patch counts as observed (as in the
        official code: training never left the end of the context unobserved); the horizon starts unobserved.
        """
        p = self.config.patch_size
        target, mask, series_ids = inputs["target"], inputs["target_mask"].bool(), inputs["series_ids"]
        if target.dim() != 3 or mask.shape != target.shape or series_ids.shape != target.shape[:-1]:
            raise ValueError(
                "forecast inputs need target and target_mask of shape (batch, variates, time) and series_ids of "
                f"shape (batch, variates); got {tuple(target.shape)}, {tuple(mask.shape)}, {tuple(series_ids.shape)}"
            )
        pad = -target.shape[-1] % p
        horizon_len = num_patches * p
        values = F.pad(target.float(), (pad, horizon_len))
        observed = F.pad(mask, (pad, horizon_len))
        observed[..., -horizon_len - p : -horizon_len] = True
        ids = series_ids
        if "known_dynamic" in inputs:
            known, known_mask = inputs["known_dynamic"].float(), inputs["known_dynamic_mask"].bool()
            right = max(0, target.shape[-1] + horizon_len - known.shape[-1])
            known = F.pad(known, (pad, right))[..., : values.shape[-1]]
            known_mask = F.pad(known_mask, (pad, right))[..., : values.shape[-1]]
            values, observed = torch.cat([values, known], dim=-2), torch.cat([observed, known_mask], dim=-2)
            ids = torch.cat([series_ids, inputs["known_dynamic_series_ids"]], dim=-1)
        return values, observed, ids, target.shape[-2]

    # ---------------------------------------------------------------- checkpoints

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        map_location: str | torch.device = "cpu",
        strict: bool = True,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
        proxies: dict | None = None,
        **config_overrides: Any,
    ) -> Toto2Model:
        """Load a local folder or a Hub repo (e.g. "Datadog/Toto-2.0-22m"), single-file or sharded.

        The Hub arguments are those of the official `from_pretrained`; `config_overrides` replace config.json
        fields (an unknown name is an error that lists the known ones).
        """
        folder = checkpoint_io.resolve(name_or_path, revision, cache_dir, token, local_files_only, force_download,
                                       proxies)
        config_path = folder / checkpoint_io.CONFIG_FILE
        config = Toto2Config.from_dict({**checkpoint_io.read_config(folder), **config_overrides},
                                       source=str(config_path))
        model = checkpoint.load_weights(lambda: cls(config), folder, map_location, strict)
        model.name_or_path = str(name_or_path)
        return model.to(map_location).eval()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the official layout: config.json (the config's fields) and model.safetensors."""
        return checkpoint_io.write_folder(directory, self.config.to_dict(), self)


def _clamp_nonfinite(values: Tensor) -> Tensor:
    """Replace +-inf (a sinh overflow) with the largest / smallest finite value of the same patch."""
    finite = values.isfinite()
    high = torch.where(finite, values, -torch.inf).amax(-1, keepdim=True)
    low = torch.where(finite, values, torch.inf).amin(-1, keepdim=True)
    return torch.where(values == torch.inf, high, torch.where(values == -torch.inf, low, values))


def _context_cap(context: Tensor, observed: Tensor, anchor_scale: Tensor, k: float) -> tuple[Tensor, Tensor]:
    """Bounds [min - k*scale, max + k*scale] of the observed context, shaped to broadcast over (n, p) patches."""
    high = torch.nan_to_num(context.masked_fill(~observed, -torch.inf).amax(-1, keepdim=True), neginf=0.0)
    low = torch.nan_to_num(context.masked_fill(~observed, torch.inf).amin(-1, keepdim=True), posinf=0.0)
    width = k * anchor_scale.float()
    return (low - width).unsqueeze(-1), (high + width).unsqueeze(-1)


def _backfill_short_patches(
    values: Tensor, loc: Tensor, scale: Tensor, observed: Tensor, patch_size: int, min_obs: int
) -> tuple[Tensor, Tensor]:
    """Give leading patches with fewer than `min_obs` observations so far the statistics of the first `min_obs`
    observations (an early patch's own mean and std are too noisy to scale by)."""
    first = (observed.cumsum(-1) <= min_obs) & observed
    n = first.sum(-1, keepdim=True).clamp_min(1)
    donor_loc = (values * first).sum(-1, keepdim=True) / n
    donor_var = (((values - donor_loc) * first) ** 2).sum(-1, keepdim=True) / (n - 1).clamp_min(1)
    donor_scale = donor_var.sqrt().clamp_min(1e-6)
    few = reduce(observed.int(), "... (n p) -> ... n", "sum", p=patch_size).cumsum(-1) < min_obs
    few = few.repeat_interleave(patch_size, dim=-1)
    return torch.where(few, donor_loc, loc), torch.where(few, donor_scale, scale)
