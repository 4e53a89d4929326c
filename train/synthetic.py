"""Synthetic series for pretraining: observability-style metrics, repeating profiles, KernelSynth GP draws and
TSMixup mixtures.

`SyntheticSeriesGenerator` (below) makes series that look like observability metrics, and
`RepeatingProfileGenerator` series that repeat one cycle almost exactly. `KernelSynthGenerator` and
`TSMixupGenerator` (at the end) follow Chronos (Ansari et al. 2024); the embedded model's data export
(tools/prepare_embedded_data.py) writes their series as tables.

Each series is a group of 1..max_variates variates sharing a latent signal (trend + several seasonalities + level
shifts + random walk), each variate loading it with its own gain and adding its own noise (Gaussian, Laplace or
heavy-tailed Student-T), spikes and bursts. A group is then shaped into one metric kind: a gauge (as is), a
non-negative rate, or a monotone counter with resets. Magnitudes span many orders, and a few gaps are missing
(NaN). Series `i` depends only on (seed, i), so datasets are reproducible and can be built in any order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

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


# ---------------------------------------------------------------------------------------------------------------
# Repeating profiles: climatologies, daily load curves, seasonal production. Their next cycle is almost their last
# one, so seasonal naive is nearly exact on them; noisy metrics rarely teach a model that (there the best forecast
# is a smoothed cycle), and a model that has not learnt to copy cycles loses to seasonal naive by far on such series.
PROFILE_PERIODS = (24, 48, 96, 144, 288, 168, 336, 7, 12, 52, 4, 60)


def _profile(rng: np.random.Generator, period: int) -> np.ndarray:
    """One cycle of `period` steps, standardised: a few harmonics, a plateau shape or a closed random walk."""
    phase = np.arange(period) / period
    kind = rng.choice(["harmonics", "harmonics", "plateaus", "walk"])
    if kind == "harmonics":
        harmonics = np.arange(1, int(rng.integers(1, max(2, min(8, period // 2)) + 1)) + 1)
        weights = rng.normal(0, 1, (2, len(harmonics))) / harmonics ** rng.uniform(0.5, 2.0)
        angles = 2 * np.pi * np.outer(phase, harmonics)
        cycle = np.cos(angles) @ weights[0] + np.sin(angles) @ weights[1]
    elif kind == "plateaus":  # business hours, shifts, opening times: levels joined by short ramps
        edges = np.sort(rng.uniform(0, 1, int(rng.integers(2, 6))))
        cycle = rng.normal(0, 1, len(edges) + 1)[np.searchsorted(edges, phase)]
        cycle = np.mean([np.roll(cycle, shift) for shift in range(max(1, period // 24))], axis=0)
    else:  # an irregular shape: a random walk closed into a loop
        walk = np.cumsum(rng.normal(0, 1, period))
        cycle = walk - phase * (walk[-1] - walk[0])
    spread = cycle.std()
    return (cycle - cycle.mean()) / (spread if spread > 0 else 1.0)


class RepeatingProfileGenerator:
    """Deterministic series that repeat a cycle almost exactly: `series(i)` is a (variates, length) float32 array.

    The cycle morphs slowly from one profile to another, rides on a slow level (trend plus a long wave), may carry a
    day-of-week effect when it is a daily cycle of sub-daily data, and gets little noise (0.1% to 30% of the
    cycle's spread). Variates of a group share the cycle with their own gain, offset and noise, like the stations
    of one weather network.
    """

    def __init__(self, length: int = 2176, max_variates: int = 3, seed: int = 0) -> None:
        self.length = length
        self.max_variates = max_variates
        self.seed = seed

    def series(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index, 3])
        t = np.arange(self.length, dtype=np.float64)
        period = int(rng.choice(PROFILE_PERIODS)) if rng.random() < 0.75 else int(rng.integers(3, 400))
        position = (t + rng.integers(0, period)).astype(np.int64)
        morph = np.linspace(0.0, rng.uniform(0.0, 1.0), self.length)
        start, end = _profile(rng, period)[position % period], _profile(rng, period)[position % period]
        cycle = (1 - morph) * start + morph * end
        if period in (24, 48, 96, 144, 288) and rng.random() < 0.3:  # weekdays and weekends differ
            cycle = cycle * (1 + rng.normal(0, 0.25, 7)[(position // period) % 7])
        wave = np.sin(2 * np.pi * t / rng.uniform(self.length / 2, 4 * self.length) + rng.uniform(0, 2 * np.pi))
        level = rng.normal(0, 1) * t / self.length + rng.exponential(1.0) * wave
        amplitude = 1 + rng.uniform(0, 0.3) * np.sin(2 * np.pi * t / rng.uniform(self.length / 2, 4 * self.length))
        shared = level + amplitude * cycle
        variates = []
        for _ in range(int(rng.integers(1, self.max_variates + 1))):
            noise = 10 ** rng.uniform(-3, -0.5) * rng.standard_normal(self.length)
            variates.append(rng.uniform(0.5, 1.5) * shared + rng.normal(0, 1) + noise)
        x = np.stack(variates) * 10 ** rng.uniform(-2, 4) + rng.normal(0, 10 ** rng.uniform(0, 3))
        return x.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# KernelSynth (Ansari et al. 2024, "Chronos", section 4.2): Gaussian-process series from random kernel compositions.
# A composition of 1..MAX_KERNELS kernels drawn from a bank, joined by random + or *, gives a covariance on a
# [0, 1] time grid; one draw from that GP prior is a series. The periods are in steps (hours in a day and a week,
# 5/10/15/30-minute steps in a day, days in a week and a year, months in a year, ...), so the periodic kernels
# put the daily and weekly cycles of sub-daily data inside a 2048-step training context.
KERNEL_PERIODS = (24, 48, 96, 144, 288, 168, 336, 672, 1008, 2016, 7, 14, 30, 60, 365, 730, 12, 4, 52, 26, 6, 3)
MAX_KERNELS = 5


Kernel = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # k(|x - x'|, x, x') on a [0, 1] grid


def _periodic(d: np.ndarray, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    return np.exp(-2.0 * np.sin(np.pi * d / period) ** 2)


def _linear(d: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: float) -> np.ndarray:
    return sigma**2 + x * y  # dot product: trends


def _rbf(d: np.ndarray, x: np.ndarray, y: np.ndarray, scale: float) -> np.ndarray:
    return np.exp(-0.5 * (d / scale) ** 2)  # smooth local variation


def _rational_quadratic(d: np.ndarray, x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    return (1.0 + d**2 / (2.0 * alpha)) ** -alpha  # variation on many scales


def _white(d: np.ndarray, x: np.ndarray, y: np.ndarray, level: float) -> np.ndarray:
    return level * (d == 0)


def _kernel_bank(length: int) -> list[Kernel]:
    """Chronos' bank: periodic kernels for the periods that fit twice, linear, RBF, rational quadratic, white."""
    return [
        *(partial(_periodic, period=p / length) for p in KERNEL_PERIODS if p < length / 2),
        *(partial(_linear, sigma=s) for s in (0.0, 1.0, 10.0)),
        *(partial(_rbf, scale=s) for s in (0.1, 1.0, 10.0)),
        *(partial(_rational_quadratic, alpha=a) for a in (0.1, 1.0, 10.0)),
        *(partial(_white, level=v) for v in (0.1, 1.0)),
    ]


class KernelSynthGenerator:
    """Deterministic KernelSynth series: `series(i)` is a (1, length) float32 draw from the i-th random GP prior."""

    def __init__(self, length: int = 2048, seed: int = 0) -> None:
        self.length = length
        self.seed = seed
        grid = np.linspace(0.0, 1.0, length)
        self._x, self._y = grid[:, None], grid[None, :]
        self._distance = np.abs(self._x - self._y)
        self._bank = _kernel_bank(length)

    def covariance(self, rng: np.random.Generator) -> np.ndarray:
        """A random composition of up to MAX_KERNELS bank kernels joined by + or *."""
        picks = rng.integers(len(self._bank), size=rng.integers(1, MAX_KERNELS + 1))
        covariance = self._bank[picks[0]](self._distance, self._x, self._y)
        for pick in picks[1:]:
            term = self._bank[pick](self._distance, self._x, self._y)
            covariance = covariance + term if rng.random() < 0.5 else covariance * term
        return covariance

    def series(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index, 1])
        covariance = self.covariance(rng)
        jitter = 1e-6 * max(float(np.mean(np.diag(covariance))), 1e-12)
        for _ in range(6):  # products of kernels can be numerically indefinite: raise the jitter until it factors
            try:
                factor = np.linalg.cholesky(covariance + jitter * np.eye(self.length))
                break
            except np.linalg.LinAlgError:
                jitter *= 100
        else:
            raise np.linalg.LinAlgError(f"KernelSynth series {index}: covariance does not factor")
        return (factor @ rng.standard_normal(self.length))[None, :].astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# TSMixup (Chronos, section 4.1): convex mixtures of real series. Each mixture takes 1..MAX_MIXED windows of one
