"""The LightningDataModule: mixes sources, holds back the end of every series for validation, serves windows."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from train.sources import SeriesRecord, SeriesSource
from train.windows import WindowDataset, collate_windows


class TotoDataModule(L.LightningDataModule):
    def __init__(
        self,
        sources: list[SeriesSource],
        context_length: int = 512,
        patch_size: int = 64,
        val_length: int | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        train_windows_per_epoch: int = 10_000,
        max_val_series: int = 256,
        max_variates: int | None = 32,
        num_workers: int = 0,
        seed: int = 0,
        horizon_length: int | None = None,
        shift_exogenous: bool = True,
    ) -> None:
        """
        Args:
            sources: data sources (`train.sources`), mixed by their `weight`.
            context_length: steps the model reads per window; a multiple of the patch size.
            patch_size: the model's patch size (linked from the model by the CLI).
            val_length: steps held back at the end of every series and scored in validation (default: 2 patches,
                or the horizon if longer).
            batch_size, val_batch_size: windows per batch (validation defaults to `batch_size`).
            train_windows_per_epoch: random training windows per epoch; window i is a pure function of (seed, i),
                so every epoch revisits the same windows in a new order.
            max_val_series: validation windows (one per series, from series spread over all sources).
            max_variates: at most this many target variates per training window (a random subset).
            num_workers: DataLoader worker processes.
            seed: seed of the training windows.
            horizon_length: steps after the context in every window (default one patch: Toto 1.0's next-patch
                targets); a multiple of the patch size. Linked from the model by the CLI.
            shift_exogenous: read exogenous variates one patch early (Toto 1.0's layout, see `toto.inference.covariates`)
                instead of aligned with the targets (Toto 2.0's). Linked from the model by the CLI.
        """
        super().__init__()
        if context_length % patch_size:
            raise ValueError(f"context_length ({context_length}) must be a multiple of patch_size ({patch_size})")
        self.sources = sources
        self.context_length = context_length
        self.patch_size = patch_size
        self.horizon_length = horizon_length or patch_size
        if self.horizon_length % patch_size:
            raise ValueError(f"horizon_length ({self.horizon_length}) must be a multiple of patch_size ({patch_size})")
        self.shift_exogenous = shift_exogenous
        self.val_length = val_length or max(2 * patch_size, self.horizon_length)
        if not 0 < self.val_length <= context_length:
            raise ValueError(f"val_length ({self.val_length}) must be in [1, context_length={context_length}]")
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.train_windows_per_epoch = train_windows_per_epoch
        self.max_val_series = max_val_series
        self.max_variates = max_variates
        self.num_workers = num_workers
        self.seed = seed
        self.train_dataset: WindowDataset | None = None
        self.val_dataset: WindowDataset | None = None

    @property
    def min_length(self) -> int:
        """Shortest usable series: one input patch and the horizon before the held-back end."""
        return self.val_length + self.horizon_length + self.patch_size

    def _load(self) -> list[list[SeriesRecord]]:
        loaded = []
        for source in self.sources:
            records = source.load()
            usable = [r for r in records if r.length >= self.min_length]
            if len(usable) < len(records):
                rank_zero_info(f"{type(source).__name__}: skipped {len(records) - len(usable)} of {len(records)} "
                               f"series shorter than {self.min_length} steps (val_length + horizon + 1 patch)")
            if not usable:
                raise ValueError(f"{type(source).__name__} has no series of at least {self.min_length} steps; "
                                 f"lower data.val_length or data.context_length, or add longer series")
            loaded.append(usable)
        exogenous = {r.num_exogenous for records in loaded for r in records}
        if len(exogenous) > 1:
            raise ValueError(f"all series must have the same number of exogenous variates, found {sorted(exogenous)}")
        return loaded

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        loaded = self._load()
        everything = [r for records in loaded for r in records]
        picks = np.unique(np.linspace(0, len(everything) - 1, min(len(everything), self.max_val_series)).astype(int))
        common = {"context_length": self.context_length, "patch_size": self.patch_size, "val_length": self.val_length,
                  "horizon_length": self.horizon_length, "shift_exogenous": self.shift_exogenous}
        self.train_dataset = WindowDataset(
            loaded, [s.weight for s in self.sources], train=True, num_windows=self.train_windows_per_epoch,
            max_variates=self.max_variates, seed=self.seed, **common,
        )
        self.val_dataset = WindowDataset([[everything[i] for i in picks]], [1.0], train=False, **common)
        rank_zero_info(f"data: {len(everything)} series from {len(self.sources)} sources, "
                       f"{len(self.val_dataset)} validation windows, {self.num_exogenous_variables} exogenous variates")

    @property
    def num_exogenous_variables(self) -> int:
        assert self.train_dataset is not None, "call setup() first"
        return self.train_dataset.records[0].num_exogenous

    def _loader(self, dataset: WindowDataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=collate_windows, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, self.val_batch_size, shuffle=False)
