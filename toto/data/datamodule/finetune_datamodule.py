"""Toto 1.0's import path of its fine-tuning data module, `FinetuneDataModule` (and the `RowsSource` it reads).

The classes are thin layers over the training stack (`train.dropin`), loaded from there on first use so that
importing `toto` never imports `train/` (which needs the 'train' extra).
"""

from __future__ import annotations

from typing import Any

_LOADED_FROM_TRAIN = ("FinetuneDataModule", "RowsSource")


def __getattr__(name: str) -> Any:
    if name in _LOADED_FROM_TRAIN:
        from train import dropin

        return getattr(dropin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
