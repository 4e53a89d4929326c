"""`toto-train`: LightningCLI for Toto.

    toto-train fit --config configs/finetune.yaml [--data.batch_size 32 ...] [--ckpt_path last]
    toto-train fit --config configs/finetune-v2.yaml [--model.lora.r 8]       (Toto 2.0, see train.module_v2)
    toto-train fit --config configs/pretrain-base.yaml --config configs/strategy/ddp.yaml
    toto-train validate --config ... ; toto-train fit --config ... --print_config
    toto-train export runs/finetune [--which best|last] [--output_dir DIR]   (a run folder or a .ckpt file)

Everything lives under `trainer.default_root_dir` (the run folder): checkpoints/ (with last.ckpt, so
`--ckpt_path last` resumes a killed run), loss_curve.csv/.png, the logger's metrics, and export/, the
`Toto.from_pretrained` (or `Toto2Model.from_pretrained`) folder written at the end of `fit`.

`model` is a LightningModule chosen by `class_path`: `train.module.TotoModule` (Toto 1.0, the default, so configs
may give its arguments alone) or `train.module_v2.Toto2Module` (Toto 2.0). The model decides the data windows:
its patch size, horizon and exogenous layout are passed to the data module.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal, cast

import lightning as L
from jsonargparse import auto_cli
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero

from toto.validation import InputError
from train.callbacks import ExportPretrained, RandomState, StepProgressBar, TrainingHistory
from train.datamodule import TotoDataModule
from train.export import export_checkpoint
from train.module import TotoModule


class TotoCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.monitor": "val_loss", "checkpoint.mode": "min",
                             "checkpoint.save_top_k": 1, "checkpoint.filename": "step={step}-val_loss={val_loss:.4f}",
                             "checkpoint.auto_insert_metric_name": False})
        parser.link_arguments("trainer.default_root_dir", "checkpoint.dirpath",
                              compute_fn=lambda root: os.path.join(root, "checkpoints"))
        parser.add_lightning_class_args(TrainingHistory, "history")
        parser.add_lightning_class_args(RandomState, "random_state")
        parser.add_lightning_class_args(ExportPretrained, "export")
        parser.set_defaults({"model": {"class_path": f"{TotoModule.__module__}.{TotoModule.__qualname__}"}})
        for window_setting in ("patch_size", "horizon_length", "shift_exogenous"):
            parser.link_arguments(f"model.{window_setting}", f"data.{window_setting}", apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        """Lightning's trainer, with `StepProgressBar` as its progress bar unless the config turns the bar off or
        gives its own."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        callbacks = config.trainer.callbacks or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        if config.trainer.enable_progress_bar is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, StepProgressBar()]
        return super().instantiate_trainer(**kwargs)


class HideLightningTips(logging.Filter):
    """Drops Lightning's advertisements ("💡 Tip: ... try installing litlogger", "... litmodels"): it logs them on
    every run, through the logger of its progress messages, and offers no setting to turn them off."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip:")


HIDE_LIGHTNING_TIPS = HideLightningTips()


def run_cli(args: list[str] | None = None) -> TotoCLI:
    """Run a LightningCLI subcommand (fit, validate, ...) and return the CLI object (its trainer, model, data)."""
    # The logger `rank_zero_info` writes to (Lightning names it after the module); adding the filter twice is a no-op.
    logging.getLogger(rank_zero.__name__).addFilter(HIDE_LIGHTNING_TIPS)
    return TotoCLI(
        L.LightningModule,
        TotoDataModule,
        subclass_mode_model=True,
        args=args,
        save_config_kwargs={"overwrite": True},  # rerunning (or resuming) in the same run folder
    )


def export(checkpoint: str, output_dir: str | None = None, which: str = "best") -> None:
    """Export a checkpoint as a `from_pretrained` folder (Toto 1.0, or Toto 2.0 with LoRA adapters merged).

    Args:
        checkpoint: a .ckpt file, or a run folder (its best or last checkpoint is used).
        output_dir: where to write config.json + model.safetensors (default: <run folder>/export).
        which: "best" (lowest val_loss) or "last", for a run folder.
    """
    if which not in ("best", "last"):
        raise InputError(f"--which must be 'best' or 'last', not {which!r}")
    if output_dir is None:
        run = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(os.path.dirname(os.path.abspath(checkpoint)))
        output_dir = os.path.join(run, "export")
    choice = cast(Literal["best", "last"], which)  # checked above (a str for the command line's parser)
    print(f"exported to {export_checkpoint(checkpoint, output_dir, choice)}")


def main(args: list[str] | None = None) -> None:
    """The console script; `args` default to the command line.

    A user's mistake (an `InputError`: data that cannot be trained on, a checkpoint that cannot be had, a setting
    out of range) is printed as one line, with exit status 2, instead of Lightning's and jsonargparse's tracebacks.
    """
    command = sys.argv[1:] if args is None else args
    try:
        if command[:1] == ["export"]:
            auto_cli(export, args=command[1:])
        else:
            run_cli(args)
    except Exception as error:
        mistake = input_error(error)
        if mistake is None:
            raise
        sys.stderr.write(f"{' '.join(['toto-train', *command[:1]])}: error: {mistake}\n")
        raise SystemExit(2) from None


def input_error(error: BaseException) -> InputError | None:
    """The `InputError` behind `error`, if any. jsonargparse wraps what a class's `__init__` raises while it
    instantiates the config (the model loading its checkpoint, the data module checking its settings) in a
    ValueError of its own, caused by the original."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, InputError):
        cause = cause.__cause__
    return cause


if __name__ == "__main__":
    main()
