"""The LightningModule: `Toto` trained on next-patch targets with the Toto objective.

Every hyperparameter is an `__init__` argument, so the YAML config (through LightningCLI) sets all of them.
A step whose loss or gradients are not finite is skipped: its gradients are dropped before the optimizer step,
so AdamW leaves the weights and its moments untouched, and the skip is counted in `nonfinite_steps` (logged, and
kept in checkpoints). All ranks take the same decision, so distributed runs stay in lockstep.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from toto.model import checkpoint as toto_checkpoint
from toto.model.config import TotoConfig
from toto.model.toto import Toto
from train.losses import TotoLoss
from train.schedule import wsd_scheduler
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
    had_labels = toto_checkpoint.read_config(toto_checkpoint.resolve(pretrained)).get("use_variate_labels", False)
    model = Toto.from_pretrained(pretrained, strict=had_labels or not use_variate_labels, **overrides)
    return model.train()


class TotoModule(L.LightningModule):
    def __init__(
        self,
        pretrained: str | None = None,
        model_config: dict[str, Any] | None = None,
        use_variate_labels: bool = False,
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
            nll_weight: lambda, the weight of the mixture NLL; the robust loss gets 1 - lambda.
            robust_delta: scale of the robust loss on the mixture mean.
            robust_alpha: shape of the robust loss (0 = Cauchy, 2 = L2).
            lr, min_lr, warmup_steps, stable_steps, decay_steps: the warmup-stable-decay schedule.
            betas, eps, weight_decay: AdamW.
        """
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(pretrained, model_config, use_variate_labels)
        self.loss = TotoLoss(nll_weight, robust_delta, robust_alpha)
        self.nonfinite_steps = 0
        self._step_finite = True

    @property
    def patch_size(self) -> int:
        return self.model.config.patch_size

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
        return torch.where(mask, elementwise, 0.0).sum() / mask.sum().clamp_min(1)

    def training_step(self, batch: WindowBatch, batch_idx: int) -> torch.Tensor:
        loss = self.batch_loss(batch)
        self._step_finite = bool(torch.isfinite(loss))
        self.log("train_loss", loss, prog_bar=True, batch_size=batch.series.shape[0])
        return loss

    def validation_step(self, batch: WindowBatch, batch_idx: int) -> None:
        self.log("val_loss", self.batch_loss(batch), prog_bar=True, sync_dist=True, batch_size=batch.series.shape[0])

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        finite = self._step_finite and bool(torch.stack([g.isfinite().all() for g in grads]).all())
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            optimizer.zero_grad(set_to_none=True)  # AdamW skips parameters without gradients
            self.nonfinite_steps += 1
            rank_zero_warn(f"non-finite loss or gradients at step {self.global_step}: step skipped "
                           f"({self.nonfinite_steps} so far)")
        self.log("nonfinite_steps", float(self.nonfinite_steps))
        self.log("lr", optimizer.param_groups[0]["lr"])

    def configure_optimizers(self) -> dict[str, Any]:
        h = self.hparams
        optimizer = torch.optim.AdamW(
            self.parameters(), lr=h.lr, betas=tuple(h.betas), eps=h.eps, weight_decay=h.weight_decay
        )
        scheduler = wsd_scheduler(optimizer, h.lr, h.min_lr, h.warmup_steps, h.stable_steps, h.decay_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["toto_config"] = self.model.config.to_dict()  # lets `train.export` rebuild the model alone
        checkpoint["nonfinite_steps"] = self.nonfinite_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_steps = checkpoint.get("nonfinite_steps", 0)
