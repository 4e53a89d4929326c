"""Find copies of series by content: rescaled, shifted, log-transformed or resampled versions of the same numbers.

A copy of a reserved series can hide under another name, in other units (MW or GW, Celsius or Fahrenheit), on a
log scale, or resampled (the daily sum of half-hourly data, the monthly mean of daily prices). Every series is
turned into *fingerprints*, one per window of WINDOW + 1 consecutive values, of itself and of its variants:

- the values and, when all are positive, their logarithm;
- its calendar aggregates to every coarser one of hourly, daily, weekly, monthly, quarterly and yearly steps
  (mean, min, max and last value of each period), and their logarithms.

A window's fingerprint is a hash of its WINDOW step-to-step changes after removing their mean and dividing by
their standard deviation (so that a scale factor and an offset of the values do not change it), rounded to
GRID standard deviations; a second hash on a grid shifted by half a cell catches windows that sit on a rounding
boundary. Two series *match* when they share at least MIN_SHARED fingerprints: several runs of WINDOW consecutive
changes that agree within GRID standard deviations (for typical series tighter than 0.5% of the values). Copies
share hundreds to thousands; unrelated smooth series (hourly temperatures of two cities) share one or two by chance.
Windows with little information (repeated values, mostly flat stretches, a single spike) are not fingerprinted,
since any two of them look alike.

Both sides get the same variants, so a daily copy of a monthly reserved series is found from the copy's monthly
means, and a monthly copy of a daily one from the reserved series' own. Everything is vectorised with NumPy:
a million values fingerprint in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

WINDOW = 16  # consecutive changes that must agree (17 values)
GRID = 0.15  # rounding of the standardised changes, in standard deviations
MIN_SHARED = 3  # shared fingerprints that make a match (unrelated smooth series share one or two by chance)
MIN_DISTINCT = 12  # a window needs this many distinct values (of WINDOW + 1) and changes (of WINDOW)
SPIKE_SHARE = 0.5  # windows whose two largest changes hold this share of the variance are one spike
CALENDAR = ("h", "D", "W", "MS", "QS", "YS")  # coarser grids a series is aggregated to
# No sums: equal-length sums are means for these fingerprints, and sums over unequal periods (weeks with a holiday,
# months of 28-31 days) mostly share the calendar, which any two business-day or daily series have in common.
AGGREGATES = ("mean", "min", "max", "last")
_MULTIPLIERS = np.array([(0x9E3779B97F4A7C15 ^ (i * 0x632BE59BD9B4E019)) & (2**64 - 1) | 1 for i in range(WINDOW)],
                        dtype=np.uint64)  # odd 64-bit constants: a hash of the 16 rounded changes


def _window_hashes(values: np.ndarray) -> np.ndarray:
    """The fingerprints (uint64) of the informative windows of one 1-D sequence, on both rounding grids."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < WINDOW + 1:
        return np.empty(0, dtype=np.uint64)
    windows = np.lib.stride_tricks.sliding_window_view(values, WINDOW + 1)
    keep = np.isfinite(windows).all(axis=1)
    windows = windows[keep]
    if not len(windows):
        return np.empty(0, dtype=np.uint64)
    ordered = np.sort(windows, axis=1)
    distinct = 1 + (np.diff(ordered, axis=1) > 1e-9 * (np.abs(ordered[:, 1:]) + 1e-300)).sum(axis=1)
    changes = np.diff(windows, axis=1)
    spread = changes.std(axis=1)
    ordered_changes = np.sort(changes, axis=1)
    distinct_changes = 1 + (np.diff(ordered_changes, axis=1) > 1e-9 * (spread[:, None] + 1e-300)).sum(axis=1)
    informative = (distinct >= MIN_DISTINCT) & (distinct_changes >= MIN_DISTINCT) & (spread > 0)
    changes, spread = changes[informative], spread[informative]
    if not len(changes):
        return np.empty(0, dtype=np.uint64)
    standardised = (changes - changes.mean(axis=1, keepdims=True)) / spread[:, None]
    top_two = np.sort(standardised**2, axis=1)[:, -2:].sum(axis=1)  # a spike is one change up and one down
    standardised = standardised[top_two < SPIKE_SHARE * WINDOW]  # one outlier and little else: all look alike
    hashes = []
    for offset in (0.0, 0.5):
        cells = np.floor(standardised / GRID + offset).astype(np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            hashes.append(np.bitwise_xor.reduce(cells * _MULTIPLIERS, axis=1) * np.uint64(2) + np.uint64(offset > 0))
    return np.unique(np.concatenate(hashes))


def variants(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The sequences fingerprinted for a table, by name: each numeric column, its calendar aggregates, their logs.

    With a DatetimeIndex the columns are aggregated to every calendar grid coarser than the table's own step;
    other indexes only give the columns themselves.
    """
    numeric = frame.select_dtypes("number").astype(np.float64)
    tables = {"": numeric}
    if isinstance(numeric.index, pd.DatetimeIndex) and len(numeric) > 2:
        numeric = numeric[~numeric.index.isna()].sort_index()
        step = pd.Series(numeric.index).diff().median()
        for rule in CALENDAR:
            coarser = (pd.Timestamp("2001-01-01") + pd.tseries.frequencies.to_offset(rule)) - pd.Timestamp("2001-01-01")
            if pd.isna(step) or coarser <= step * 1.5:
                continue
            resampled = numeric.resample(rule)
            for how in AGGREGATES:
                aggregated = getattr(resampled, how)()
                if len(aggregated) > WINDOW:
                    tables[f"{rule} {how} of "] = aggregated
    sequences = {}
    for prefix, table in tables.items():
        for column in table.columns:
            values = table[column].to_numpy(dtype=np.float64)
            sequences[f"{prefix}{column}"] = values
            observed = values[np.isfinite(values)]
            if len(observed) and (observed > 0).all():
                sequences[f"log {prefix}{column}"] = np.log(values)
    return sequences


def fingerprints(frame: pd.DataFrame) -> np.ndarray:
    """All fingerprints of a table (see `variants`), sorted and unique."""
    parts = [_window_hashes(values) for values in variants(frame).values()]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)


@dataclass
class FingerprintIndex:
    """Fingerprints of named series, to ask which of them a new series copies."""

    names: list[str] = field(default_factory=list)
    _hashes: list[np.ndarray] = field(default_factory=list)
    _sorted: np.ndarray | None = None
    _owners: np.ndarray | None = None

    def add(self, name: str, frame: pd.DataFrame) -> None:
        self.names.append(name)
        self._hashes.append(fingerprints(frame))
        self._sorted = None

    def _build(self) -> None:
        if self._sorted is None:
            owners = np.concatenate([np.full(len(h), i) for i, h in enumerate(self._hashes)] or [np.empty(0, int)])
            hashes = np.concatenate(self._hashes or [np.empty(0, dtype=np.uint64)])
            order = np.argsort(hashes, kind="stable")
            self._sorted, self._owners = hashes[order], owners[order]

    def matches(self, frame: pd.DataFrame) -> dict[str, int]:
        """{name: shared fingerprints} of every indexed series that `frame` copies (at least MIN_SHARED shared)."""
        self._build()
        assert self._sorted is not None and self._owners is not None
        mine = fingerprints(frame)
        if not len(self._sorted) or not len(mine):
            return {}
        found = np.isin(self._sorted, mine)
        owners, counts = np.unique(self._owners[found], return_counts=True)
        return {self.names[o]: int(c) for o, c in zip(owners, counts) if c >= MIN_SHARED}
