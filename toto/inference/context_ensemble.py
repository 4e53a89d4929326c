"""Forecasting from several context lengths at once: the sample paths are shared out among windows of the context.

A model forecasts some series best from a short window (a smooth daily cycle whose level drifts: the last 128
hourly steps) and others from a long one (a weekly cycle, a yearly one). Pooling the paths drawn from several
windows of the same context gives a mixture of those forecasts, which scores better than any one window on the
embedded model's validation set (docs/embedded-model.md). The windows run one after the other, each on its share
of the paths: every path is decoded once, but each window is its own encoding and decoding loop, which a lone series
feels most (50 ms against 42 for toto-tiny on one 512-step series, docs/embedded-model.md).

The rule, for contexts c_1 < ... < c_K and N paths:
- window k is the last c_k steps, capped at the context given (windows that the cap makes equal are merged);
- paths are dealt out in contiguous blocks, in order of the windows: N // K each, the first N % K windows one more.
  Path p keeps its index, so it draws from stream p of its series' seed whichever window it falls in: seeded
  forecasts stay reproducible and independent of the batch;
- a window never hides every observation of a variate: a series whose variate was last observed before its window
  starts gets its window reaching back to that observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ContextWindow:
    """One window of an ensemble, over a batch of series."""

    start: int
    """The first time step of the context that the window's tensor keeps."""
    observed: Tensor | None
    """(batch, 1, steps from `start`) bool: the steps each series reads (False before its own window); None when
    every series reads every step from `start` (no ensemble: the forecast's inputs pass through untouched)."""
    paths: range | None
    """The sample paths drawn from this window (None for a mean-only forecast)."""
    weight: float
    """The window's share of the ensemble: what its mean weighs in a mean-only forecast."""


def ensemble_windows(padding_mask: Tensor, contexts: Sequence[int] | None, num_samples: int | None
                     ) -> list[ContextWindow]:
    """The windows of `contexts` over a batch whose observed steps are `padding_mask` (batch, variates, time).

    `contexts=None` (or a single length at least the context's) is one window over everything.
    """
    if not contexts:
        return [ContextWindow(0, None, None if num_samples is None else range(num_samples), 1.0)]
    batch, _, steps = padding_mask.shape
    if any(int(c) < 1 for c in contexts):
        raise ValueError(f"context_ensemble lengths must be positive, got {list(contexts)}")
    members = sorted(min(int(c), steps) for c in contexts)
    shares = [num_samples // len(members) + (k < num_samples % len(members)) for k in range(len(members))] \
        if num_samples is not None else [0] * len(members)
    index = torch.arange(steps, device=padding_mask.device)
    stalest = torch.where(padding_mask, index, -1).amax(dim=-1).amin(dim=-1)  # (batch,) its stalest variate's last

    windows: list[ContextWindow] = []
    first_path = 0
    for length in sorted(set(members)):  # members the cap made equal are one window, with their paths together
        count = members.count(length)
        share = sum(share for member, share in zip(members, shares) if member == length)
        paths = None if num_samples is None else range(first_path, first_path + share)
        first_path += share
        if paths is not None and not paths:
            continue  # fewer paths than windows
        row_start = torch.clamp(stalest, max=steps - length)  # (batch,) where each series' window begins
        start = int(row_start.min())
        observed = (index[start:] >= row_start[:, None])[:, None, :]
        windows.append(ContextWindow(start, observed, paths, count / len(members)))
    return windows
