"""Zero-shot forecasting by autoregressive decoding of whole patches.

How a forecast flows (see docs/architecture.md):
1. The context is validated, NaN become missing values, and it is left-padded to a multiple of the patch size.
   The series, the scaler and the sampling stay in float32 whatever the weights' dtype (bf16 weights included).
2. The context is encoded ONCE. Its keys and values are stored once per series and shared by every sample path
   (`SharedPrefixKVCache`): each path keeps only the patches it generates, and each decoding step attends to both
   parts with their softmaxes merged exactly. (Toto 1.0 re-encodes the context for every batch of samples and
   copies its cache for every path.)
3. Sample paths are decoded in chunks whose size follows from a memory budget in bytes and the forecast's shape
   (`memory.plan_forecast`): the output head runs on the last patch only, one patch of values is drawn per path (or
   the mean, when `num_samples=None`), appended, and fed back through the cached transformer. Known future
   exogenous values overwrite their variates before being fed back. With `feedback="mean"` the mean is decoded
   once per series instead, and every path's values are drawn from each step's distribution given that mean
   (`Feedback`).

Sampling draws each value's mixture component, then samples only that component's Student-T, from three uniforms
(`distribution.disc_point`: no rejection, so no redraws and no host synchronisation).
Seeds: with `seed`, each (series, path) pair draws from its own counter-based random stream (`streams.PathStreams`),
derived from the series' seed and the path's index. So a series' samples depend neither on the other series of its
batch nor on how the paths are chunked (a server can merge requests and still answer each one as if it were alone).

Models other than `TotoBackbone` that have Toto 1.0's call interface (`model(inputs=..., input_padding_mask=...,
id_mask=..., kv_cache=..., scaling_prefix_length=..., num_exogenous_variables=...)` returning (distribution, loc,
scale), `patch_embed.stride` and `allocate_kv_cache`) are decoded by Toto 1.0's loop (`_decode_any_model`).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from torch.distributions import Distribution

from ..data.util.dataset import MaskedTimeseries, left_pad, left_pad_edge
from ..model.backbone import ScalerState, TotoBackbone
from ..model.distribution import (
    UNIFORMS_PER_VALUE,
    AffineTransformed,
    MixtureOfStudentTsOutput,
    StudentTOutput,
    disc_point,
    student_t_from_polar,
)
from ..model.kv_cache import KVCache, SharedPrefixKVCache
from ..model.toto import Toto
from ..options import FEEDBACK, Feedback
from ..validation import MAX_ABS_VALUE, NonFiniteForecastWarning, check_num_samples, check_prediction_length
from .cancel import Cancellation, raise_if_cancelled
from .context_ensemble import ensemble_windows
from .covariates import model_layout
from .memory import DEFAULT_MEMORY_BUDGET_BYTES, plan_forecast
from .streams import PathStreams, row_seeds

# Quantiles are computed over row chunks of about this many samples (torch.quantile refuses more than 2**24).
QUANTILE_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Forecast:
    mean: Tensor
    """(batch, variates, horizon)."""
    samples: Tensor | None = None
    """(batch, variates, horizon, samples), or None for a mean-only forecast (num_samples=None)."""

    def quantile(self, q: float | Sequence[float] | Tensor) -> Tensor:
        """float -> (batch, variates, horizon); several levels -> (levels, batch, variates, horizon).

        Linear interpolation between order statistics, as torch.quantile, computed in chunks of rows so that any
        number of samples works.
        """
        samples = self._require_samples("quantiles")
        levels = torch.as_tensor(q, dtype=torch.float64)
        if bool(((levels < 0) | (levels > 1)).any()):
            raise ValueError(f"quantile levels must lie in [0, 1], got {q}")
        flat = samples.reshape(-1, samples.shape[-1])
        position = levels.reshape(-1) * (flat.shape[-1] - 1)
        low, high = position.floor().long(), position.ceil().long()
        fraction = (position - low).to(samples.dtype).to(samples.device)
        low, high = low.to(samples.device), high.to(samples.device)
        rows = max(1, QUANTILE_CHUNK_ELEMENTS // flat.shape[-1])
        chunks = []
        for start in range(0, flat.shape[0], rows):
            ordered = flat[start : start + rows].sort(dim=-1).values
            chunks.append(torch.lerp(ordered[:, low], ordered[:, high], fraction))
        values = rearrange(torch.cat(chunks), "n l -> l n").reshape(-1, *samples.shape[:-1])
        return values.reshape(*levels.shape, *samples.shape[:-1])

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


class TotoForecaster:
    """Forecasts with a `TotoBackbone` (or any model with Toto 1.0's call interface).

    `memory_budget_bytes` bounds the forecast's working memory (weights not counted): sample paths are decoded
    in chunks sized to fit it.
    """

    def __init__(self, model: TotoBackbone | Toto, memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES) -> None:
        # A `Toto` (what `from_pretrained` and the fine-tuning module hold) stands for its backbone.
        self.model = model.model if isinstance(model, Toto) else model
        self.model.eval()
        self.memory_budget_bytes = memory_budget_bytes

    @torch.no_grad()
    def forecast(
        self,
        inputs: MaskedTimeseries,
        prediction_length: int,
        num_samples: int | None = None,
        samples_per_batch: int | None = None,
        use_kv_cache: bool = True,
        future_exogenous_variables: Tensor | None = None,
        seed: int | Sequence[int] | None = None,
        exogenous_layout: Literal["model", "aligned"] = "model",
        cancel: Cancellation | None = None,
        context_ensemble: Sequence[int] | None = None,
        feedback: Feedback = "sample",
    ) -> Forecast:
        """Forecast `prediction_length` steps for each variate of each series in `inputs`.

        num_samples=None decodes with the distribution mean (Toto 1.0's behaviour). `samples_per_batch` caps the
        sample paths decoded together (the memory budget chooses otherwise).

        Known-future covariates are the last `inputs.num_exogenous_variables` variates, with their values over the
        horizon in `future_exogenous_variables` (batch, covariates, prediction_length). `exogenous_layout` says how
        they are laid out:
        - "model" (Toto 1.0): already in the model's layout (shifted one patch earlier by the caller); the future
          values are injected as given, and the forecast holds every variate;
        - "aligned": aligned in time with the targets, as tables hold them; they are laid out as in training
          (`covariates.model_layout`), and the forecast holds the targets only.
        `cancel` (a callable returning True, or a threading.Event) is checked between decoding steps; when set,
        the forecast stops with ForecastCancelled.
        `context_ensemble` (context lengths, e.g. (128, 512, 2048)) shares the sample paths out among windows of
        those lengths at the end of `inputs` (`ensemble_windows`) and pools them; a mean-only forecast averages
        the windows' means. None reads all of `inputs`.
        `feedback` says what each path's next patch is decoded from: its own draws ("sample", Toto 1.0) or the
        mean forecast ("mean"; see `Feedback`). A path's draws come from its own stream either way, so a
        forecast whose horizon fits in one patch is the same under both.

        A model that is not a `TotoBackbone` is decoded by Toto 1.0's loop, which knows none of seed,
        exogenous_layout="aligned", cancel or the memory budget, and feeds back samples only.
        """
        if samples_per_batch is not None and (not isinstance(samples_per_batch, (int, np.integer))
                                              or samples_per_batch <= 0):
            raise ValueError(f"samples_per_batch must be a positive integer or None, got {samples_per_batch!r}")
        if feedback not in FEEDBACK:
            raise ValueError(f"feedback must be one of {', '.join(map(repr, FEEDBACK))}, got {feedback!r}")
        if not issubclass(type(self.model), TotoBackbone):
            if feedback != "sample":
                raise ValueError(f"feedback={feedback!r} needs a TotoBackbone; {type(self.model).__name__} is decoded "
                                 "by Toto 1.0's loop, which feeds back samples: leave feedback out")
            return self._decode_any_model(inputs, prediction_length, num_samples, samples_per_batch or 10,
                                          use_kv_cache, future_exogenous_variables)
        num_targets = None
        if exogenous_layout == "aligned" and inputs.num_exogenous_variables:
            inputs, future_exogenous_variables, num_targets = self._aligned_covariates(
                inputs, future_exogenous_variables, prediction_length)
        elif exogenous_layout not in ("model", "aligned"):
            raise ValueError(f"exogenous_layout must be 'model' or 'aligned', got {exogenous_layout!r}")
        series, padding_mask, id_mask, num_exogenous = self._validate(inputs, prediction_length, num_samples)
        exogenous = self._future_exogenous(future_exogenous_variables, series.shape[0], num_exogenous,
                                           prediction_length)
        seeds = self._seeds(seed, series.shape[0])
        windows = ensemble_windows(padding_mask, context_ensemble, num_samples)
        # Each window reads as a batch of series cut to it: steps before a series' window are padding (NaN).
        outputs = []
        non_finite = _NonFinite()
        for window in windows:
            window_series, window_mask = series[..., window.start:], padding_mask[..., window.start:]
            if window.observed is not None:
                window_series = torch.where(window.observed, window_series, float("nan"))
                window_mask = window_mask & window.observed
            outputs.append(self._forecast_window(
                window_series, window_mask, id_mask[..., window.start:], num_exogenous, exogenous, seeds,
                prediction_length, window.paths, samples_per_batch, use_kv_cache, cancel, non_finite, feedback))
        non_finite.report()
        if num_samples is None:
            mean = functools.reduce(torch.add, [window.weight * mean for window, mean in zip(windows, outputs)])
            return _targets(Forecast(mean=mean), num_targets)
        samples = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
        return _targets(Forecast(mean=samples.mean(dim=-1), samples=samples), num_targets)

    def _forecast_window(self, series: Tensor, padding_mask: Tensor, id_mask: Tensor, num_exogenous: int,
                         exogenous: Tensor | None, seeds: list[int] | None, prediction_length: int,
                         paths: range | None, samples_per_batch: int | None, use_kv_cache: bool,
                         cancel: Cancellation | None, non_finite: _NonFinite, feedback: Feedback = "sample"
                         ) -> Tensor:
        """The mean (batch, variates, horizon) when `paths` is None, else sample paths `paths` of every series
        (batch, variates, horizon, len(paths)): path p draws from stream p of its series' seed."""
        batch, variates, _ = series.shape
        patch = self.model.patch_size
        plan = plan_forecast(self.model.config, batch, variates, series.shape[-1], prediction_length,
                             None if paths is None else len(paths), self.memory_budget_bytes, samples_per_batch,
                             use_kv_cache, self._weight_dtype.itemsize)
        series = left_pad(series, patch, 0.0)
        padding_mask = left_pad(padding_mask, patch, False)
        id_mask = left_pad_edge(id_mask, patch)
        prefix = series.shape[-1]
        steps = math.ceil(prediction_length / patch)

        # Encode the context once; every sample path starts from this cache and last hidden state.
        scaled, loc, scale, scaler_state = self.model.scale(series, padding_mask, prefix)
        cache = None
        if use_kv_cache:
            cache = self.model.allocate_kv_cache(batch, variates, prefix, series.device, self._weight_dtype)
        hidden = self.model.encode(scaled, padding_mask, id_mask, cache, num_exogenous)[:, :, -1:]
        context = _Context(series, padding_mask, id_mask, scaled, loc[..., -patch:], scale[..., -patch:], cache,
                           scaler_state, hidden, num_exogenous, exogenous, steps, non_finite)

        if paths is None:
            return self._decode(context, 1, prediction_length, None, cancel)
        mean_steps: list[_Step] | None = None
        if feedback == "mean":
            mean_steps = []
            self._decode(context, 1, prediction_length, None, cancel, steps=mean_steps)
        chunks = []
        for start in range(paths.start, paths.stop, plan.paths_per_chunk):
            count = min(plan.paths_per_chunk, paths.stop - start)
            streams = None if seeds is None else PathStreams(seeds, start, count, device=series.device)
            if mean_steps is None:
                values = self._decode(context, count, prediction_length, streams, cancel, sample=True)
            else:
                values = self._draw_given(mean_steps, count, context, streams)
            chunks.append(rearrange(values, "(s b) v t -> b v t s", s=count))
        return torch.cat(chunks, dim=-1) if len(chunks) > 1 else chunks[0]

    @torch.no_grad()
    def generate_mean(self, inputs: Tensor, prediction_length: int, timestamp_seconds: Tensor,
                      time_interval_seconds: Tensor, input_padding_mask: Tensor | None = None,
                      id_mask: Tensor | None = None, use_kv_cache: bool = False,
                      future_exogenous_variables: Tensor | None = None, num_exogenous_variables: int = 0) -> Tensor:
        """Toto 1.0's mean decoding from tensors: (batch, variate, prediction_length)."""
        masked = _masked_timeseries(inputs, timestamp_seconds, time_interval_seconds, input_padding_mask, id_mask,
                                    num_exogenous_variables)
        return self.forecast(masked, prediction_length, None, None, use_kv_cache, future_exogenous_variables).mean

    @torch.no_grad()
    def generate_samples(self, inputs: Tensor, prediction_length: int, num_samples: int, timestamp_seconds: Tensor,
                         time_interval_seconds: Tensor, input_padding_mask: Tensor | None = None,
                         id_mask: Tensor | None = None, sampling_batch_size: int = 10, use_kv_cache: bool = False,
                         future_exogenous_variables: Tensor | None = None,
                         num_exogenous_variables: int = 0) -> Tensor:
        """Toto 1.0's sampling from tensors: (batch, variate, prediction_length, num_samples)."""
        masked = _masked_timeseries(inputs, timestamp_seconds, time_interval_seconds, input_padding_mask, id_mask,
                                    num_exogenous_variables)
        samples = self.forecast(masked, prediction_length, num_samples, sampling_batch_size, use_kv_cache,
                                future_exogenous_variables).samples
        assert samples is not None  # num_samples paths were drawn
        return samples

    @staticmethod
    def create_affine_transformed(base_distr: Distribution, loc: Tensor, scale: Tensor) -> Distribution:
        """Toto 1.0's helper: the distribution in data space; loc/scale are cut to the base's last time steps."""
        if loc.shape[-1] != 1:
            steps = base_distr.mean.shape[-1]
            loc, scale = loc[..., -steps:], scale[..., -steps:]
        return AffineTransformed(base_distr, loc=loc, scale=scale)

    @property
    def _weight_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _decode(self, context: _Context, paths: int, horizon: int, streams: PathStreams | None,
                cancel: Cancellation | None, sample: bool = False, steps: list[_Step] | None = None) -> Tensor:
        """Decode `paths` paths per series over `horizon` steps; returns (paths*batch, variates, horizon) float32.

        The context's last hidden state has one row per series: the first patch of every path is drawn from the
        same distribution, so the output head runs once per series for it. `steps`, when given, receives each
        step's output-head projections and scaling (for `_draw_given`).
        """
        patch = self.model.patch_size
        model = self.model
        hidden = context.hidden
        cache = None if context.cache is None else SharedPrefixKVCache(context.cache, paths, context.steps - 1)
        loc, scale = (t.repeat(paths, 1, 1) for t in (context.loc, context.scale))
        scaler_state = context.scaler_state.repeat(paths)
        exogenous = None if context.exogenous is None else context.exogenous.repeat(paths, 1, 1)
        rows, variates = loc.shape[:2]
        ones = torch.ones((rows, variates, patch), dtype=torch.bool, device=loc.device)
        ids = context.id_mask[..., -1:].repeat(paths, 1, patch)
        # Without a cache every step runs each path's whole series again (Toto 1.0's use_kv_cache=False).
        history = None
        if cache is None:
            history = _History(*(t.repeat(paths, 1, 1) for t in (context.scaled, context.padding_mask,
                                                                   context.id_mask)))
        generated = []
        for step in range(context.steps):
            raise_if_cancelled(cancel)
            # The last patch is only computed as far as the horizon reaches.
            width = min(patch, horizon - step * patch)
            projections = model.head_projections(hidden, width)
            if steps is not None:
                steps.append(_Step(projections, loc[..., :width], scale[..., :width]))
            normalised = self._draw(model.output_distribution, projections, paths if step == 0 else 1, sample,
                                    streams)
            values = context.non_finite.replace(normalised * scale[..., :width] + loc[..., :width])
            if exogenous is not None:
                values[:, -context.num_exogenous:] = exogenous[:, :, step * patch : step * patch + width]
            generated.append(values)
            if step + 1 < context.steps:
                # The scaler continues from its state: only the new patch is scaled, the history is not rescanned.
                scaled, loc, scale, scaler_state = model.scale(values, ones, None, scaler_state)
                if history is None:
                    hidden = model.encode(scaled, ones, ids, cache, context.num_exogenous)
                else:
                    history.append(scaled, ones, ids)
                    hidden = model.encode(history.scaled, history.padding_mask, history.id_mask, None,
                                          context.num_exogenous)[:, :, -1:]
        return torch.cat(generated, dim=-1)

    def _draw_given(self, steps: list[_Step], paths: int, context: _Context, streams: PathStreams | None) -> Tensor:
        """`paths` draws per series from each of `steps`' distributions (those of a mean-feedback decode), in the
        order `_decode` draws them, so path p takes the same numbers from its stream under either feedback:
        (paths*batch, variates, horizon) float32."""
        generated = []
        for step in steps:
            normalised = self._draw(self.model.output_distribution, step.projections, paths, True, streams)
            generated.append(normalised * step.scale.repeat(paths, 1, 1) + step.loc.repeat(paths, 1, 1))
        values = context.non_finite.replace(torch.cat(generated, dim=-1))
        if context.exogenous is not None:  # known future values, as the decoding loop writes them
            values[:, -context.num_exogenous:] = context.exogenous.repeat(paths, 1, 1)[..., : values.shape[-1]]
        return values

    def _draw(self, head: MixtureOfStudentTsOutput | StudentTOutput, raw: Tensor, draws_per_row: int, sample: bool,
              streams: PathStreams | None) -> Tensor:
        """The next values in normalised space, float32, `draws_per_row` per row, rows ordered (draw, row), from
        the output head's projections `raw` (rows, variates, width, 4K).

        The mean; or a draw of each value's mixture component followed by a sample of that Student-T only (only
        the drawn component's parameters are mapped), from the global random state or from each (series, path)'s
        own stream.
        """
        if not sample:
            return head.mean_from_projected(raw).repeat(draws_per_row, 1, 1)
        shape = (draws_per_row, *raw.shape[:3])  # (draws, rows, variates, width)
        if streams is None:
            numbers = torch.rand(*shape, UNIFORMS_PER_VALUE, device=raw.device)
        else:
            numbers = streams.uniforms(math.prod(shape[2:]) * UNIFORMS_PER_VALUE).view(*shape, UNIFORMS_PER_VALUE)
        df, loc, scale = head.drawn_component(raw.expand(draws_per_row, *raw.shape), numbers[..., 0])
        standard = student_t_from_polar(*disc_point(numbers[..., 1:]), df)
        return (loc + scale * standard).reshape(-1, *shape[2:])

    def _aligned_covariates(self, inputs: MaskedTimeseries, future: Tensor | None, prediction_length: int
                            ) -> tuple[MaskedTimeseries, Tensor | None, int]:
        """Inputs whose covariates are aligned with the targets -> the model's layout, and the number of targets."""
        inputs = inputs.batched()
        series, padding_mask = torch.as_tensor(inputs.series).float(), torch.as_tensor(inputs.padding_mask).bool()
        if future is None:
            return inputs, None, series.shape[1] - inputs.num_exogenous_variables  # _future_exogenous explains
        future = self._future_exogenous(future, series.shape[0], inputs.num_exogenous_variables, prediction_length)
        assert future is not None  # given values come back checked
        targets = series.shape[1] - inputs.num_exogenous_variables
        series, padding_mask = series.to(future.device), padding_mask.to(future.device)
        past = torch.where(padding_mask[:, targets:], series[:, targets:], float("nan"))
        context, future = model_layout(past, future, series.shape[-1], self.model.patch_size)
        return inputs._replace(series=torch.cat([series[:, :targets], context], dim=1),
                               padding_mask=torch.cat([padding_mask[:, :targets], torch.isfinite(context)], dim=1)
                               ), future, targets

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
        _validate_lengths(prediction_length, num_samples)
        inputs = inputs.batched()
        series = torch.as_tensor(inputs.series)
        if series.ndim != 3:
            raise ValueError(f"series must be (variates, time) or (batch, variates, time); got {tuple(series.shape)}")
        if series.shape[-1] == 0 or series.shape[1] == 0:
            raise ValueError(f"series is empty (shape {tuple(series.shape)}): give at least one variate and one step")
        padding_mask = torch.as_tensor(inputs.padding_mask)
        if padding_mask.shape != series.shape:
            raise ValueError(f"padding_mask shape {tuple(padding_mask.shape)} != series shape {tuple(series.shape)}")
        device = self.model.device
        # The series, the scaler and the sampling stay in float32 whatever the weights (a level of 1000 would round
        # to steps of 4 in bf16).
        series = series.to(device=device, dtype=torch.float32)
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
        values = torch.as_tensor(values, dtype=torch.float32, device=self.model.device)
        if values.ndim == 2:
            values = values[None]
        expected = (batch, num_exogenous, prediction_length)
        if tuple(values.shape) != expected:
            raise ValueError(f"future_exogenous_variables must have shape {expected} (batch, exogenous variables, "
                             f"prediction_length), got {tuple(values.shape)}")
        if not bool(torch.isfinite(values).all()):
            raise ValueError("future_exogenous_variables must be finite: known future values cannot be missing")
        return values

    def _decode_any_model(self, inputs: MaskedTimeseries, prediction_length: int, num_samples: int | None,
                          samples_per_batch: int, use_kv_cache: bool, future: Tensor | None) -> Forecast:
        """Toto 1.0's decoding loop, for any model with its call interface: each step calls the model on the whole
        series (with a KV cache the model itself runs only the new patch) and appends the mean or one sample."""
        _validate_lengths(prediction_length, num_samples)
        series, padding_mask, id_mask = (torch.as_tensor(t) for t in inputs[:3])
        if series.ndim == 2:
            series, padding_mask, id_mask = series[None], padding_mask[None], id_mask[None]
        if future is not None and future.ndim == 2:
            future = future[None]
        patch = self.model.patch_embed.stride
        series, padding_mask = left_pad(series, patch, 0.0), left_pad(padding_mask.bool(), patch, False)
        id_mask = left_pad_edge(id_mask.expand(series.shape) if id_mask.shape[-1] == 1 else id_mask, patch)
        paths = 1 if num_samples is None else min(samples_per_batch, num_samples)
        chunks = []
        non_finite = _NonFinite()
        for start in range(0, num_samples or 1, paths):
            size = min(paths, (num_samples or 1) - start)
            values = self._any_model_paths(series.repeat(size, 1, 1), padding_mask.repeat(size, 1, 1),
                                           id_mask.repeat(size, 1, 1), prediction_length, num_samples is not None,
                                           use_kv_cache, None if future is None else future.repeat(size, 1, 1),
                                           int(inputs.num_exogenous_variables), non_finite)
            chunks.append(rearrange(values, "(s b) v t -> b v t s", s=size))
        non_finite.report()
        samples = torch.cat(chunks, dim=-1)
        if num_samples is None:
            return Forecast(mean=samples[..., 0])
        return Forecast(mean=samples.mean(dim=-1), samples=samples)

    def _any_model_paths(self, series: Tensor, padding_mask: Tensor, id_mask: Tensor, horizon: int, sample: bool,
                         use_kv_cache: bool, future: Tensor | None, num_exogenous: int, non_finite: _NonFinite
                         ) -> Tensor:
        patch = self.model.patch_embed.stride
        steps = math.ceil(horizon / patch)
        prefix = series.shape[-1]
        cache = None
        if use_kv_cache:
            cache = self.model.allocate_kv_cache(batch_size=series.shape[0], num_variates=series.shape[1],
                                                 max_time_steps=prefix + steps * patch, device=series.device,
                                                 dtype=series.dtype)
        for step in range(steps):
            distribution, loc, scale = self.model(inputs=series, input_padding_mask=padding_mask, id_mask=id_mask,
                                                  kv_cache=cache, scaling_prefix_length=prefix,
                                                  num_exogenous_variables=num_exogenous)
            distribution = self.create_affine_transformed(distribution, loc, scale)
            values = distribution.sample() if sample else distribution.mean
            values = non_finite.replace(values[..., -patch:])
            if future is not None and num_exogenous:
                known = future[..., step * patch : (step + 1) * patch]
                values[:, -num_exogenous:, : known.shape[-1]] = known
            series = torch.cat([series, values], dim=-1)
            padding_mask = torch.nn.functional.pad(padding_mask, (0, patch), value=True)
            id_mask = torch.cat([id_mask, id_mask[..., -1:].expand(*values.shape)], dim=-1)
        return series[..., prefix : prefix + horizon]


@dataclass
class _Context:
    """The encoded context that every sample path continues (one row per series)."""

    series: Tensor
    padding_mask: Tensor
    id_mask: Tensor
    scaled: Tensor  # the series in normalised space
    loc: Tensor  # (batch, variates, patch): scaler statistics of the last patch
    scale: Tensor
    cache: KVCache | None
    scaler_state: ScalerState
    hidden: Tensor  # (batch, variates, 1, embed): the last patch's hidden state
    num_exogenous: int
    exogenous: Tensor | None  # (batch, exogenous, horizon) known future values
    steps: int  # patches to decode
    non_finite: _NonFinite  # replaced model outputs, reported once per forecast


@dataclass(frozen=True)
class _Step:
    """One decoding step of a mean-feedback decode: what its values are drawn from (one row per series)."""

    projections: Tensor  # (batch, variates, width, 4K): the output head's projections
    loc: Tensor  # (batch, variates, width): the scaler's statistics that map them to data space
    scale: Tensor


@dataclass
class _History:
    """Whole normalised series of the paths, for decoding without a KV cache."""

    scaled: Tensor
    padding_mask: Tensor
    id_mask: Tensor

    def append(self, scaled: Tensor, padding_mask: Tensor, id_mask: Tensor) -> None:
        self.scaled = torch.cat([self.scaled, scaled], dim=-1)
        self.padding_mask = torch.cat([self.padding_mask, padding_mask], dim=-1)
        self.id_mask = torch.cat([self.id_mask, id_mask], dim=-1)


def _targets(forecast: Forecast, num_targets: int | None) -> Forecast:
    if num_targets is None:
        return forecast
    samples = None if forecast.samples is None else forecast.samples[:, :num_targets]
    return Forecast(mean=forecast.mean[:, :num_targets], samples=samples)


def _masked_timeseries(inputs: Tensor, timestamp_seconds: Tensor, time_interval_seconds: Tensor,
                       padding_mask: Tensor | None, id_mask: Tensor | None, num_exogenous: int) -> MaskedTimeseries:
    padding_mask = torch.ones_like(inputs, dtype=torch.bool) if padding_mask is None else padding_mask
    id_mask = torch.zeros_like(inputs, dtype=torch.int) if id_mask is None else id_mask
    return MaskedTimeseries(inputs, padding_mask, id_mask, timestamp_seconds, time_interval_seconds, num_exogenous)


def _validate_lengths(prediction_length: int, num_samples: int | None) -> None:
    check_prediction_length(prediction_length)
    if num_samples is not None:
        check_num_samples(num_samples)


class _NonFinite:
    """The forecast's values that are NaN, infinite or absurdly large (early-training models emit them), replaced by
    0 as Toto 1.0 does, and counted on the device: one host synchronisation per forecast, in `report`."""

    def __init__(self) -> None:
        self.count: Tensor | int = 0

    def replace(self, values: Tensor) -> Tensor:
        limit = torch.finfo(values.dtype).max / 2
        usable = torch.isfinite(values) & (values.abs() < limit)
        self.count = self.count + (~usable).sum()
        return torch.where(usable, values, torch.zeros_like(values))

    def report(self) -> None:
        """Warn (NonFiniteForecastWarning) with the number of values replaced, if any."""
        count = int(self.count)
        if count:
            warnings.warn(f"the model produced {count} NaN or infinite forecast value(s), replaced by 0 as Toto 1.0 "
                          "does: the weights are untrained or broken", NonFiniteForecastWarning, stacklevel=3)
