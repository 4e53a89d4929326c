"""Toto 1.0's fine-tuning LightningModule (`toto.model.lightning_module.TotoForFinetuning`), as a thin layer over
this package's training module, `train.module.TotoModule` (the objective, optimiser and schedule live there)."""

from __future__ import annotations

from typing import Any

from train.module import TotoModule

from .backbone import TotoBackbone
from .config import TotoConfig


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
