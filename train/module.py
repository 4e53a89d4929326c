"""The LightningModule: `Toto` trained on next-patch targets with the Toto objective, fully or with LoRA adapters
(`train.lora`).

Every hyperparameter is an `__init__` argument, so the YAML config (through LightningCLI) sets all of them.
The optimizer, the schedule and the skipping of non-finite steps come from `train.base_module.ForecastModule`.
"""

from __future__ import annotations

from typing import Any

import torch

from toto import checkpoint_io
from toto.model.config import TotoConfig
from toto.model.toto import Toto
from toto.options import DEFAULT_MODEL
from toto.validation import InputError
from train.base_module import ForecastModule, global_batch_mean, model_weights, resolve_pretrained
from train.lora import TOTO1_TARGET_MODULES, LoraSettings, adapter_layers, add_adapters, load_merged
from train.losses import TotoLoss
from train.windows import WindowBatch


def build_model(pretrained: str | None, model_config: dict[str, Any] | None, use_variate_labels: bool) -> Toto:
    """A pretrained model (folder, Hub id or embedded name) or a fresh one; `model_config` overrides config.json keys.

    Enabling variate labels on a checkpoint that has none adds two freshly initialised label embeddings, as Toto 1.0
    fine-tuning does; every other weight must match.
    """
    overrides = dict(model_config or {})
    if use_variate_labels:
        overrides["use_variate_labels"] = True
    if pretrained is None:
        return Toto(TotoConfig(**overrides))
    folder = resolve_pretrained(pretrained, offline_choice=DEFAULT_MODEL)
    had_labels = checkpoint_io.read_config(folder).get("use_variate_labels", False)
    model = Toto.from_pretrained(folder, strict=had_labels or not use_variate_labels, **overrides)
    return model.train()


def model_from_checkpoint(checkpoint: dict[str, Any]) -> Toto:
    """The plain `Toto` of a Lightning checkpoint written by `TotoModule`, LoRA adapters merged."""
    model = Toto(TotoConfig.from_dict(checkpoint["toto_config"]))
    return load_merged(model, model_weights(checkpoint), checkpoint.get("toto_lora"), TOTO1_TARGET_MODULES).eval()


class TotoModule(ForecastModule):
    # Windows hold one patch after the context (the next-patch targets); exogenous variates are read one patch
    # early (`toto.inference.covariates`). The CLI passes both to the data module.
    shift_exogenous = True

    def __init__(
        self,
        pretrained: str | None = None,
        model_config: dict[str, Any] | None = None,
        use_variate_labels: bool = False,
        lora: LoraSettings | None = None,
        nll_weight: float = 0.575,
        robust_delta: float = 0.1,
        robust_alpha: float = 0.0,
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
            pretrained: start from this checkpoint: a `save_pretrained` folder, a Hub id such as
                "Datadog/Toto-Open-Base-1.0", or an embedded model name; None trains from scratch.
            model_config: config.json keys (see `TotoConfig`); from scratch they override the 151M base
                configuration, with `pretrained` they override its config.json (e.g. `dropout`).
            use_variate_labels: learn target/exogenous label embeddings (needed for exogenous variables).
            lora: LoRA adapters (`--model.lora.r 8`) on the pretrained weights, which stay frozen: only the
                adapters train (and the label embeddings, with `use_variate_labels`); None (null) fine-tunes every
                weight.
            nll_weight: lambda, the weight of the mixture NLL; the robust loss gets 1 - lambda.
            robust_delta: scale of the robust loss on the mixture mean.
            robust_alpha: shape of the robust loss (0 = Cauchy, 2 = L2).
            lr, min_lr, warmup_steps, stable_steps, decay_steps: the warmup-stable-decay schedule.
            betas, eps, weight_decay: AdamW.
        """
        super().__init__()
        self.save_hyperparameters(ignore=["lora"])  # checkpoints keep plain values; the settings go in toto_lora
        self.lora = lora
        self.model = build_model(pretrained, model_config, use_variate_labels)
        self.loss = TotoLoss(nll_weight, robust_delta, robust_alpha)
        if lora is not None:
            self._add_adapters(lora, pretrained)

    def _add_adapters(self, lora: LoraSettings, pretrained: str | None) -> None:
        """LoRA on the pretrained weights; the variate-label embeddings (often fresh ones) train with the adapters."""
        if pretrained is None:
            raise InputError("model.lora adapts pretrained weights, which stay frozen: set model.pretrained (a "
                             "folder, a Hub id or toto-tiny), or leave model.lora null to train from scratch")
        add_adapters(self.model, lora, TOTO1_TARGET_MODULES)
        if unused := [name for name in adapter_layers(self.model) if name.endswith("unembed")]:
            raise InputError(f"lora.target_modules: {unused[0]} cannot take an adapter: Toto 1.0's head reads its "
                             "weight directly (TotoBackbone.head), so the adapter would never train; leave it out")
        backbone = self.model.model
        for label in (backbone.target_variate_label, backbone.exogenous_variate_label):
            if label is not None:
                label.requires_grad_(True)

    @property
    def patch_size(self) -> int:
        return self.model.config.patch_size

    @property
    def horizon_length(self) -> int:
        return self.patch_size

    def batch_loss(self, batch: WindowBatch) -> torch.Tensor:
        """Mean loss over the batch's `loss_mask`: each step predicts the value one patch later, normalised by the
        causal scaler's statistics at that step."""
        patch = self.patch_size
        out = self.model.model(
            batch.series[..., :-patch],
            batch.padding_mask[..., :-patch],
            batch.id_mask[..., :-patch],
            num_exogenous_variables=batch.num_exogenous_variables,
        )
        mask = batch.loss_mask
        eps = torch.finfo(out.scale.dtype).eps
        normalised = torch.where(mask, (batch.series[..., patch:] - out.loc) / (out.scale + eps), 0.0)
        elementwise = self.loss(out.distribution, normalised)
        return global_batch_mean(torch.where(mask, elementwise, 0.0).sum(), mask.sum())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # Lets `train.export` rebuild (and merge) the model from the checkpoint alone.
        checkpoint["toto_config"] = self.model.config.to_dict()
        checkpoint["toto_lora"] = None if self.lora is None else self.lora.to_dict()
