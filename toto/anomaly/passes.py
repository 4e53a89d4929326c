"""Which causal forward passes score every value of a series, and which output predicts each value.

In both families the model's output at patch i is the distribution of patch i + 1 given patches up to i (the
training loss's computation), so one forward pass over a window gives a prediction for every value of the window
after its first patch, with no sampling and no decoding loop. Two things shape the passes:

- Steps ahead. The first value of a patch is predicted one step ahead, its last `patch_size` steps ahead, and the
  distribution blurs with the distance. Passes over the same window shifted by `steps_ahead`, 2 `steps_ahead`, ...
  (`offsets`) put every value within `steps_ahead` steps of the end of a patch in one of them: each value is scored
  in the pass where it is nearest (`steps_ahead=1`: every value one step past its context, `patch_size` passes).
- Long histories. A pass reads at most `window` steps (the model's context). Windows overlap by `min_context`
  steps, and each value is scored in the first window where at least `min_context` steps precede it (the first
  window scores its first steps with what it has), so every score sees a stated amount of context.

A pass over window [start, end) with offset o is left-padded with `(start - o) % patch_size` unobserved steps, so
that its patches begin at the times t with (t - o) % patch_size == 0, and right-padded to whole patches (the model
is causal: padding after a value never changes its prediction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pass:
    """One forward pass: the window [start, end) of the series, left-padded with `left_pad` unobserved steps and
    right-padded to `length` steps (a multiple of the patch size)."""

    start: int
    end: int
    left_pad: int
    length: int


@dataclass(frozen=True)
class PassPlan:
    """The passes over a series of `series_length` steps, and for every step t the pass whose output predicts it
    (`pass_of[t]`, -1 when no pass does: the series' first patch) and that output's position in the padded pass
    (`position_of[t]`: the same offset within the previous patch)."""

    passes: list[Pass]
    pass_of: np.ndarray  # (series_length,) int
    position_of: np.ndarray  # (series_length,) int
    steps_ahead_of: np.ndarray  # (series_length,) int: how far ahead of its context each value is scored

    @property
    def length(self) -> int:
        """The padded length of the passes (every pass is padded to the longest, so that they form one batch)."""
        return max(p.length for p in self.passes)


@dataclass(frozen=True)
class Windows:
    """How passes cover a series: windows of `window` steps starting every `window - min_context` steps, passes
    offset by multiples of `steps_ahead`; every length a multiple of the patch size, so that each window starts on a
    patch boundary and a stream (`toto.inference.next_value`) can follow the same passes one step at a time."""

    patch_size: int
    window: int
    min_context: int
    steps_ahead: int

    def __post_init__(self) -> None:
        if not 1 <= self.steps_ahead <= self.patch_size:
            raise ValueError(f"steps_ahead must be between 1 and the patch size {self.patch_size}, got "
                             f"{self.steps_ahead}")
        if self.window % self.patch_size or self.min_context % self.patch_size:
            raise ValueError(f"window ({self.window}) and min_context ({self.min_context}) must be multiples of the "
                             f"patch size {self.patch_size}")
        if not 0 <= self.min_context <= self.window - 2 * self.patch_size:
            raise ValueError(f"min_context ({self.min_context}) must leave room in the window ({self.window}) for "
                             "patches to score")

    @property
    def stride(self) -> int:
        return self.window - self.min_context

    @property
    def offsets(self) -> range:
        return range(0, self.patch_size, self.steps_ahead)

    def window_of(self, t: np.ndarray) -> np.ndarray:
        """The window that scores step t: the first one where at least `min_context` steps precede it."""
        return np.where(t < self.window, 0, (t - self.window) // self.stride + 1)

    def offset_of(self, t: np.ndarray) -> np.ndarray:
        """The offset of the pass that scores step t: the one whose patches start at most `steps_ahead` before it."""
        return (t % self.patch_size) // self.steps_ahead * self.steps_ahead


def plan_passes(series_length: int, windows: Windows) -> PassPlan:
    """The passes that score a series of `series_length` steps (see `Windows`)."""
    patch_size, window, stride = windows.patch_size, windows.window, windows.stride
    t = np.arange(series_length)
    window_of, offset_of = windows.window_of(t), windows.offset_of(t)
    keys = sorted(set(zip(window_of.tolist(), offset_of.tolist(), strict=True)))
    index_of_key = {key: i for i, key in enumerate(keys)}
    passes = []
    for k, offset in keys:
        start = k * stride
        end = min(start + window, series_length)
        left_pad = (start - offset) % patch_size
        passes.append(Pass(start, end, left_pad, -(-(left_pad + end - start) // patch_size) * patch_size))
    pass_of = np.array([index_of_key[key] for key in zip(window_of.tolist(), offset_of.tolist(), strict=True)],
                       dtype=np.int64)
    starts = np.array([p.start for p in passes])[pass_of]
    pads = np.array([p.left_pad for p in passes])[pass_of]
    position_of = t - starts + pads - patch_size  # the previous patch, same offset within it
    steps_ahead_of = (t - offset_of) % patch_size + 1
    pass_of = np.where(position_of >= 0, pass_of, -1)
    return PassPlan(passes, pass_of, np.maximum(position_of, 0), steps_ahead_of)


def gather_windows(values: np.ndarray, plan: PassPlan) -> np.ndarray:
    """(..., time) -> (passes, ..., plan.length): each pass's window of `values`, NaN where padded."""
    out = np.full((len(plan.passes), *values.shape[:-1], plan.length), np.nan, dtype=values.dtype)
    for i, p in enumerate(plan.passes):
        out[i, ..., p.left_pad : p.left_pad + p.end - p.start] = values[..., p.start : p.end]
    return out
