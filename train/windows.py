"""Training windows: context + horizon, for next-patch training, and their batches.

A window is `context_length + horizon_length` steps; the model's output at each step predicts the value one patch
later, so the targets are the window shifted by one patch. Toto 1.0 reads the first `context_length` steps and the
horizon is one patch (the default); Toto 2.0 hides a longer horizon behind placeholders, as its forecasts do.
Validation windows end at the end of each series and score only its last `val_length` steps, which training
windows never reach (the held-back end). Missing values are NaN in the records and become 0 with `padding_mask`
False; windows that start before a series are left-padded the same way.

Exogenous variates (known-future covariates) come after the targets and never count in the loss. With
`shift_exogenous` (Toto 1.0 fine-tuning) they are shifted one patch earlier: at step t the model sees the
covariate of step t + patch_size, i.e. of the patch it is predicting (see `toto.inference.covariates`). Toto 2.0
reads them aligned with the targets, over the horizon too.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from toto.inference.covariates import shift_exogenous
from train.sources import SeriesRecord


class WindowBatch(NamedTuple):
    """A batch of windows. Variates are ordered [targets, padding variates, exogenous]."""

    series: torch.Tensor  # (batch, variates, context + horizon) float32, 0 where unobserved
    padding_mask: torch.Tensor  # (batch, variates, context + horizon) bool, True = observed
    id_mask: torch.Tensor  # (batch, variates, context + horizon) int; equal ids attend to each other
    # (batch, variates, context + horizon - patch) bool: which next-patch targets count in the loss
    loss_mask: torch.Tensor
    num_exogenous_variables: int


def cut_window(
    record: SeriesRecord, end: int, length: int, patch_size: int, variates: np.ndarray | None = None,
    shift: bool = True,
) -> tuple[np.ndarray, int]:
    """Values (variates, length) ending at `end` (exclusive), NaN-left-padded, exogenous rows last (shifted one
    patch earlier with `shift`), and the number of target variates (the rows before the exogenous ones)."""
    target = record.target if variates is None else record.target[variates]
    start = end - length
    rows = target[:, max(start, 0) : end]
    if record.exogenous is not None:
        exogenous = record.exogenous[:, max(start, 0) : end]
        rows = np.concatenate([rows, shift_exogenous(exogenous, patch_size) if shift else exogenous])
    window = np.full((rows.shape[0], length), np.nan, dtype=np.float32)
    window[:, length - rows.shape[1] :] = rows
    return window, target.shape[0]


class WindowDataset(Dataset):
    """Windows over a list of records.

    train: item i is a random window, a pure function of (seed, i): pick a source by weight, a series, a
           variate subset of at most `max_variates`, and an end point inside the series' training region.
    val:   item i is the window ending at the end of validation series i; only its last `val_length` targets count.
    """

    def __init__(
        self,
        sources: list[list[SeriesRecord]],
        weights: list[float],
        context_length: int,
        patch_size: int,
        val_length: int,
        train: bool,
        num_windows: int | None = None,
        max_variates: int | None = None,
        seed: int = 0,
        horizon_length: int | None = None,
        shift_exogenous: bool = True,
    ) -> None:
        self.sources = sources
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.context_length = context_length
        self.patch_size = patch_size
        self.val_length = val_length
        self.horizon_length = horizon_length or patch_size
        self.shift_exogenous = shift_exogenous
        self.train = train
        self.max_variates = max_variates
        self.seed = seed
        self.records = [r for records in sources for r in records]
        if train:
            assert num_windows is not None, "training windows are drawn at random: give num_windows (per epoch)"
            self.num_windows = num_windows
        else:
            self.num_windows = len(self.records)

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(values (variates, context + horizon) with NaN, loss mask (variates, context + horizon - patch), number
        of target variates)."""
        length = self.context_length + self.horizon_length
        if self.train:
            rng = np.random.default_rng([self.seed, index])
            records = self.sources[rng.choice(len(self.sources), p=self.weights)]
            record = records[rng.integers(len(records))]
            # The window must hold at least one input patch and the horizon, inside the training region.
            end = int(rng.integers(self.horizon_length + self.patch_size, record.length - self.val_length + 1))
            variates = None
            if self.max_variates is not None and record.target.shape[0] > self.max_variates:
                variates = np.sort(rng.choice(record.target.shape[0], self.max_variates, replace=False))
        else:
            record, end, variates = self.records[index], self.records[index].length, None
        values, num_targets = cut_window(record, end, length, self.patch_size, variates, self.shift_exogenous)
        loss_mask = ~np.isnan(values[:, self.patch_size :])
        loss_mask[num_targets:] = False  # exogenous variates are inputs only
        if not self.train:
            loss_mask[:, : loss_mask.shape[1] - self.val_length] = False  # score only the held-back end
        return values, loss_mask, num_targets


def collate_windows(items: list[tuple[np.ndarray, np.ndarray, int]]) -> WindowBatch:
    """Stack windows, padding each to the batch's largest number of target variates.

    Padding variates sit between targets and exogenous variates (the model treats the last variates as exogenous),
    are unobserved, and get their own ids so that no real variate attends to them.
    """
    num_exogenous = {values.shape[0] - num_targets for values, _, num_targets in items}
    if len(num_exogenous) != 1:
        raise ValueError(f"windows in one batch have different numbers of exogenous variates: {sorted(num_exogenous)}")
    k = num_exogenous.pop()
    width = max(num_targets for _, _, num_targets in items)
    batch, time = len(items), items[0][0].shape[-1]
    series = np.full((batch, width + k, time), np.nan, dtype=np.float32)
    loss_mask = np.zeros((batch, width + k, items[0][1].shape[-1]), dtype=bool)
    id_mask = np.zeros((batch, width + k, time), dtype=np.int64)
    for row, (values, mask, num_targets) in enumerate(items):
        series[row, :num_targets], loss_mask[row, :num_targets] = values[:num_targets], mask[:num_targets]
        series[row, width:], loss_mask[row, width:] = values[num_targets:], mask[num_targets:]
        id_mask[row, num_targets:width] = np.arange(1, width - num_targets + 1)[:, None]
    observed = ~np.isnan(series)
    return WindowBatch(
        series=torch.from_numpy(np.nan_to_num(series, nan=0.0)),
        padding_mask=torch.from_numpy(observed),
        id_mask=torch.from_numpy(id_mask),
        loss_mask=torch.from_numpy(loss_mask),
        num_exogenous_variables=k,
    )
