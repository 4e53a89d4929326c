"""Toto 1.0's fine-tuning classes (`toto.model.lightning_module.TotoForFinetuning`,
`toto.data.datamodule.finetune_datamodule.FinetuneDataModule`) as thin layers over this package's training module and
data module: the objective, optimiser, schedule and windows live in `train.module` and `train.datamodule`.

Their official import paths in `toto/` load them from here on first use, so that importing `toto` never imports the
training stack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np

from toto.model.backbone import TotoBackbone
from toto.model.config import TotoConfig
from train.datamodule import TotoDataModule
from train.module import TotoModule
from train.sources import SeriesRecord, SeriesSource, as_variates_first


class TotoForFinetuning(TotoModule):
    """Fine-tune a given backbone (`pretrained_backbone`) or one built from Toto 1.0's config arguments."""

    def __init__(
        self,
        val_prediction_len: int = 96,
        stable_steps: int = 1000,
        decay_steps: int = 1000,
        warmup_steps: int = 200,
        lr: float = 1e-4,
        min_lr: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.01,
        pretrained_backbone: TotoBackbone | None = None,
        add_exogenous_features: bool = False,
        **model_kwargs: Any,
    ) -> None:
        config = pretrained_backbone.config if pretrained_backbone is not None else TotoConfig.from_dict(model_kwargs)
        super().__init__(model_config=config.to_dict(), lr=lr, min_lr=min_lr, betas=betas, weight_decay=weight_decay,
                         warmup_steps=warmup_steps, stable_steps=stable_steps, decay_steps=decay_steps)
        self.hparams.pop("pretrained_backbone", None)  # the weights are in the state dict already
        if pretrained_backbone is not None:
            self.model.model, self.model.config = pretrained_backbone, pretrained_backbone.config
        if add_exogenous_features and self.model.model.fusion is None:
            self.model.model.enable_variate_labels()  # fresh label embeddings, as Toto 1.0 fine-tuning adds
        self.val_prediction_len = val_prediction_len


Transform = Callable[[np.ndarray], np.ndarray]


class RowsSource(SeriesSource):
    """Series from the rows of an in-memory dataset: targets, and covariates when given, one array per field."""

    def __init__(self, rows: Any, target_fields: Sequence[str], target_transform_fns: Sequence[Transform],
                 ev_fields: Sequence[str] = (), ev_transform_fns: Sequence[Transform] = ()) -> None:
        super().__init__()
        if len(target_transform_fns) != len(target_fields) or len(ev_transform_fns) != len(ev_fields):
            raise ValueError("give one transform per target field and one per exogenous field")
        self.rows, self.target_fields, self.ev_fields = rows, list(target_fields), list(ev_fields)
        self.target_transform_fns, self.ev_transform_fns = list(target_transform_fns), list(ev_transform_fns)

    def load(self) -> list[SeriesRecord]:
        records = []
        for i in range(len(self.rows)):
            row = self.rows[i]
            target = np.concatenate([as_variates_first(fn(np.asarray(row[f])), f"row {i} field {f!r}")
                                     for f, fn in zip(self.target_fields, self.target_transform_fns)])
            exogenous = None
            if self.ev_fields:
                exogenous = np.concatenate([as_variates_first(fn(np.asarray(row[f])), f"row {i} field {f!r}")
                                            for f, fn in zip(self.ev_fields, self.ev_transform_fns)])
            records.append(SeriesRecord(str(row.get("id", i)), target, exogenous))
        return records


class FinetuneDataModule(TotoDataModule):
    """Toto 1.0's constructor. `max_context_length` steps per window (a multiple of `patch_size`),
    `prediction_horizon` steps held back for validation, `num_train_samples` training windows per series per epoch,
    at most `max_rows` series; exogenous fields are used when `add_exogenous_features`."""

    def __init__(
        self,
        dataset: Any,
        max_context_length: int,
        patch_size: int,
        train_batch_size: int = 4,
        val_batch_size: int = 1,
        test_windows: int | None = None,
        num_workers: int = 0,
        num_train_samples: int = 1,
        add_exogenous_features: bool = False,
        target_fields: Sequence[str] = ("target",),
        target_transform_fns: Sequence[Transform] = (np.asarray,),
        ev_fields: Sequence[str] = (),
        ev_transform_fns: Sequence[Transform] = (),
        prediction_horizon: int = 64,
        max_rows: int = 100,
    ) -> None:
        rows = dataset.select(range(min(max_rows, len(dataset)))) if hasattr(dataset, "select") else dataset[:max_rows]
        ev_fields, ev_transform_fns = (ev_fields, ev_transform_fns) if add_exogenous_features else ((), ())
        source = RowsSource(rows, target_fields, target_transform_fns, ev_fields, ev_transform_fns)
        context = max_context_length - max_context_length % patch_size
        super().__init__([source], context_length=context, patch_size=patch_size,
                         val_length=min(prediction_horizon, context), batch_size=train_batch_size,
                         val_batch_size=val_batch_size, train_windows_per_epoch=num_train_samples * len(rows),
                         num_workers=num_workers)
        # Toto 1.0's tutorial reads the transformed series back through `_view.hf_dataset` ("target", "timestamp",
        # "feat_dynamic_real" per row).
        self._view = SimpleNamespace(hf_dataset=_transformed_view(rows, source))


def _transformed_view(rows: Any, source: RowsSource) -> dict[str, list]:
    records = source.load()
    view: dict[str, list] = {"target": [r.target[0] for r in records]}
    view["timestamp"] = [np.asarray(rows[i]["timestamp"]) if "timestamp" in rows[i] else np.arange(r.length)
                         for i, r in enumerate(records)]
    if source.ev_fields:
        view["feat_dynamic_real"] = [r.exogenous for r in records]
    return view
