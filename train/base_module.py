"""What every training objective shares: AdamW with the warmup-stable-decay schedule, loss logging, and skipping
steps whose loss or gradients are not finite.

A step whose loss or gradients are not finite is skipped: its gradients are dropped before the optimizer step,
so AdamW leaves the weights and its moments untouched, and the skip is counted in `nonfinite_steps` (logged, and
kept in checkpoints). All ranks take the same decision, so distributed runs stay in lockstep.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from train.schedule import wsd_scheduler
from train.windows import WindowBatch


class ForecastModule(L.LightningModule):
    """Base of the objectives' LightningModules (`train.module.TotoModule`, `train.module_v2.Toto2Module`).

    A subclass defines `batch_loss(batch)` and calls `save_hyperparameters()` with the optimizer arguments lr,
    min_lr, betas, eps, weight_decay, warmup_steps, stable_steps and decay_steps among its `__init__` arguments.
    Only parameters that require gradients are optimised (LoRA freezes the base weights).
    """

    def __init__(self) -> None:
        super().__init__()
        self.nonfinite_steps = 0
        self._step_finite = True

    def batch_loss(self, batch: WindowBatch) -> torch.Tensor:
        raise NotImplementedError

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
            [p for p in self.parameters() if p.requires_grad], lr=h.lr, betas=tuple(h.betas), eps=h.eps,
            weight_decay=h.weight_decay,
        )
        scheduler = wsd_scheduler(optimizer, h.lr, h.min_lr, h.warmup_steps, h.stable_steps, h.decay_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nonfinite_steps"] = self.nonfinite_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_steps = checkpoint.get("nonfinite_steps", 0)
