"""One typed forecasting interface over both model families, in the shape of Chronos' pipelines.

    from toto.pipeline import ForecastPipeline
    pipeline = ForecastPipeline.from_pretrained("toto-tiny")            # or "Datadog/Toto-2.0-22m", a folder
    prediction = pipeline.predict_quantiles(inputs, prediction_length=48)  # inputs: a MaskedTimeseries
    prediction.quantiles  # (levels, batch, variates, horizon);  prediction.mean: (batch, variates, horizon)
    table = pipeline.predict_df(df, prediction_length=48)

`from_pretrained` reads the checkpoint's config.json and picks the family: Toto 1.0 (`embed_dim`; a Student-T
mixture, forecast by sampling paths) or Toto 2.0 (`d_model`; nine quantile knots in one forward pass). Everything
that forecasts - `predict_df`, `toto forecast --checkpoint`, the GluonTS predictor, the service and `boom eval` -
goes through this class, so both families behave the same wherever they are used.

Quantile levels. Toto 1.0 takes any level from its samples. Toto 2.0 predicts the knots 0.1, 0.2, ..., 0.9; a
level between two knots is interpolated linearly between them, and a level below 0.1 or above 0.9 gets the edge
knot (with a warning: the model says nothing beyond it). Toto 2.0 has no sample paths: asking for them is a
ValueError, and its "mean" is the median knot.

Inputs. Values are a `MaskedTimeseries` (NaN or padding_mask=False = missing). Its last `num_exogenous_variables`
variates are known-future covariates aligned with the targets; their values over the horizon come in
`future_exogenous` (batch, covariates, horizon). Each family lays them out as it was trained: Toto 1.0 through
its forecaster, Toto 2.0 as `known_dynamic` rows spanning context and horizon. Only the targets are returned.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
from torch import Tensor

from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import DEFAULT_CONTEXT_LENGTH, FEEDBACK, Feedback, TotoForecaster
from toto.model.checkpoint import DEFAULT_MODEL, read_training_summary
from toto.model.toto import Toto
from toto.v2 import QUANTILE_KNOTS, Toto2Model
from toto.v2 import checkpoint as checkpoint_v2

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = QUANTILE_KNOTS
# Sample paths per series for a sampling model when the caller does not say (CLI, pandas API and service).
DEFAULT_NUM_SAMPLES = 256


class Prediction(NamedTuple):
    """Forecasts of the target variates only."""

    levels: tuple[float, ...]  # the quantile levels, ascending
    quantiles: Tensor  # (levels, batch, variates, horizon) float32
    mean: Tensor  # (batch, variates, horizon) float32; the median for quantile models


class ForecastPipeline(abc.ABC):
    """A loaded model and how to forecast with it. Build one with `ForecastPipeline.from_pretrained`."""

    family: ClassVar[str]
    samples: ClassVar[bool]  # whether the model forecasts by sampling paths

    def __init__(self, model: torch.nn.Module, context_length: int = DEFAULT_CONTEXT_LENGTH,
                 context_ensemble: Sequence[int] | None = None) -> None:
        """`context_length`: the history the entry points feed the model unless told otherwise.
        `context_ensemble`: context lengths whose windows a sampling model's forecast from that default history
        pools (`toto.inference.context_ensemble`), or None for one window."""
        self.model = model.eval()
        self.context_length = context_length
        self.context_ensemble = None if context_ensemble is None else tuple(int(c) for c in context_ensemble)
        self._feedback: Feedback = "sample"

    @property
    def feedback(self) -> Feedback:
        """What a sample path's next patch is decoded from (`toto.inference.forecaster.Feedback`): "sample" unless
        set. Setting it checks the value, and that the model samples at all."""
        return self._feedback

    @feedback.setter
    def feedback(self, value: Feedback) -> None:
        if value not in FEEDBACK:
            raise ValueError(f"feedback must be one of {', '.join(map(repr, FEEDBACK))}, got {value!r}")
        if value != "sample" and not self.samples:
            raise ValueError(f"feedback applies to Toto 1.0 checkpoints, which sample; {self.name} is a {self.family} "
                             "quantile model: leave feedback out (decode_block_size feeds back its median)")
        self._feedback = value

    def ensemble_for(self, context_length: int | None) -> tuple[int, ...] | None:
        """The context ensemble a forecast from the last `context_length` steps pools: the model's own at its
        default context (`context_length` None or equal to it); one window at any other context the caller
        chose, so that `--context-length 512` reads exactly 512 steps."""
        return self.context_ensemble if context_length in (None, self.context_length) else None

    @staticmethod
    def from_pretrained(
        name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None,
        dtype: torch.dtype | None = None, decode_block_size: int | None = None, feedback: Feedback | None = None,
        **hub_kwargs: object,
    ) -> ForecastPipeline:
        """Load an embedded model name, a local folder or a Hub repo id of either family.

        `device` defaults to the GPU when there is one. `dtype=torch.bfloat16` runs the weights and matmuls in
        bf16; scaling and outputs stay float32. The pipeline's `context_length` is the default its folder records
        (`default_context_length`: the context the model was trained with, or the one its validation chose, as
        the embedded models record; a model trained on 512 steps forecasts worse from 2048, whose later positions
        it never saw), else 2048. A Toto 1.0 folder may also record a `context_ensemble` (the embedded
        toto-tiny does): forecasts from the default context then pool sample paths drawn from windows of those
        lengths.
        `decode_block_size` (Toto 2.0 only, a multiple of its patch size) decodes the horizon that many steps at a
        time, feeding each block's median back as data; by default the whole horizon is one pass, as in the
        official wrapper. `feedback` (Toto 1.0 only) is what a sample path's next patch is decoded from: its own
        draws ("sample", the default, as Toto 1.0) or the mean forecast ("mean", `toto.inference.forecaster.Feedback`).
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        folder = checkpoint_v2.resolve(name_or_path, **hub_kwargs)
        config = checkpoint_v2.read_config(folder)
        context_length = default_context_length(folder)
        context_ensemble = read_training_summary(folder).get("context_ensemble")
        if isinstance(config, dict) and "d_model" in config:
            model: torch.nn.Module = Toto2Model.from_pretrained(folder, map_location=device)
            pipeline: ForecastPipeline = Toto2Pipeline(model, decode_block_size, context_length=context_length)
        else:
            if decode_block_size is not None:
                raise ValueError(f"decode_block_size applies to Toto 2.0 checkpoints; {name_or_path} is a Toto 1.0 "
                                 "model, which decodes patch by patch already: leave decode_block_size out")
            model = Toto.from_pretrained(folder, map_location=device)
            pipeline = Toto1Pipeline(model, context_length=context_length, context_ensemble=context_ensemble)
        model.name_or_path = str(name_or_path)
        if feedback is not None:
            pipeline.feedback = feedback
        if dtype is not None:
            model.to(dtype)
        return pipeline

    @classmethod
    def of(cls, model: str | Path | torch.nn.Module | ForecastPipeline) -> ForecastPipeline:
        """A pipeline for a name or path, a loaded model of either family, or a pipeline (returned as is)."""
        if isinstance(model, ForecastPipeline):
            return model
        if isinstance(model, Toto2Model):
            return Toto2Pipeline(model)
        if isinstance(model, Toto):
            return Toto1Pipeline(model)
        return cls.from_pretrained(model)

    @property
    def patch_size(self) -> int:
        return self.model.config.patch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def name(self) -> str:
        return getattr(self.model, "name_or_path", None) or self.family

    @abc.abstractmethod
    def predict_quantiles(
        self,
        inputs: MaskedTimeseries,
        prediction_length: int,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        future_exogenous: Tensor | None = None,
        num_samples: int | None = None,
        seed: int | Sequence[int] | None = 0,
        ensemble: bool = True,
    ) -> Prediction:
        """Quantiles and mean of the next `prediction_length` steps of every target variate.

        `num_samples` and `seed` apply to sampling models (`num_samples=None` uses DEFAULT_NUM_SAMPLES); a
        quantile model refuses `num_samples`, since it does not sample. `ensemble=False` reads `inputs` as one
        window even when the model has a `context_ensemble`.
        """

    def predict_samples(
        self, inputs: MaskedTimeseries, prediction_length: int, num_samples: int = DEFAULT_NUM_SAMPLES,
        future_exogenous: Tensor | None = None, seed: int | Sequence[int] | None = 0, ensemble: bool = True,
    ) -> Tensor:
        """(batch, variates, horizon, samples) sample paths; only for sampling models."""
        raise ValueError(
            f"{self.name} is a {self.family} quantile model: it forecasts quantiles in one pass and has no sample "
            "paths. Ask for quantiles (predict_quantiles, or leave out num_samples / return_samples)."
        )

    def predict_df(self, df: pd.DataFrame, prediction_length: int, **kwargs: object) -> pd.DataFrame:
        """`toto.api.predict_df` with this model; see there for the table layouts and keyword arguments."""
        from toto.api import predict_df

        return predict_df(df, prediction_length, model=self, **kwargs)

    def _check(self, inputs: MaskedTimeseries, prediction_length: int, levels: Sequence[float],
               future_exogenous: Tensor | None) -> tuple[float, ...]:
        if prediction_length < 1:
            raise ValueError(f"prediction_length must be at least 1, got {prediction_length}")
        if not levels or not all(0 < float(q) < 1 for q in levels):
            raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {list(levels)}")
        k = inputs.num_exogenous_variables
        if (future_exogenous is None) != (k == 0):
            raise ValueError(
                f"the inputs have {k} exogenous variate(s) but future_exogenous is "
                f"{'missing' if future_exogenous is None else 'given'}: pass their values over the horizon, "
                "(batch, covariates, prediction_length), exactly when there are exogenous variates"
            )
        if future_exogenous is not None and tuple(future_exogenous.shape[-2:]) != (k, prediction_length):
            raise ValueError(
                f"future_exogenous must have shape (batch, {k}, {prediction_length}), got {tuple(future_exogenous.shape)}"
            )
        return tuple(sorted({float(q) for q in levels}))


