"""Callbacks the CLI always adds: training history (progress lines, loss curve CSV + PNG), the random generators'
state (so that a resumed run draws what the uninterrupted one would), export at the end, and a progress bar in
steps (unless the config turns the bar off)."""

from __future__ import annotations

import csv
import random
import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info

from train.export import export_checkpoint, export_state


class TrainingHistory(Callback):
    """Prints a progress line every `every_n_steps` steps and keeps the loss curve in `<run>/loss_curve.csv` and
    `<run>/loss_curve.png` (written at each validation and at the end). The history is saved in checkpoints, so a
    resumed run's curve continues the killed one's."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps
        self.rows: list[dict[str, float]] = []
        self._clock: tuple[float, int] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock = (time.perf_counter(), trainer.global_step)
        rank_zero_info(f"training from step {trainer.global_step} to {trainer.max_steps}")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        metrics = trainer.callback_metrics
        if "train_loss" not in metrics:
            return
        step = trainer.global_step
        self.rows.append({"step": step, "train_loss": float(metrics["train_loss"]),
                          "lr": float(metrics.get("lr", float("nan"))), "val_loss": float("nan")})
        if step % self.every_n_steps == 0 and self._clock is not None:
            start, first = self._clock
            rate = (step - first) / max(time.perf_counter() - start, 1e-9)
            eta = (trainer.max_steps - step) / rate if trainer.max_steps > 0 and rate > 0 else float("nan")
            rank_zero_info(f"step {step}/{trainer.max_steps} | train_loss {self.rows[-1]['train_loss']:.4f} | "
                           f"lr {self.rows[-1]['lr']:.2e} | {rate * batch.series.shape[0]:.1f} windows/s | "
                           f"eta {eta / 60:.1f} min")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        val_loss = float(trainer.callback_metrics["val_loss"])
        self.rows.append({"step": trainer.global_step, "train_loss": float("nan"), "lr": float("nan"),
                          "val_loss": val_loss})
        rank_zero_info(f"step {trainer.global_step} | val_loss {val_loss:.4f}")
        self.write(Path(trainer.default_root_dir), trainer.is_global_zero)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write(Path(trainer.default_root_dir), trainer.is_global_zero)

    def write(self, folder: Path, is_global_zero: bool = True) -> None:
        if not is_global_zero or not self.rows:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "loss_curve.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["step", "train_loss", "val_loss", "lr"])
            writer.writeheader()
            writer.writerows(self.rows)
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key in ("train_loss", "val_loss"):
            points = [(r["step"], r[key]) for r in self.rows if r[key] == r[key]]  # drop NaN
            if points:
                ax.plot(*zip(*points), label=key, marker="o" if key == "val_loss" else None, alpha=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("Toto training loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(folder / "loss_curve.png", dpi=100)
        plt.close(fig)


class RandomState(Callback):
    """Keeps the torch (CPU and CUDA), numpy and Python random generators' states in every checkpoint and restores
    them on resume, so that dropout and any other draw continue exactly as in the uninterrupted run (together with
    the data loader's position, see `train.datamodule.ResumableDataLoader`). Plain lists and byte tensors only, so
    checkpoints still load with `torch.load(weights_only=True)`."""

    def state_dict(self) -> dict[str, Any]:
        state = np.random.get_state(legacy=True)
        assert isinstance(state, tuple)  # the global generator is a MT19937, whose legacy state is a tuple
        kind, keys, position, has_gauss, gauss = state
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, keys.tolist(), position, has_gauss, gauss],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        kind, keys, position, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))


class ExportPretrained(Callback):
    """At the end of `fit`, write the best (or last) checkpoint's model as a `from_pretrained` folder (Toto 2.0
    LoRA adapters merged), by default `<run>/export`. Rank 0 only."""

    def __init__(self, enabled: bool = True, dirpath: str | None = None, which: Literal["best", "last"] = "best"):
        self.enabled = enabled
        self.dirpath = dirpath
        self.which = which

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or not trainer.is_global_zero:
            return
        target = Path(self.dirpath or Path(trainer.default_root_dir) / "export")
        callback = trainer.checkpoint_callback
        source = None
        if isinstance(callback, ModelCheckpoint):
            source = callback.best_model_path if self.which == "best" else callback.last_model_path
            source = source or callback.last_model_path
        if source:
            export_checkpoint(source, target)
        else:  # no checkpoint was written: export the weights in memory, as a checkpoint would hold them
            state = {"state_dict": pl_module.state_dict()}
            pl_module.on_save_checkpoint(state)
            export_state(state, target, source="the final weights")
        rank_zero_info(f"exported {source or 'final weights'} to {target} (load it with from_pretrained)")


class StepProgressBar(TQDMProgressBar):
    """Training progress in optimizer steps out of `trainer.max_steps`: "step: 40%|####  | 400/1000 [...]".

    Lightning's default bar counts the batches of an epoch under the title "Epoch e/(max_epochs - 1)", which reads
    "Epoch 0/-2" for a run bounded by max_steps (max_epochs is then -1), as every shipped config is. Without
    max_steps, this is Lightning's TQDM bar: the epoch and its batches.
    """

    @property
    def train_description(self) -> str:
        return "step"

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.max_steps <= 0:
            super().on_train_epoch_start(trainer, *args)
            return
        bar = self.train_progress_bar  # one bar for the whole run (this bar does not `leave` one per epoch)
        if bar.total != trainer.max_steps:  # the run's first epoch; later ones continue the count
            bar.reset(total=trainer.max_steps)
            bar.update(trainer.global_step)  # a resumed run starts at its checkpoint's step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.max_steps <= 0:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar = self.train_progress_bar
        bar.update(trainer.global_step - bar.n)  # steps, not batches (they differ with gradient accumulation)
        bar.set_postfix(self.get_metrics(trainer, pl_module))
