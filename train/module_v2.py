"""The LightningModule for Toto 2.0: fine-tuning a `Toto2Model` with the pinball loss over its nine quantile knots,
fully or with LoRA adapters (`train.lora`).

The objective is how `Toto2Model.forecast` uses the model. Every window is context + horizon; the horizon's target
values are hidden (`cpm_mask` False: placeholders, as in a forecast), so the outputs at the last context patch and
at the placeholders before the last one predict the horizon patches, mapped with the statistics of the last
observed patch (the causal scaler carries them over hidden positions). Over the context, the output at patch i
is scored against patch i + 1 (teacher forcing), scaled with patch i's statistics, which the causal scaler
computes without patch i + 1. Both are scored in the model's space: asinh((y - loc) / scale) against the knots,
on observed target values only, once the scaler has a scale (`MIN_OBSERVATIONS_TO_SCORE`).

Exogenous variates (known-future covariates) are extra rows after the targets, as `forecast`'s "known_dynamic":
visible over the whole window, the horizon included, aligned with the targets, and never scored.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from einops import rearrange, reduce, repeat

from toto.v2 import QUANTILE_KNOTS, Toto2Config, Toto2Model
from train.base_module import ForecastModule, global_batch_mean, model_weights, resolve_pretrained
from train.lora import TOTO2_TARGET_MODULES, LoraSettings, add_adapters, load_merged
from train.losses import pinball_loss
from train.windows import WindowBatch

# The scaler needs two observations for a standard deviation; before that its scale is the 1e-6 floor, and a
# target scaled by it says nothing about forecasting (asinh of a huge number), so it is not scored.
MIN_OBSERVATIONS_TO_SCORE = 2


class Predictions(NamedTuple):
    """`Toto2Module.predict_batch`: for every next-patch target of a batch (time = window - one patch)."""

    knots: torch.Tensor  # (9, batch, variates, time) in the scaled asinh space, unsorted
    loc: torch.Tensor  # (batch, variates, time) the statistics that map the knots back to values
    scale: torch.Tensor
    target: torch.Tensor  # (batch, variates, time) the values to predict
    scored: torch.Tensor  # (batch, variates, time) bool: observed targets (loss mask) with a scale to score them
    in_horizon: torch.Tensor  # (time,) bool: the hidden horizon; the rest is teacher-forced context


def build_toto2(pretrained: str | None, model_config: dict[str, Any] | None) -> Toto2Model:
    """A pretrained model (folder or Hub id; `model_config` overrides config.json keys) or a fresh one."""
    if pretrained is None:
        if not model_config:
            raise ValueError("set model.pretrained (a Toto 2.0 folder or Hub id, e.g. Datadog/Toto-2.0-22m) or give "
                             "every Toto 2.0 config field in model.model_config to train from scratch")
        return Toto2Model(Toto2Config.from_dict(dict(model_config), source="model.model_config"))
    return Toto2Model.from_pretrained(resolve_pretrained(pretrained), **(model_config or {})).train()


def model_from_checkpoint(checkpoint: dict[str, Any]) -> Toto2Model:
    """The plain `Toto2Model` of a Lightning checkpoint written by `Toto2Module`, adapters merged."""
    model = Toto2Model(Toto2Config.from_dict(checkpoint["toto2_config"], source="checkpoint toto2_config"))
    return load_merged(model, model_weights(checkpoint), checkpoint.get("toto2_lora"), TOTO2_TARGET_MODULES).eval()


class Toto2Module(ForecastModule):
    # Covariates are read aligned with the targets, as `Toto2Model.forecast` reads "known_dynamic".
    shift_exogenous = False

    def __init__(
        self,
        pretrained: str | None = None,
        model_config: dict[str, Any] | None = None,
        lora: LoraSettings | None = None,
        horizon_length: int = 128,
        context_loss_weight: float = 1.0,
        # The optimizer defaults are TotoModule's: the CLI starts from TotoModule (its default model) and keeps
        # the arguments of the same name when a config switches class_path, so different defaults would be lost.
        lr: float = 1e-4,
        min_lr: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        stable_steps: int = 1000,
        decay_steps: int = 1000,
    ) -> None:
        """
        Args:
            pretrained: the Toto 2.0 checkpoint to start from: a `save_pretrained` folder or a Hub id such as
                "Datadog/Toto-2.0-22m"; None trains from scratch on `model_config`.
            model_config: config.json keys (see `toto.v2.Toto2Config`): overrides of the checkpoint's, or every
                field when training from scratch.
            lora: LoRA adapters (`--model.lora.r 8`); None (null) fine-tunes every weight.
            horizon_length: steps hidden at the end of every window and forecast from the context, as
                `forecast(inputs, horizon)` does; a multiple of the patch size. The data windows follow it.
            context_loss_weight: weight of the teacher-forced next-patch targets over the context relative to
                the horizon's targets (0 scores the horizon only).
            lr, min_lr, warmup_steps, stable_steps, decay_steps: the warmup-stable-decay schedule.
            betas, eps, weight_decay: AdamW.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["lora"])  # checkpoints keep plain values; the settings go in toto2_lora
        self.lora = lora
        self.model = build_toto2(pretrained, model_config)
        if horizon_length < 1 or horizon_length % self.patch_size:
            raise ValueError(f"model.horizon_length ({horizon_length}) must be a positive multiple of the "
                             f"model's patch_size ({self.patch_size})")
        if context_loss_weight < 0:
            raise ValueError(f"model.context_loss_weight must be >= 0, got {context_loss_weight}")
        self.horizon_length = horizon_length
        self.context_loss_weight = context_loss_weight
        if lora is not None:
            add_adapters(self.model, lora, TOTO2_TARGET_MODULES)

    @property
    def patch_size(self) -> int:
        return self.model.config.patch_size

    def predict_batch(self, batch: WindowBatch) -> Predictions:
        """The knots of every next-patch target of the batch, with what scores them (see the module docstring)."""
        p, horizon = self.patch_size, self.horizon_length
        series, observed = batch.series, batch.padding_mask
        num_targets = series.shape[1] - batch.num_exogenous_variables
        cpm_mask = torch.ones_like(observed)
        cpm_mask[:, :num_targets, -horizon:] = False  # placeholders, as in a forecast; covariates stay visible
        out = self.model(series, observed, cpm_mask, batch.id_mask[..., 0])
        # The output at patch i (all but the last) predicts patch i + 1, with patch i's loc and scale.
        knots = rearrange(out.quantiles[..., :-1, :p], "q b v n p -> q b v (n p)")
        seen = reduce((observed & cpm_mask).int(), "b v (n p) -> b v n", "sum", p=p).cumsum(-1)
        seen = repeat(seen[..., :-1], "b v n -> b v (n p)", p=p)
        in_horizon = torch.arange(knots.shape[-1], device=knots.device) >= knots.shape[-1] - horizon
        return Predictions(knots, out.loc[..., :-p], out.scale[..., :-p], series[..., p:],
                           batch.loss_mask & (seen >= MIN_OBSERVATIONS_TO_SCORE), in_horizon)

    def batch_loss(self, batch: WindowBatch) -> torch.Tensor:
        """Weighted mean pinball loss, in the scaled asinh space, over the scored targets of the batch."""
        pred = self.predict_batch(batch)
        scaled_target = torch.where(pred.scored, (pred.target - pred.loc) / pred.scale, 0.0).asinh()
        elementwise = pinball_loss(pred.knots, scaled_target, QUANTILE_KNOTS)
        weight = torch.where(pred.in_horizon, 1.0, self.context_loss_weight) * pred.scored
        return global_batch_mean((elementwise * weight).sum(), weight.sum())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # Lets `train.export` rebuild (and merge) the model from the checkpoint alone.
        checkpoint["toto2_config"] = self.model.config.to_dict()
        checkpoint["toto2_lora"] = None if self.lora is None else self.lora.to_dict()