class Toto1Pipeline(ForecastPipeline):
    family = "Toto 1.0"
    samples = True

    def __init__(self, model: Toto, context_length: int = DEFAULT_CONTEXT_LENGTH,
                 context_ensemble: Sequence[int] | None = None, feedback: Feedback = "sample") -> None:
        """`feedback`: what each sample path's next patch is decoded from (`toto.inference.forecaster.Feedback`)."""
        super().__init__(model, context_length, context_ensemble)
        self.feedback = feedback

    def _forecast(self, inputs, prediction_length, future_exogenous, num_samples, seed, ensemble):
        forecaster = TotoForecaster(self.model.model)
        with torch.inference_mode():
            return forecaster.forecast(
                inputs.to(self.device), prediction_length, num_samples=num_samples, seed=seed,
                future_exogenous_variables=None if future_exogenous is None else future_exogenous.to(self.device),
                exogenous_layout="aligned", context_ensemble=self.context_ensemble if ensemble else None,
                feedback=self.feedback,
            )

    def predict_quantiles(self, inputs, prediction_length, quantile_levels=DEFAULT_QUANTILE_LEVELS,
                          future_exogenous=None, num_samples=None, seed=0, ensemble=True):
        levels = self._check(inputs, prediction_length, quantile_levels, future_exogenous)
        forecast = self._forecast(inputs, prediction_length, future_exogenous, num_samples or DEFAULT_NUM_SAMPLES,
                                  seed, ensemble)
        targets = inputs.series.shape[-2] - inputs.num_exogenous_variables
        quantiles = forecast.quantile(torch.tensor(levels)).float()[:, :, :targets]
        return Prediction(levels, quantiles.clone(), forecast.mean.float()[:, :targets].clone())

    def predict_samples(self, inputs, prediction_length, num_samples=DEFAULT_NUM_SAMPLES, future_exogenous=None,
                        seed=0, ensemble=True):
        self._check(inputs, prediction_length, DEFAULT_QUANTILE_LEVELS, future_exogenous)
        forecast = self._forecast(inputs, prediction_length, future_exogenous, num_samples, seed, ensemble)
        targets = inputs.series.shape[-2] - inputs.num_exogenous_variables
        return forecast.samples.float()[:, :targets].clone()


