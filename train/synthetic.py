"""Synthetic series that look like observability metrics, for pretraining.

Each series is a group of 1..max_variates variates sharing a latent signal (trend + several seasonalities + level
shifts + random walk), each variate loading it with its own gain and adding its own noise (Gaussian, Laplace or
heavy-tailed Student-T), spikes and bursts. A group is then shaped into one metric kind: a gauge (as is), a
non-negative rate, or a monotone counter with resets. Magnitudes span many orders, and a few gaps are missing
(NaN). Series `i` depends only on (seed, i), so datasets are reproducible and can be built in any order.
"""

from __future__ import annotations

import numpy as np

# Periods (in steps) common in metrics: minutes in an hour, 5-min / 15-min / 30-min steps in a day, 30-min steps
# and hours in a week, hours in a day, days in a week, months and quarters in a year, weeks in a year; a random
# period is mixed in too.
COMMON_PERIODS = (60, 288, 96, 48, 336, 24, 168, 7, 12, 4, 52)
# Share of series whose seasonality dominates trend, level shifts and walks: daily and weekly cycles are what most
# observability (and most real) series repeat, and forecasting them well means learning to repeat them.
SEASONAL_DOMINANT_SHARE = 0.5


def _trend(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    kind = rng.choice(["none", "linear", "piecewise", "saturating"])
    if kind == "none":
        return np.zeros_like(t)
    if kind == "linear":
        return rng.normal(0, 1) * t / len(t)
    if kind == "piecewise":
        knots = np.sort(rng.choice(len(t), size=rng.integers(1, 4), replace=False))
        slopes = rng.normal(0, 1, size=len(knots) + 1) / len(t)
        return np.cumsum(slopes[np.searchsorted(knots, t)])
    return rng.normal(0, 1) * (1 - np.exp(-t / rng.uniform(0.05, 0.5) / len(t)))


def _seasonality(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    periods = list(rng.choice(COMMON_PERIODS, size=rng.integers(0, 3), replace=False))
    periods.append(rng.uniform(4, max(5, len(t) / 4)))
    signal = np.zeros_like(t)
    for period in periods:
        for harmonic in range(1, rng.integers(1, 4) + 1):
            phase = rng.uniform(0, 2 * np.pi)
            signal += rng.exponential(1.0) / harmonic * np.sin(2 * np.pi * harmonic * t / period + phase)
    if rng.random() < 0.3:  # "business hours" shape: flat off-peak, peaked on-peak
        signal = np.maximum(signal, np.quantile(signal, rng.uniform(0.2, 0.6)))
    return signal


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    family = rng.choice(["gaussian", "laplace", "student_t"])
    scale = rng.exponential(0.3)
    if family == "gaussian":
        return rng.normal(0, scale, size)
    if family == "laplace":
        return rng.laplace(0, scale, size)
    return scale * rng.standard_t(rng.uniform(1.5, 5.0), size)  # heavy tails


def _level_shifts(rng: np.random.Generator, size: int) -> np.ndarray:
    steps = np.zeros(size)
    count = rng.poisson(1.5)
    steps[rng.choice(size, size=count, replace=True)] = rng.normal(0, 1.5, size=count)
    return np.cumsum(steps)


def _random_walk(rng: np.random.Generator, size: int) -> np.ndarray:
    return np.cumsum(rng.normal(0, rng.exponential(0.05), size)) if rng.random() < 0.4 else np.zeros(size)


def _spikes(rng: np.random.Generator, size: int) -> np.ndarray:
    hits = rng.random(size) < rng.uniform(0, 0.01)
    return hits * rng.exponential(rng.uniform(2, 10), size) * rng.choice([-1, 1, 1, 1])


def _bursts(rng: np.random.Generator, size: int) -> np.ndarray:
    """On/off episodes (a two-state Markov chain) during which the metric is raised and noisier."""
    if rng.random() < 0.7:
        return np.zeros(size)
    p_on, p_off = rng.uniform(0.001, 0.02), rng.uniform(0.02, 0.2)
    state, on = False, np.zeros(size, dtype=bool)
    for i, u in enumerate(rng.random(size)):
        state = (u < p_on) if not state else (u >= p_off)
        on[i] = state
    return on * (rng.uniform(1, 5) + rng.exponential(1.0, size))


def _as_metric_kind(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    kind = rng.choice(["gauge", "gauge", "rate", "counter"])
    if kind == "gauge":
        return x
    rate = np.log1p(np.exp(x - x.mean(axis=-1, keepdims=True)))  # softplus: non-negative, keeps the shape
    if kind == "rate":
        return rate
    counter = np.cumsum(rate, axis=-1)
    for reset in rng.choice(x.shape[-1], size=rng.poisson(0.5), replace=True):  # process restarts
        counter[:, reset:] -= counter[:, reset : reset + 1]
    return counter


def _knock_out_gaps(rng: np.random.Generator, x: np.ndarray, fraction: float) -> np.ndarray:
    if fraction <= 0:
        return x
    size = x.shape[-1]
    for _ in range(rng.poisson(3)):
        length = max(1, int(rng.exponential(fraction * size / 3)))
        start = rng.integers(0, size)
        x[rng.integers(0, x.shape[0]), start : start + length] = np.nan
    return x


class SyntheticSeriesGenerator:
    """Deterministic generator: `series(i)` is the i-th series for this seed."""

    def __init__(self, length: int = 2048, max_variates: int = 4, missing_fraction: float = 0.02, seed: int = 0):
        self.length = length
        self.max_variates = max_variates
        self.missing_fraction = missing_fraction
        self.seed = seed

    def series(self, index: int) -> np.ndarray:
        """A (variates, length) float32 array; NaN marks missing values."""
        rng = np.random.default_rng([self.seed, index])
        t = np.arange(self.length, dtype=np.float64)
        num_variates = int(rng.integers(1, self.max_variates + 1))
        seasonal_gain = rng.uniform(2.0, 5.0) if rng.random() < SEASONAL_DOMINANT_SHARE else 1.0
        shared = (_trend(rng, t) + seasonal_gain * _seasonality(rng, t) + _level_shifts(rng, self.length)
                  + _random_walk(rng, self.length))
        variates = []
        for _ in range(num_variates):
            gain = rng.uniform(0.3, 1.5) * rng.choice([-1, 1, 1])
            own = 0.3 * _seasonality(rng, t) if rng.random() < 0.3 else 0.0
            variates.append(
                gain * shared + own + _noise(rng, self.length) + _spikes(rng, self.length) + _bursts(rng, self.length)
            )
        x = _as_metric_kind(rng, np.stack(variates))
        x = x * 10 ** rng.uniform(-2, 5) + rng.choice([0.0, rng.normal(0, 10 ** rng.uniform(0, 4))])
        return _knock_out_gaps(rng, x, self.missing_fraction).astype(np.float32)
