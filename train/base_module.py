"""What every training objective shares: AdamW with the warmup-stable-decay schedule, loss logging, and skipping
steps whose loss or gradients are not finite.

A step whose loss or gradients are not finite is skipped: its gradients are dropped before the optimizer step,
so AdamW leaves the weights and its moments untouched, and the skip is counted in `nonfinite_steps` (logged, and
kept in checkpoints). All ranks take the same decision, so distributed runs stay in lockstep.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

from toto import checkpoint_io
from toto.validation import InputError
from train.schedule import wsd_scheduler
from train.windows import WindowBatch

if TYPE_CHECKING:
    from torch.distributed.fsdp import FullyShardedDataParallel


def resolve_pretrained(name: str, offline_choice: str | None = None) -> Path:
    """The folder of `model.pretrained` (a folder, an embedded model's name or a Hub id), fetched once.

    A checkpoint that cannot be had is an `InputError` that says, in one line, what failed and what to pass
    instead: `--model.pretrained DIR` (a folder downloaded elsewhere), or `offline_choice` (an embedded model of
    the family). The Hub's own error spans several lines and advises `from_pretrained('DIR')`, the Python call.
    """
    try:
        return checkpoint_io.resolve(name)
    except OSError as error:
        hub_error = error.__cause__  # `resolve` chains what the Hub raised; other errors name the path themselves
        if hub_error is None:
            raise InputError(f"--model.pretrained: {error}") from error
        reason = f"{type(hub_error).__name__}: {str(hub_error).strip().splitlines()[0]}"
        instead = "" if offline_choice is None else f", or an embedded model: --model.pretrained {offline_choice}"
        raise InputError(
            f"--model.pretrained {name!r}: could not get it from the Hugging Face Hub ({reason}). Without Hub "
            f"access, pass a checkpoint folder: --model.pretrained DIR (`hf download {name} --local-dir DIR` where "
            f"the Hub is reachable, then copy DIR here){instead}"
        ) from error


def model_weights(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of the module's `model` (what `from_pretrained` loads) in a Lightning checkpoint."""
    prefix = "model."
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def global_batch_mean(weighted_sum: torch.Tensor, total_weight: torch.Tensor) -> torch.Tensor:
    """This process's share of the global batch's weighted mean: `weighted_sum` over the average `total_weight` of
    the processes (its own, in one process).

    Data-parallel training averages the processes' gradients, and `sync_dist` logging their losses. Dividing
    each process's sum by its own weight would make that a mean of per-process means, which overweights the
    elements of a process whose windows hold more missing or padded values; dividing by the average weight makes
    it the weighted mean over all processes' elements, so N processes with batch B train as one with batch N x B.
    Every process must call it at the same step (as training and validation steps are), since it all-reduces.
    """
    total_weight = total_weight.detach().to(weighted_sum.dtype, copy=True)  # all_reduce works in place
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total_weight)
        total_weight = total_weight / torch.distributed.get_world_size()
    return weighted_sum / total_weight.clamp_min(torch.finfo(weighted_sum.dtype).tiny)


class ForecastModule(L.LightningModule, abc.ABC):
    """Base of the objectives' LightningModules (`train.module.TotoModule`, `train.module_v2.Toto2Module`).

    A subclass defines `batch_loss(batch)` and calls `save_hyperparameters()` with the optimizer arguments lr,
    min_lr, betas, eps, weight_decay, warmup_steps, stable_steps and decay_steps among its `__init__` arguments.
    Only parameters that require gradients are optimised (LoRA freezes the base weights).
    """

    def __init__(self) -> None:
        super().__init__()
        self.nonfinite_steps = 0
        self._step_finite = True

    @abc.abstractmethod
    def batch_loss(self, batch: WindowBatch) -> torch.Tensor:
        """The objective's loss of one batch (the subclass's model and loss)."""

    def training_step(self, batch: WindowBatch, batch_idx: int) -> torch.Tensor:
        loss = self.batch_loss(batch)
        self._step_finite = bool(torch.isfinite(loss))
        # Averaged over processes: the loss of the global batch, which the averaged gradients descend.
        self.log("train_loss", loss, prog_bar=True, sync_dist=True, batch_size=batch.series.shape[0])
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

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip as `trainer.gradient_clip_val` says; under FSDP by the sharded root module's own `clip_grad_norm_`,
        which computes the norm over all shards (Lightning's FSDP refuses to clip by norm: it would need that
        module, Lightning-AI/pytorch-lightning#19235), so the configs' `gradient_clip_val` works with fsdp.yaml."""
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm") and isinstance(
                self.trainer.strategy, FSDPStrategy):
            # FSDPStrategy wraps the root module in FullyShardedDataParallel (`FSDPStrategy._setup_model`)
            cast("FullyShardedDataParallel", self.trainer.model).clip_grad_norm_(gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        h = self.hparams
        optimizer = torch.optim.AdamW(
            [p for p in self.parameters() if p.requires_grad], lr=h["lr"], betas=tuple(h["betas"]), eps=h["eps"],
            weight_decay=h["weight_decay"],
        )
        scheduler = wsd_scheduler(optimizer, h["lr"], h["min_lr"], h["warmup_steps"], h["stable_steps"],
                                  h["decay_steps"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nonfinite_steps"] = self.nonfinite_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_steps = checkpoint.get("nonfinite_steps", 0)