class Toto2Pipeline(ForecastPipeline):
    family = "Toto 2.0"
    samples = False

    def __init__(
        self, model: Toto2Model, decode_block_size: int | None = None, scaler_fallback_min_obs: int = 8,
        quantile_real_cap_k: float = 1e4, context_length: int = DEFAULT_CONTEXT_LENGTH,
    ) -> None:
        """The defaults are those of the official GluonTS wrapper (`Toto2GluonTSModelConfig`), which produced
        the published BOOM results: the whole horizon in one pass, leading patches with fewer than 8 observations
        scaled by the first 8, and quantiles clipped to the context's range widened by 10,000 scales."""
        super().__init__(model, context_length)
        patch = model.config.patch_size
        if decode_block_size is not None and (decode_block_size <= 0 or decode_block_size % patch):
            raise ValueError(f"decode_block_size must be a positive multiple of the patch size ({patch}), not "
                             f"{decode_block_size}: e.g. {patch} feeds back the median of every patch")
        self.decode_block_size = decode_block_size  # None: the whole horizon in one forward pass
        self.scaler_fallback_min_obs = scaler_fallback_min_obs
        self.quantile_real_cap_k = quantile_real_cap_k

    def predict_quantiles(self, inputs, prediction_length, quantile_levels=DEFAULT_QUANTILE_LEVELS,
                          future_exogenous=None, num_samples=None, seed=0, ensemble=True):
        levels = self._check(inputs, prediction_length, quantile_levels, future_exogenous)
        if num_samples is not None:
            raise ValueError(
                f"{self.name} is a {self.family} quantile model and does not sample: leave num_samples out"
            )
        knots = self.model.forecast(
            self.model_inputs(inputs, future_exogenous), prediction_length, decode_block_size=self.decode_block_size,
            scaler_fallback_min_obs=self.scaler_fallback_min_obs, quantile_real_cap_k=self.quantile_real_cap_k,
        )
        return Prediction(levels, interpolate_quantiles(knots, levels), knots[QUANTILE_KNOTS.index(0.5)])

    def model_inputs(self, inputs: MaskedTimeseries, future_exogenous: Tensor | None) -> dict[str, Tensor]:
        """`Toto2Model.forecast`'s dict: NaN becomes unobserved, covariates become `known_dynamic` rows.

        Unobserved values are forward-filled (0 before the first observation), as the official GluonTS wrapper
        does: the model ignores them, except in the context's last patch, which it always reads as observed.
        """
        device = self.device
        observed = inputs.padding_mask.to(device).bool() & inputs.series.to(device).isfinite()
        values = forward_fill(inputs.series.to(device).float(), observed)
        series_ids = inputs.id_mask.to(device)[..., -1].long()
        targets = values.shape[-2] - inputs.num_exogenous_variables
        model_inputs = {
            "target": values[:, :targets],
            "target_mask": observed[:, :targets],
            "series_ids": series_ids[:, :targets],
        }
        if inputs.num_exogenous_variables:
            future = future_exogenous.to(device).float()
            known = torch.cat([values[:, targets:], future], dim=-1)
            known_mask = torch.cat([observed[:, targets:], future.isfinite()], dim=-1)
            model_inputs |= {
                "known_dynamic": forward_fill(known, known_mask),
                "known_dynamic_mask": known_mask,
                "known_dynamic_series_ids": series_ids[:, targets:],
            }
        return model_inputs


