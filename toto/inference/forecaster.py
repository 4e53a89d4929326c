"""Zero-shot forecasting by autoregressive decoding of whole patches.

How a forecast flows (see docs/architecture.md):
1. The context is validated, NaN become missing values, and it is left-padded to a multiple of the patch size.
2. The context is encoded ONCE; its KV cache and its last hidden state are shared by every sample path. (Toto 1.0
   re-encodes the context for every batch of samples.)
3. Sample paths are decoded in chunks of `samples_per_batch` paths: the output head runs on the last patch only,
   one patch of values is drawn per path (or the mean, when `num_samples=None`), appended, and fed back through the
   cached transformer. Known future exogenous values overwrite their variates before being fed back.

Seeds: with `seed`, each batch row draws from its own random stream derived from its seed, so a row's samples do not
depend on the other rows of the batch (a server can merge requests and still answer each one as if it were alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from ..data.util.dataset import MaskedTimeseries, left_pad, left_pad_edge
from ..model.backbone import ScalerState, TotoBackbone
from ..model.distribution import select_rows
from ..model.kv_cache import KVCache

# History the high-level entry points (pandas API, CLI, GluonTS predictor, BOOM) feed to the model by default:
# Toto 1.0 was evaluated on BOOM with 2048 steps.
DEFAULT_CONTEXT_LENGTH = 2048
# Larger magnitudes overflow float32 once scaled and sampled; such series must be rescaled by the caller.
MAX_ABS_VALUE = 1e30
# Sample paths decoded together by default: batch * variates * samples_per_batch rows at most this many.
DEFAULT_ROWS_PER_CHUNK = 4096


@dataclass(frozen=True)
class Forecast:
    mean: Tensor
    """(batch, variates, horizon)."""
    samples: Tensor | None = None
    """(batch, variates, horizon, samples), or None for a mean-only forecast (num_samples=None)."""

    def quantile(self, q: float | Sequence[float] | Tensor) -> Tensor:
        """float -> (batch, variates, horizon); several levels -> (levels, batch, variates, horizon)."""
        samples = self._require_samples("quantiles")
        levels = torch.as_tensor(q, dtype=samples.dtype, device=samples.device)
        if bool(((levels < 0) | (levels > 1)).any()):
            raise ValueError(f"quantile levels must lie in [0, 1], got {q}")
        return samples.quantile(levels, dim=-1)

    @property
    def median(self) -> Tensor:
        return self.quantile(0.5)

    @property
    def std(self) -> Tensor:
        return self._require_samples("a standard deviation").std(dim=-1)

    def _require_samples(self, what: str) -> Tensor:
        if self.samples is None:
            raise ValueError(f"{what} need samples: forecast with num_samples set (for example 256), not None")
        return self.samples


def row_seeds(seed: int, count: int, first: int = 0) -> list[int]:
    """Independent per-series seeds derived from one seed: those of series first, ..., first + count - 1.

    `forecast(seed=seed)` gives batch row i the seed `row_seeds(seed, batch)[i]`; the pandas API, the GluonTS
    predictor and the service give the i-th series of a panel, dataset or request the same one, so all of them
    return the same numbers for the same series, seed and position.
    """
    return [int(np.random.SeedSequence(seed, spawn_key=(i,)).generate_state(1)[0]) for i in range(first, first + count)]


class TotoForecaster:
    def __init__(self, model: TotoBackbone) -> None:
        self.model = model.eval()

    @torch.inference_mode()
    def forecast(
        self,
        inputs: MaskedTimeseries,
        prediction_length: int,
        num_samples: int | None = None,
        samples_per_batch: int | None = None,
        use_kv_cache: bool = True,
        future_exogenous_variables: Tensor | None = None,
        seed: int | Sequence[int] | None = None,
    ) -> Forecast:
        """Forecast `prediction_length` steps for each variate of each series in `inputs`.

        num_samples=None decodes with the distribution mean (Toto 1.0's behaviour). `samples_per_batch` bounds
        memory: that many sample paths per series are decoded at once (default: as many as keep
        batch * variates * samples_per_batch <= 4096).
        """
        series, padding_mask, id_mask, num_exogenous = self._validate(inputs, prediction_length, num_samples)
        batch, variates, _ = series.shape
        patch = self.model.patch_size
        steps = math.ceil(prediction_length / patch)
        exogenous = self._future_exogenous(future_exogenous_variables, batch, num_exogenous, prediction_length)
        seeds = self._seeds(seed, batch)

        series = left_pad(series, patch, 0.0)
        padding_mask = left_pad(padding_mask, patch, False)
        id_mask = left_pad_edge(id_mask, patch)
        prefix = series.shape[-1]

        # Encode the context once; every sample path starts from this cache and last hidden state.
        scaled, loc, scale, scaler_state = self.model.scale(series, padding_mask, prefix)
        cache = None
        if use_kv_cache:
            cache = self.model.allocate_kv_cache(batch, variates, prefix + steps * patch, series.device, series.dtype)
        hidden = self.model.encode(scaled, padding_mask, id_mask, cache, num_exogenous)[:, :, -1:]
        context = _Paths(series, padding_mask, id_mask, scaled, loc[..., -patch:], scale[..., -patch:], cache,
                         scaler_state)

        if num_samples is None:
            mean = self._decode(context, hidden, 1, prediction_length, prefix, num_exogenous, exogenous, False, None, 0)
            return Forecast(mean=mean)

        per_chunk = samples_per_batch or max(1, DEFAULT_ROWS_PER_CHUNK // (batch * variates))
        if per_chunk <= 0:
            raise ValueError(f"samples_per_batch must be positive, got {samples_per_batch}")
        chunks = []
        for index, start in enumerate(range(0, num_samples, per_chunk)):
            size = min(per_chunk, num_samples - start)
            values = self._decode(context, hidden, size, prediction_length, prefix, num_exogenous, exogenous, True,
                                  seeds, index)
            chunks.append(rearrange(values, "(s b) v t -> b v t s", s=size))
        samples = torch.cat(chunks, dim=-1)
        return Forecast(mean=samples.mean(dim=-1), samples=samples)

    def _decode(self, context: _Paths, hidden: Tensor, paths_per_series: int, horizon: int, prefix: int,
                num_exogenous: int, exogenous: Tensor | None, sample: bool, seeds: list[int] | None,
                chunk: int) -> Tensor:
        """Decode `paths_per_series` paths per series over `horizon` steps; returns (paths*batch, variates, horizon).

        `hidden` is the context's last state, one row per series: the first patch of every path is drawn from the
        same distribution, so the output head runs once per series for it.
        """
        patch = self.model.patch_size
        steps = math.ceil(horizon / patch)
        paths = context.repeat(paths_per_series)
        if exogenous is not None:
            exogenous = exogenous.repeat(paths_per_series, 1, 1)
        draws_per_row = paths_per_series
        for step in range(steps):
            # The last patch is only computed as far as the horizon reaches.
            width = min(patch, horizon - step * patch)
            normalised = self._draw(hidden, width, draws_per_row, sample, seeds, chunk, step)
            values = _replace_non_finite(normalised * paths.scale[..., :width] + paths.loc[..., :width])
            if exogenous is not None:
                values[:, -num_exogenous:] = exogenous[:, :, step * patch:step * patch + width]
            paths.append(values)
            if step + 1 < steps:
                # The scaler continues from its state: only the new patch is scaled, the history is not rescanned.
                scaled, paths.loc, paths.scale, paths.scaler_state = self.model.scale(
                    values, torch.ones_like(values, dtype=torch.bool), None, paths.scaler_state)
                paths.scaled = torch.cat([paths.scaled, scaled], dim=-1)
                # With a cache only the new patch runs through the model; without one, the whole series again.
                new = slice(None) if paths.cache is None else slice(-patch, None)
                hidden = self.model.encode(paths.scaled[..., new], paths.padding_mask[..., new],
                                           paths.id_mask[..., new], paths.cache, num_exogenous)[:, :, -1:]
                draws_per_row = 1
        return paths.series[..., prefix:]

    def _draw(self, hidden: Tensor, width: int, draws_per_row: int, sample: bool, seeds: list[int] | None,
              chunk: int, step: int) -> Tensor:
        """The next `width` values in normalised space, `draws_per_row` per hidden row, rows ordered (draw, row).

        The mean, a free sample, or samples from each series' own random stream (rows of series b are b::batch).
        """
        rows, variates = hidden.shape[:2]
        if not sample:
            return self.model.head(hidden, width).mean.repeat(draws_per_row, 1, 1)
        if seeds is None:
            return self.model.head(hidden, width).sample((draws_per_row,)).reshape(draws_per_row * rows, variates, width)
        batch = len(seeds)
        distribution = self.model.head(hidden, width)
        out = hidden.new_empty((draws_per_row * rows, variates, width))
        devices = [hidden.device] if hidden.device.type == "cuda" else []
        for row, seed in enumerate(seeds):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(int(np.random.SeedSequence([seed, chunk, step]).generate_state(1)[0]))
                draws = select_rows(distribution, slice(row, None, batch)).sample((draws_per_row,))
            out[row::batch] = draws.reshape(-1, variates, width)
        return out

    @staticmethod
    def _seeds(seed: int | Sequence[int] | None, batch: int) -> list[int] | None:
        if seed is None:
            return None
        if isinstance(seed, (int, np.integer)):
            return row_seeds(int(seed), batch)
        seeds = [int(s) for s in seed]
        if len(seeds) != batch:
            raise ValueError(f"seed has {len(seeds)} entries but the batch has {batch} series; give one per series")
        return seeds

    def _validate(self, inputs: MaskedTimeseries, prediction_length: int, num_samples: int | None
                  ) -> tuple[Tensor, Tensor, Tensor, int]:
        if not isinstance(prediction_length, (int, np.integer)) or prediction_length <= 0:
            raise ValueError(f"prediction_length must be a positive integer, got {prediction_length!r}")
        if num_samples is not None and (not isinstance(num_samples, (int, np.integer)) or num_samples <= 0):
            raise ValueError(f"num_samples must be a positive integer or None, got {num_samples!r}")
        series = torch.as_tensor(inputs.series)
        if series.ndim == 2:
            inputs = MaskedTimeseries(*(torch.as_tensor(f)[None] for f in inputs[:5]), inputs.num_exogenous_variables)
            series = inputs.series
        if series.ndim != 3:
            raise ValueError(f"series must be (variates, time) or (batch, variates, time); got {tuple(series.shape)}")
        if series.shape[-1] == 0 or series.shape[1] == 0:
            raise ValueError(f"series is empty (shape {tuple(series.shape)}): give at least one variate and one step")
        padding_mask = torch.as_tensor(inputs.padding_mask)
        if padding_mask.shape != series.shape:
            raise ValueError(f"padding_mask shape {tuple(padding_mask.shape)} != series shape {tuple(series.shape)}")
        device = self.model.device
        dtype = next(self.model.parameters()).dtype
        series = series.to(device=device, dtype=dtype)
        padding_mask = padding_mask.to(device).bool() & torch.isfinite(series)
        if bool(((series.abs() > MAX_ABS_VALUE) & padding_mask).any()):
            raise ValueError(f"series holds values beyond +-{MAX_ABS_VALUE:g}, which overflow float32 forecasting: "
                             "divide the series by a constant and multiply the forecast back")
        observed = padding_mask.any(dim=-1)
        if not bool(observed.all()):
            b, v = (int(i) for i in (~observed).nonzero()[0])
            raise ValueError(f"series {b}, variate {v} has no finite observed value: drop it or give some values")
        id_mask = torch.as_tensor(inputs.id_mask).to(device)
        id_mask = id_mask.expand(series.shape) if id_mask.shape[-1] == 1 else id_mask
        if id_mask.shape != series.shape:
            raise ValueError(f"id_mask shape {tuple(id_mask.shape)} does not match series shape {tuple(series.shape)}")
        num_exogenous = int(inputs.num_exogenous_variables)
        if not 0 <= num_exogenous < series.shape[1]:
            raise ValueError(f"num_exogenous_variables={num_exogenous} must leave at least one target variate")
        return series, padding_mask, id_mask, num_exogenous

    def _future_exogenous(self, values: Tensor | None, batch: int, num_exogenous: int,
                          prediction_length: int) -> Tensor | None:
        if values is None:
            if num_exogenous:
                raise ValueError(f"inputs declare {num_exogenous} exogenous variables: pass their future values "
                                 "as future_exogenous_variables (batch, exogenous, prediction_length)")
            return None
        values = torch.as_tensor(values, dtype=next(self.model.parameters()).dtype, device=self.model.device)
        if values.ndim == 2:
            values = values[None]
        expected = (batch, num_exogenous, prediction_length)
        if tuple(values.shape) != expected:
            raise ValueError(f"future_exogenous_variables must have shape {expected} (batch, exogenous variables, "
                             f"prediction_length), got {tuple(values.shape)}")
        if not bool(torch.isfinite(values).all()):
            raise ValueError("future_exogenous_variables must be finite: known future values cannot be missing")
        return values


@dataclass
class _Paths:
    """The growing state of a set of decoding paths (rows ordered (path, series))."""

    series: Tensor
    padding_mask: Tensor
    id_mask: Tensor
    scaled: Tensor  # the series in normalised space
    loc: Tensor  # (rows, variates, patch): scaler statistics of the last fed patch
    scale: Tensor
    cache: KVCache | None
    scaler_state: ScalerState

    def repeat(self, times: int) -> _Paths:
        """`times` independent copies of these paths, sharing nothing mutable with the original."""
        def rep(t: Tensor) -> Tensor:
            return t.repeat(times, *([1] * (t.ndim - 1)))

        cache = self.cache.repeat(times) if self.cache is not None else None
        return _Paths(rep(self.series), rep(self.padding_mask), rep(self.id_mask), rep(self.scaled), rep(self.loc),
                      rep(self.scale), cache, self.scaler_state.repeat(times))

    def append(self, values: Tensor) -> None:
        """Append one generated patch (observed, same series ids as the last step)."""
        patch = values.shape[-1]
        self.series = torch.cat([self.series, values], dim=-1)
        self.padding_mask = torch.nn.functional.pad(self.padding_mask, (0, patch), value=True)
        self.id_mask = torch.cat([self.id_mask, self.id_mask[..., -1:].expand(*values.shape)], dim=-1)


def _replace_non_finite(values: Tensor) -> Tensor:
    """Early-training models can emit inf/NaN or absurdly large values; replace them by 0 as Toto 1.0 does."""
    limit = torch.finfo(values.dtype).max / 2
    return torch.where(torch.isfinite(values) & (values.abs() < limit), values, torch.zeros_like(values))
