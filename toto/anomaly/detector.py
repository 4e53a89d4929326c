"""Anomaly scores from the predictive distribution: every observed value scored by how surprising it was.

For each value x_t of each variate, the model's distribution F_t predicted before x_t was seen
(`ForecastPipeline.value_distributions`) gives:

- the point's tail probability p_t = 2 min(F_t(x_t), 1 - F_t(x_t)): the probability of a value at least as
  extreme (Toto 1.0 exactly from its Student-T mixture, Toto 2.0 from its nine knots with exponential tails);
- optionally (`window` > 0) a window's: anomalies that change a pattern rather than a value (a daily cycle that
  flattens, a bias, a drift) are, point by point, no more surprising than noise, but together they are. Over the
  last `window` values on consecutive steps, with z = Phi^-1(F(x)) (standard normal when the model is right), a sum
  of squares far above its chi-square expectation (a pattern gone) or a mean of z far from 0 (a shift) is
  surprising. Its tail probability is the smaller of the two tests' times two (Bonferroni). Each z is clipped to
  +-`WINDOW_Z_CLIP` first: a lone extreme value is the point test's, and would otherwise make every window it falls
  in surprising. A sum far below its expectation (values more predictable than the model says) is not counted: a
  model whose distributions are wider than its errors, as small models' are, would raise it on good predictions.

Each test's raw surprise (-ln of its tail probability) is calibrated on the same test's past surprises on the series
(`toto.anomaly.calibration`), since a window test's surprises run larger than a point's, and the two tail
probabilities are combined as the chance that the more surprising of the two is that surprising (Sidak):
q_t = 1 - (1 - min(q_point, q_window))^2; without window tests q_t = q_point. `anomaly_score = 1 - q_t`. A
multivariate series also gets one combined score per step: q = 1 - (1 - min_v q_v)^V, the chance that the most
surprising of V variates is that surprising (Sidak). A value is an anomaly when q is at most the alert budget's
false-alarm rate. Missing values get no score: the model masks them, and the calibration skips them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

from toto.anomaly.calibration import Calibration, calibrate, false_alarm_rate, history_length
from toto.anomaly.distributions import SMALLEST_TAIL_PROBABILITY, ValueDistributions, tail_probability
from toto.validation import InputError

WINDOW_TESTS = 2  # the chi-square of z and the mean of z: the Bonferroni factor of the window's p
WINDOW_Z_CLIP = 3.0  # |z| beyond this counts as this in a window test


@dataclass(frozen=True)
class DetectionSettings:
    """What a detection computes and how it decides; the defaults are those of `toto detect` and `POST /detect`."""

    steps_ahead: int | None = None
    """Every value is scored at most this many steps past its context (None: half the model's patch size). It costs
    patch_size / steps_ahead passes; smaller is sharper but not better at detection: a distribution one step past
    its context already follows a level shift or a flatline that a patch-ahead one still finds surprising
    (docs/anomaly.md measures it)."""
    window: int = 0
    """Scored values a window test reads (0: none, the default). Window tests find drifts and broken cycles sooner,
    and cost spikes and level shifts more (docs/anomaly.md)."""
    band_level: float = 0.99
    """The central probability of the reported band (lower, upper)."""
    false_alarm_rate: float | None = None
    """The share of normal values allowed to be flagged (is_anomaly); None: from alerts_per_day."""
    alerts_per_day: float = 1.0
    """The alert budget as flagged values per day of the series, when false_alarm_rate is None."""
    calibration: Calibration = field(default_factory=Calibration)

    def __post_init__(self) -> None:
        if self.steps_ahead is not None and self.steps_ahead < 1:
            raise InputError(f"steps_ahead must be at least 1, got {self.steps_ahead}")
        if self.window < 0:
            raise InputError(f"window must be 0 (no window tests) or a number of values, got {self.window}")
        if not 0 < self.band_level < 1:
            raise InputError(f"band_level must lie strictly between 0 and 1, got {self.band_level}")
        if self.false_alarm_rate is not None and not 0 < self.false_alarm_rate < 1:
            raise InputError(f"false_alarm_rate must lie strictly between 0 and 1, got {self.false_alarm_rate}")
        if self.alerts_per_day <= 0:
            raise InputError(f"alerts_per_day must be positive, got {self.alerts_per_day}")

    def alarm_rate(self, interval_seconds: float) -> float:
        """The false-alarm rate of a series sampled every `interval_seconds`."""
        if self.false_alarm_rate is not None:
            return self.false_alarm_rate
        return false_alarm_rate(self.alerts_per_day, interval_seconds)


@dataclass(frozen=True)
class Detection:
    """Scores of (batch, variates, time) values; NaN where a value is missing or has no prediction."""

    anomaly_score: np.ndarray  # (batch, variates, time) in [0, 1]: 1 - calibrated tail probability
    combined_score: np.ndarray  # (batch, time): over the variates of each series
    is_anomaly: np.ndarray  # (batch, variates, time) bool
    is_anomaly_combined: np.ndarray  # (batch, time) bool
    lower: np.ndarray  # (batch, variates, time): the band at `band_level`
    upper: np.ndarray
    median: np.ndarray
    surprise: np.ndarray  # (batch, variates, time): the point's raw -ln tail probability, before calibration
    alarm_rate: np.ndarray  # (batch,): the false-alarm rate each series was flagged at


@dataclass
class ScoreHistory:
    """What scoring a series' next values needs of its past, per variate: the PIT values of its last scored values
    and the grid steps they were at (the window tests), the raw surprises of both tests (the calibration), and how
    many values it has scored. A stream keeps one per series (`toto.streaming`), so that its scores are a
    whole-series pass's."""

    pits: list[np.ndarray]
    steps: list[np.ndarray]
    point_surprises: list[np.ndarray]
    window_surprises: list[np.ndarray]
    scored: list[int]

    @classmethod
    def empty(cls, variates: int) -> ScoreHistory:
        nothing = np.empty(0)
        return cls([nothing] * variates, [np.empty(0, dtype=np.int64)] * variates, [nothing] * variates,
                   [nothing] * variates, [0] * variates)


def detect(values: np.ndarray, distributions: ValueDistributions, interval_seconds: np.ndarray,
           settings: DetectionSettings, history: list[ScoreHistory] | None = None, steps: np.ndarray | None = None,
           bands: bool = True) -> tuple[Detection, list[ScoreHistory]]:
    """Score (batch, variates, time) `values` (NaN = missing) under their predictive `distributions`; series b is
    sampled every `interval_seconds[b]` (for an alert budget per day) and continues `history[b]` (None: series
    scored from their start). `steps` (time,) are the values' grid steps (default 0, 1, ...; rows of an irregular
    table share steps or skip some): a window test reads only values on consecutive steps, so that a gap, where the
    model read nothing, does not add up as a pattern change. `bands=False` leaves the band (lower, upper, median) NaN:
    a mixture's quantiles are most of the work, and a caller that publishes only scores does not need them. Returns
    the scores and each series' history after them."""
    values = np.asarray(values, dtype=np.float64)
    batch, variates, length = values.shape
    steps = np.arange(length) if steps is None else np.asarray(steps, dtype=np.int64)
    history = history or [ScoreHistory.empty(variates) for _ in range(batch)]
    observed = np.isfinite(values)
    with np.errstate(invalid="ignore"):
        cdf, upper = distributions.tails(values)
        point = tail_probability(cdf, upper)
    scored = observed & np.isfinite(point)
    surprise = np.where(scored, -np.log(np.where(scored, point, 1.0)), np.nan)
    q = np.full(values.shape, np.nan)
    after: list[ScoreHistory] = []
    keep_pits, keep_surprises = max(settings.window - 1, 0), history_length(settings.calibration)
    for b in range(batch):
        past = history[b]
        state = ScoreHistory([], [], [], [], [])
        for v in range(variates):
            index = np.flatnonzero(scored[b, v])
            first = past.scored[v] - len(past.point_surprises[v])
            point_surprise = surprise[b, v, index]
            row_q = calibrate(point_surprise, settings.calibration, past.point_surprises[v], first)
            pits = np.concatenate([past.pits[v], cdf[b, v, index]])
            pit_steps = np.concatenate([past.steps[v], steps[index]])
            window_surprise = np.empty(0)
            if settings.window:
                window_p = window_tail_probability(pits, pit_steps, settings.window)[len(past.pits[v]) :]
                window_surprise = -np.log(window_p)
                window_q = calibrate(window_surprise, settings.calibration, past.window_surprises[v], first)
                with np.errstate(divide="ignore"):
                    row_q = -np.expm1(2 * np.log1p(-np.minimum(row_q, window_q)))  # Sidak over the two tests
            q[b, v, index] = row_q
            state.pits.append(pits[len(pits) - keep_pits :])
            state.steps.append(pit_steps[len(pit_steps) - keep_pits :])
            state.point_surprises.append(np.concatenate([past.point_surprises[v], point_surprise])[-keep_surprises:])
            state.window_surprises.append(
                np.concatenate([past.window_surprises[v], window_surprise])[-keep_surprises:])
            state.scored.append(past.scored[v] + len(index))
        after.append(state)
    combined_q = _combined(q)
    rates = np.array([settings.alarm_rate(float(s)) for s in np.atleast_1d(interval_seconds)])
    low, high = (1 - settings.band_level) / 2, (1 + settings.band_level) / 2
    with np.errstate(invalid="ignore"):
        band = {name: distributions.quantile(level) if bands else np.full(values.shape, np.nan)
                for name, level in (("lower", low), ("upper", high), ("median", 0.5))}
    detection = Detection(
        anomaly_score=1.0 - q, combined_score=1.0 - combined_q,
        is_anomaly=np.nan_to_num(q, nan=1.0) <= rates[:, None, None],
        is_anomaly_combined=np.nan_to_num(combined_q, nan=1.0) <= rates[:, None],
        lower=band["lower"], upper=band["upper"], median=band["median"], surprise=surprise, alarm_rate=rates,
    )
    return detection, after


def window_tail_probability(pits: np.ndarray, steps: np.ndarray, window: int) -> np.ndarray:
    """The tail probability of the `window` values ending at each of a row's scored values, from their PIT values
    F(x) at grid `steps`; 1 where fewer than `window` values on consecutive steps end there (a repeated step counts
    as consecutive: several rows of one step)."""
    out = np.ones(len(pits))
    if len(pits) < window:
        return out
    z = np.clip(special.ndtri(np.clip(pits, SMALLEST_TAIL_PROBABILITY, 1 - 1e-16)), -WINDOW_Z_CLIP, WINDOW_Z_CLIP)
    squares = np.convolve(z**2, np.ones(window), "valid")  # the sums over each trailing window
    sums = np.convolve(z, np.ones(window), "valid")
    breaks = np.convolve((np.diff(steps) > 1).astype(float), np.ones(window - 1), "valid") if window > 1 else None
    above = stats.chi2.sf(squares, window)
    shift = 2 * special.ndtr(-np.abs(sums) / math.sqrt(window))
    p = np.clip(WINDOW_TESTS * np.minimum(above, shift), SMALLEST_TAIL_PROBABILITY, 1.0)
    if breaks is not None:
        p = np.where(breaks > 0, 1.0, p)
    out[window - 1 :] = p
    return out


def _combined(q: np.ndarray) -> np.ndarray:
    """(batch, variates, time) tail probabilities -> (batch, time): Sidak's combination of the smallest."""
    variates = np.isfinite(q).sum(1)
    smallest = np.nanmin(np.where(np.isfinite(q), q, np.inf), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        combined = -np.expm1(variates * np.log1p(-np.minimum(smallest, 1.0)))
    return np.where(variates > 0, combined, np.nan)