def default_context_length(folder: Path) -> int:
    """The history every entry point feeds a checkpoint's model unless told otherwise, from its
    `training_summary.json`: `default_context_length` when the folder names one (the context its validation scores
    were best at, which `tools/ship_embedded_model.py --contexts` chooses), else `context_length` (the longest
    context it was trained with: positions beyond it were never seen), else 2048."""
    summary = read_training_summary(folder)
    return int(summary.get("default_context_length", summary.get("context_length", DEFAULT_CONTEXT_LENGTH)))


def forward_fill(values: Tensor, observed: Tensor) -> Tensor:
    """(..., time): each unobserved value replaced by the last observed one before it, 0 before the first."""
    steps = torch.arange(values.shape[-1], device=values.device).expand_as(values)
    last = torch.where(observed, steps, -1).cummax(dim=-1).values
    filled = values.gather(-1, last.clamp_min(0))
    return torch.where(last >= 0, filled, 0.0)


def interpolate_quantiles(knots: Tensor, levels: Sequence[float]) -> Tensor:
    """(9, ...) knot quantiles -> (len(levels), ...): linear between knots, the edge knot outside [0.1, 0.9]."""
    outside = [q for q in levels if not QUANTILE_KNOTS[0] <= q <= QUANTILE_KNOTS[-1]]
    if outside:
        warnings.warn(
            f"quantile levels {outside} lie outside the model's knots {QUANTILE_KNOTS[0]}..{QUANTILE_KNOTS[-1]}; "
            "they get the nearest edge knot", stacklevel=3,
        )
    grid = torch.tensor(QUANTILE_KNOTS, dtype=torch.float64)
    wanted = torch.tensor(levels, dtype=torch.float64).clamp(grid[0], grid[-1])
    upper = torch.searchsorted(grid, wanted).clamp(1, len(grid) - 1)
    lower = upper - 1
    weight = ((wanted - grid[lower]) / (grid[upper] - grid[lower])).to(knots.dtype).to(knots.device)
    shape = (-1,) + (1,) * (knots.dim() - 1)
    return knots[lower] + (knots[upper] - knots[lower]) * weight.view(shape)