# length from random real series, scales each by its mean absolute value (so no series dominates by magnitude) and
# combines them with Dirichlet(MIXUP_ALPHA) weights; a mixture keeps a missing value where any part misses one.
# A mixture whose parts' gaps leave no step observed is drawn again (new windows, up to WINDOW_DRAWS times, else the
# most observed draw is kept): a training source refuses a series with no values. (Drawing again whenever less than
# half is observed changed 45 of the shipped recipe's 2,000 mixtures, so only empty ones are.)
MAX_MIXED = 3
MIXUP_ALPHA = 1.5
WINDOW_DRAWS = 20


class TSMixupGenerator:
    """Deterministic TSMixup series over a fixed list of real univariate series (1-D float arrays, NaN = missing)."""

    def __init__(self, series: list[np.ndarray], min_length: int = 128, max_length: int = 2048, seed: int = 0):
        usable = [np.asarray(s, dtype=np.float64) for s in series if len(s) >= min_length]
        if not usable:
            raise ValueError(f"TSMixup needs real series of at least {min_length} steps; none of {len(series)} are")
        self.series_pool = usable
        self.min_length = min_length
        self.max_length = max_length
        self.seed = seed

    def series(self, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index, 2])
        picks = rng.choice(len(self.series_pool), size=rng.integers(1, MAX_MIXED + 1))
        shortest = min(len(self.series_pool[p]) for p in picks)
        length = int(rng.integers(self.min_length, min(self.max_length, shortest) + 1))
        weights = rng.dirichlet(np.full(len(picks), MIXUP_ALPHA))
        best: tuple[int, np.ndarray] | None = None
        for _ in range(WINDOW_DRAWS):
            mixture = np.zeros(length)
            for weight, pick in zip(weights, picks):
                source = self.series_pool[pick]
                start = int(rng.integers(0, len(source) - length + 1))
                window = source[start : start + length]
                scale = np.nanmean(np.abs(window)) if np.isfinite(window).any() else np.nan
                mixture += weight * window / (scale if np.isfinite(scale) and scale > 0 else 1.0)
            observed = int(np.isfinite(mixture).sum())
            if best is None or observed > best[0]:
                best = (observed, mixture)
            if observed:
                break
        assert best is not None  # the loop draws WINDOW_DRAWS >= 1 times and keeps the first draw
        return best[1][None, :].astype(np.float32)
