"""Toto 1.0's fine-tuning helpers (`toto.scripts.finetune_toto`) over this package's Lightning stack (`train/`).

The config is Toto 1.0's YAML layout: `seed`, `pretrained_model`, `model` (lr, min_lr, warmup/stable/decay steps,
val_prediction_len), `data` (context, batch sizes, exogenous features, horizon), `trainer`, `checkpoint`, `logging`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from toto.data.datamodule.finetune_datamodule import FinetuneDataModule
from toto.model.lightning_module import TotoForFinetuning
from toto.model.toto import Toto

DEFAULT_MAX_ROWS = 100


def load_config(config_path: str) -> dict[str, Any]:
    with open(config_path) as f:
        return yaml.safe_load(f) or {}


def init_lightning(config: dict[str, Any]) -> tuple[TotoForFinetuning, int]:
    """The module around the pretrained backbone (`pretrained_model`: a folder, embedded name or Hub id) and its
    patch size."""
    L.seed_everything(int(config.get("seed", 42)), workers=True)
    backbone = Toto.from_pretrained(config.get("pretrained_model", "Datadog/Toto-Open-Base-1.0")).model
    model, data = config.get("model", {}), config.get("data", {})
    module = TotoForFinetuning(
        pretrained_backbone=backbone,
        val_prediction_len=int(model.get("val_prediction_len", 96)),
        stable_steps=int(model.get("stable_steps", 1000)),
        decay_steps=int(model.get("decay_steps", 1000)),
        warmup_steps=int(model.get("warmup_steps", 200)),
        lr=float(model.get("lr", 1e-4)),
        min_lr=float(model.get("min_lr", 1e-5)),
        add_exogenous_features=bool(data.get("add_exogenous_features", False)),
    )
    module.to(config.get("device", "cuda" if torch.cuda.is_available() else "cpu"))
    return module, backbone.patch_size


def get_datamodule(config: dict[str, Any], patch_size: int, custom_dataset: dict, setup: bool = False
                   ) -> FinetuneDataModule:
    """The data module of `custom_dataset` (as `benchmark_finetuning.prepare_dataset` returns it)."""
    data = config.get("data", {})
    context = int(data.get("max_context_length", int(data.get("context_factor", 8)) * patch_size))
    module = FinetuneDataModule(
        dataset=custom_dataset["dataset"],
        max_context_length=context,
        patch_size=patch_size,
        train_batch_size=int(data.get("train_batch_size", 4)),
        val_batch_size=int(data.get("val_batch_size", 1)),
        num_workers=int(data.get("num_workers", 0)),
        num_train_samples=int(data.get("num_train_samples", 1)),
        add_exogenous_features=bool(data.get("add_exogenous_features", False)),
        target_fields=custom_dataset["target_fields"],
        target_transform_fns=custom_dataset["target_transform_fns"],
        ev_fields=custom_dataset["ev_fields"],
        ev_transform_fns=custom_dataset["ev_transform_fns"],
        prediction_horizon=int(data.get("prediction_horizon") or 64),
        max_rows=int(data.get("max_rows", DEFAULT_MAX_ROWS)),
    )
    if setup:
        module.setup(None)
    return module


def train(module: TotoForFinetuning, datamodule: FinetuneDataModule, config: dict[str, Any]
          ) -> tuple[TotoForFinetuning, str | None, float | None]:
    """Fit; returns the module, the best checkpoint's path and its val_loss (None without `checkpoint.dirpath`)."""
    trainer_config, checkpoint, logging = (config.get(k, {}) for k in ("trainer", "checkpoint", "logging"))
    callbacks: list[Callback] = []
    saver = None
    if "dirpath" in checkpoint:
        saver = ModelCheckpoint(dirpath=str(checkpoint["dirpath"]), monitor=checkpoint.get("monitor", "val_loss"),
                                mode=checkpoint.get("mode", "min"), save_top_k=int(checkpoint.get("save_top_k", 1)),
                                filename=str(checkpoint.get("filename", "{epoch}-{step}-{val_loss:.4f}")))
        callbacks.append(saver)
    trainer = L.Trainer(
        max_steps=int(trainer_config.get("max_steps", 3000)),
        log_every_n_steps=int(trainer_config.get("log_every_n_steps", 1)),
        num_sanity_val_steps=int(trainer_config.get("num_sanity_val_steps", 0)),
        enable_progress_bar=bool(trainer_config.get("enable_progress_bar", True)),
        val_check_interval=trainer_config.get("val_check_interval"),
        check_val_every_n_epoch=trainer_config.get("check_val_every_n_epoch", 1),
        callbacks=callbacks, enable_model_summary=False,
        logger=CSVLogger(str(logging.get("save_dir", "lightning_logs")),
                         name=str(logging.get("name", "toto_finetuning"))),
    )
    trainer.fit(module, datamodule=datamodule)
    if saver is None:
        return module, None, None
    score = saver.best_model_score
    return module, saver.best_model_path or None, None if score is None else float(score)


def load_finetuned_toto(model_id: str, checkpoint_path: str | Path,
                        map_location: str | torch.device = "cpu") -> TotoForFinetuning:
    """The fine-tuned module from a Lightning checkpoint of `train`, on the architecture of `model_id`."""
    state = torch.load(checkpoint_path, map_location=map_location, weights_only=False)["state_dict"]
    backbone = Toto.from_pretrained(model_id, map_location=map_location).model
    module = TotoForFinetuning(pretrained_backbone=backbone,
                               add_exogenous_features=any("variate_label" in key for key in state))
    module.load_state_dict(state)
    return module.to(map_location).eval()
