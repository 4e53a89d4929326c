"""Seeded random streams: one per series, and one per (series, sample path), drawn for all rows at once.

`row_seeds(seed, n)` gives the n series of a batch independent seeds. Every entry point (the pandas API, the
GluonTS predictor, the service, batch forecasting) gives the i-th series of its input `row_seeds(seed, ...)[i]`,
so the same series, seed and position get the same numbers everywhere.

`PathStreams` is counter-based, in the manner of Philox in JAX or cuRAND: the n-th number of stream (s, p) is a
keyed hash of n, with a key derived from the series' seed and the path index. A decoding step draws the next
numbers of thousands of streams as one tensor operation, with no generator object per stream and no Python loop
over rows (a merged service pass decodes 32 series x 100 paths = 3,200 streams); and a stream's numbers do not
depend on how many are drawn at a time, nor on which other series or paths are decoded beside it.

The hash is Chris Wellons' `lowbias32` 32-bit integer mixer (a bijection of 32-bit integers with very low bias),
applied in two keyed rounds, `mix(mix(n ^ k0) ^ k1)`. Two keyed rounds keep streams apart: a single round over
`n + k` would repeat another stream's numbers, shifted, whenever two keys are closer than the numbers drawn.
The arithmetic runs on int64 tensors with every product kept below 2^63, so it is exact on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_GOLDEN32 = 0x9E3779B9  # 2^32 / golden ratio: spreads consecutive path indices before mixing


def row_seeds(seed: int, count: int, first: int = 0) -> list[int]:
    """Independent per-series seeds derived from one seed: those of series first, ..., first + count - 1.

    `forecast(seed=seed)` gives batch row i the seed `row_seeds(seed, batch)[i]`; the pandas API, the GluonTS
    predictor and the service give the i-th series of a panel, dataset or request the same one, so all of them
    return the same numbers for the same series, seed and position.
    """
    return [int(np.random.SeedSequence(seed, spawn_key=(i,)).generate_state(1)[0]) for i in range(first, first + count)]


def _multiply32(x: Tensor, constant: int) -> Tensor:
    """x * constant mod 2^32 for x in [0, 2^32), with the constant split in 16-bit halves so no product overflows."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def mix32(x: Tensor) -> Tensor:
    """lowbias32: a bijection of [0, 2^32) whose output bits each depend on every input bit."""
    x = x ^ (x >> 16)
    x = _multiply32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _multiply32(x, 0x846CA68B)
    return x ^ (x >> 16)


class PathStreams:
    """One random stream per (series, path) of a chunk of paths, rows ordered (path, series) like the paths."""

    def __init__(self, series_seeds: Sequence[int], first_path: int, paths: int, device: torch.device | str = "cpu"
                 ) -> None:
        seeds = torch.tensor([int(s) & _MASK32 for s in series_seeds], dtype=torch.int64, device=device)
        path = torch.arange(first_path, first_path + paths, dtype=torch.int64, device=device)
        spread_path = mix32((path * _GOLDEN32) & _MASK32)
        key0 = mix32(seeds[None, :] ^ spread_path[:, None]).flatten()  # (paths * series,), rows (path, series)
        self.keys = torch.stack([key0, mix32(key0 ^ _GOLDEN32)], dim=-1)  # (rows, 2)
        self.drawn = 0  # every stream has handed out this many numbers

    def uniforms(self, per_row: int) -> Tensor:
        """(rows, per_row) float32 uniforms in [0, 1): the next `per_row` numbers of every stream."""
        counter = torch.arange(self.drawn, self.drawn + per_row, dtype=torch.int64, device=self.keys.device)
        self.drawn += per_row
        bits = mix32(mix32(counter[None, :] ^ self.keys[:, :1]) ^ self.keys[:, 1:])
        return (bits >> 8).float() * 2.0**-24  # the top 24 bits: every float32 multiple of 2^-24 in [0, 1)
