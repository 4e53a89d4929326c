"""The LightningDataModule: mixes sources, holds back the end of every series for validation, serves windows.

Training batches come from a `ResumableDataLoader`: epoch e visits the windows in a permutation seeded by
(seed, e), and the loader's position (epoch, windows handed out) is part of every checkpoint, so a run killed
mid-epoch and resumed with `--ckpt_path last` continues with the next batch, as the uninterrupted run would,
instead of replaying the epoch from its start. Under DDP the permutation is dealt to the processes in turn
(`EpochOrder`), so N processes with batch B train on the windows of one process with batch N x B, and the
position, counted over all processes, resumes under any number of them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sized
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from toto.validation import InputError
from train.sources import SeriesRecord, SeriesSource
from train.windows import WindowDataset, collate_windows


class EpochOrder(DistributedSampler):
    """This process's share of epoch `epoch`: a permutation seeded by (seed, epoch), from position `start`, dealt
    to the `num_replicas` processes in turn (window j of the order goes to rank j % num_replicas).

    So the windows of a step's global batch (all ranks' batches together) do not depend on the number of
    processes: 2 processes with batch B train on the windows that 1 process with batch 2B does, and `start`
    counts windows over all processes, so a checkpoint resumes at the same window under any number of them.
    An epoch's last windows that cannot be dealt evenly (fewer than `num_replicas`) are left out, so that every
    rank takes the same number of steps. Being a `DistributedSampler`, Lightning keeps it instead of wrapping it.
    """

    def __init__(self, data: Dataset, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(data, num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)
        self.size = len(cast(Sized, data))  # a map-style dataset: it has a length (DistributedSampler reads it too)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)[self.start :]
        dealt = len(order) - len(order) % self.num_replicas
        return iter(order[self.rank : dealt : self.num_replicas].tolist())

    def __len__(self) -> int:
        return (self.size - self.start) // self.num_replicas


class ResumableDataLoader(DataLoader):
    """A shuffling DataLoader whose position survives a checkpoint.

    It counts the windows that all processes together have trained on; `state_dict`/`load_state_dict` (Lightning
    saves them with every checkpoint and restores them before the loop starts) carry (epoch, windows), and the
    next iteration skips the windows already trained on, without loading them, under any number of processes.
    """

    batch_size: int  # DataLoader's is optional; this loader always batches (`__init__` requires it)

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0,
                 **kwargs: Any) -> None:
        self.order = EpochOrder(dataset, seed, num_replicas, rank)
        super().__init__(dataset, batch_size=batch_size, sampler=self.order, **kwargs)
        self.epoch = 0
        self.windows_done = 0

    def __len__(self) -> int:
        # a whole epoch of this rank's batches, whatever was skipped
        return -(-(self.order.size // self.order.num_replicas) // self.batch_size)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # a generator, not DataLoader's iterator class
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        # A generator: the position is read when the first batch is asked for, after Lightning restored it.
        self.order.epoch, self.order.start = self.epoch, self.windows_done
        for batch in super().__iter__():
            self.windows_done += self.batch_size * self.order.num_replicas
            yield batch
        self.epoch, self.windows_done = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "windows_done": self.windows_done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.epoch, self.windows_done = int(state_dict["epoch"]), int(state_dict["windows_done"])


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
            shift_exogenous: read exogenous variates one patch early (Toto 1.0's layout, see
                `toto.inference.covariates`)
                instead of aligned with the targets (Toto 2.0's). Linked from the model by the CLI.
        """
        super().__init__()
        if context_length % patch_size:
            raise InputError(f"context_length ({context_length}) must be a multiple of patch_size ({patch_size})")
        self.sources = sources
        self.context_length = context_length
        self.patch_size = patch_size
        self.horizon_length = horizon_length or patch_size
        if self.horizon_length % patch_size:
            raise InputError(f"horizon_length ({self.horizon_length}) must be a multiple of patch_size ({patch_size})")
        self.shift_exogenous = shift_exogenous
        self.val_length = val_length or max(2 * patch_size, self.horizon_length)
        if not 0 < self.val_length <= context_length:
            raise InputError(f"val_length ({self.val_length}) must be in [1, context_length={context_length}]")
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
        """Every source's usable series; data that leaves nothing to train on is an `InputError` naming the source."""
        loaded = []
        for source in self.sources:
            records = source.load()
            if observed := [r for r in records if np.isfinite(r.target).any()]:
                if len(observed) < len(records):
                    empty_names = [r.name for r in records if not np.isfinite(r.target).any()]
                    rank_zero_info(f"{source}: skipped {len(records) - len(observed)} series without"
                                   f" any observed value, e.g. {empty_names[0]}")
            else:
                raise InputError(f"{source}: no series holds an observed value (all missing): there is"
                                 " nothing to learn from; check the data's path and columns")
            usable = [r for r in observed if r.length >= self.min_length]
            if len(usable) < len(observed):
                rank_zero_info(f"{source}: skipped {len(observed) - len(usable)} of {len(observed)} "
                               f"series shorter than {self.min_length} steps (val_length + horizon + 1 patch)")
            if not usable:
                raise InputError(f"{source} has no series of at least {self.min_length} steps; "
                                 f"lower data.val_length or data.context_length, or add longer series")
            loaded.append(usable)
        exogenous = {r.num_exogenous for records in loaded for r in records}
        if len(exogenous) > 1:
            raise InputError(f"all series must have the same number of exogenous variates, found {sorted(exogenous)}")
        return loaded

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        loaded = self._load()
        everything = [r for records in loaded for r in records]
        picks = np.unique(np.linspace(0, len(everything) - 1, min(len(everything), self.max_val_series)).astype(int))
        windows = functools.partial(
            WindowDataset, context_length=self.context_length, patch_size=self.patch_size, val_length=self.val_length,
            horizon_length=self.horizon_length, shift_exogenous=self.shift_exogenous,
        )
        self.train_dataset = windows(
            loaded, [s.weight for s in self.sources], train=True, num_windows=self.train_windows_per_epoch,
            max_variates=self.max_variates, seed=self.seed,
        )
        self.val_dataset = windows([[everything[i] for i in picks]], [1.0], train=False)
        rank_zero_info(f"data: {len(everything)} series from {len(self.sources)} sources, "
                       f"{len(self.val_dataset)} validation windows, {self.num_exogenous_variables} exogenous variates")

    @property
    def num_exogenous_variables(self) -> int:
        assert self.train_dataset is not None, "call setup() first"
        return self.train_dataset.records[0].num_exogenous


    def train_dataloader(self) -> DataLoader:
        """Batches of `batch_size` windows per process (the global batch is batch_size x processes)."""
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        assert self.train_dataset is not None, "call setup() first"
        return ResumableDataLoader(
            self.train_dataset, self.batch_size, self.seed, world, rank, num_workers=self.num_workers,
            collate_fn=collate_windows, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_dataset is not None, "call setup() first"
        return DataLoader(
            self.val_dataset, batch_size=self.val_batch_size, num_workers=self.num_workers,
            collate_fn=collate_windows, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )
