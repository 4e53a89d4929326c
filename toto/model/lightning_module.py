"""Toto 1.0's import path of its fine-tuning LightningModule, `TotoForFinetuning`.

The class is a thin layer over the training stack (`train.dropin`), loaded from there on first use so that importing
`toto` never imports `train/` (which needs the 'train' extra).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "TotoForFinetuning":
        from train.dropin import TotoForFinetuning

        return TotoForFinetuning
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
