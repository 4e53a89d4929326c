"""From raw surprise to a calibrated tail probability that means the same on every series.

A probability under a model is not an alert rule: the model's tails are off in both directions, and a long series
has many values a model calls 1-in-10,000. So each value's raw surprise r (-ln of the tail probabilities of the
point and its window, `toto.anomaly.detector`) is ranked against the same series' own recent past surprises, the
conformal way: with S the last `window` surprises before it (strictly earlier: the score at t reads nothing after
t), its tail probability is

    q = (1 + #{s in S : s >= r}) / (|S| + 1)

which is uniform (never smaller than uniform) while the series behaves as it did in S. Beyond the top
`tail_share` of S, where ranks run out (|S| = 2,016 cannot say 1e-5), the tail is extrapolated exponentially, as
SPOT does with extreme-value theory (Siffer et al., KDD 2017; its generalised Pareto tail with shape 0): with u the
threshold of the top share and sigma the mean excess of S over u,

    q = (#{s in S : s >= u} / (|S| + 1)) * exp(-(r - u) / sigma)     for r > u.

The threshold and sigma are refit every `refit_every` scored values from the surprises before that point, so they
too are causal. While fewer than `min_scores` past surprises exist there is no tail: a value is ranked against the
few before it, so the first values of a series can score at most 1 - 1/(n + 1) (the very first, 0).

So `anomaly_score = 1 - q` has one meaning on every series: under its normal behaviour, a score above 1 - alpha
happens to a share alpha of the values. An alert budget stated as a false-alarm rate is alpha itself; stated as
alerts per day it is alerts_per_day / (values per day).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toto.validation import InputError

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Calibration:
    """How surprises are calibrated (see the module docstring)."""

    window: int = 2016
    """Past surprises a value is ranked against (2,016: a week of 5-minute data)."""
    min_scores: int = 64
    """Below this many past surprises, no tail is fitted: ranks only."""
    tail_share: float = 0.02
    """The top share of past surprises the exponential tail is fitted on."""
    refit_every: int = 64
    """Scored values between two fits of the tail's threshold and scale."""

    def __post_init__(self) -> None:
        if self.window < 2 or not 1 <= self.min_scores <= self.window:
            raise InputError(f"calibration window ({self.window}) must be >= 2 and min_scores ({self.min_scores}) "
                             "between 1 and the window")
        if not 0 < self.tail_share < 0.5 or self.refit_every < 1:
            raise InputError("tail_share must lie in (0, 0.5) and refit_every be at least 1")


def calibrate(r: np.ndarray, calibration: Calibration, past: np.ndarray | None = None, first: int = 0) -> np.ndarray:
    """The calibrated q of a row's scored surprises `r`, in order, each against the surprises before it.

    `past` holds the row's surprises before `r` (at least the last `history_length` of them, or all of them), the
    first of which has scored index `first` (0: the row's first scored value). So a stream scores its new values with
    the numbers a whole-series pass gives them: the tail's refits fall on the same scored indices."""
    past = np.empty(0) if past is None else past
    everything = np.concatenate([past, r])
    first_new, end = first + len(past), first + len(everything)  # scored indices of r[0] and past r[-1]
    chunk, window = calibration.refit_every, calibration.window
    q = np.ones(len(r))
    # Fits start at the scored indices 0, min_scores, min_scores + refit_every, ...; before min_scores there is no
    # tail (threshold +inf): ranks against the few values there are.
    fits = [0, *range(calibration.min_scores, end, chunk)]
    for begin, stop in zip(fits, [*fits[1:], end], strict=True):
        lo, hi = max(begin, first_new), min(stop, end)  # the scored indices this fit calibrates
        if lo >= hi:
            continue
        if begin >= calibration.min_scores:
            threshold, sigma, exceed_share = _exponential_tail(
                everything[max(begin - window - first, 0) : begin - first], calibration.tail_share)
        else:
            threshold, sigma, exceed_share = np.inf, 1.0, 1.0
        index = np.arange(lo, hi)[:, None]
        candidate = np.arange(max(lo - window, first), hi)[None, :]  # the scored indices their pasts draw on
        in_past = (candidate < index) & (candidate >= index - window)
        values = everything[lo - first : hi - first]
        at_least = ((everything[candidate[0] - first][None, :] >= values[:, None]) & in_past).sum(1)
        conformal = (1 + at_least) / (in_past.sum(1) + 1)
        extrapolated = exceed_share * np.exp(-np.maximum(values - threshold, 0.0) / sigma)
        q[lo - first_new : hi - first_new] = np.where(values > threshold, np.minimum(conformal, extrapolated),
                                                      conformal)
    return q


def history_length(calibration: Calibration) -> int:
    """How many past surprises `calibrate` needs to score a row's next values as a whole-series pass would."""
    return calibration.window + calibration.refit_every


def _exponential_tail(past: np.ndarray, tail_share: float) -> tuple[float, float, float]:
    """(threshold u, mean excess sigma, share of the past at or above u) of the top `tail_share` of `past`."""
    threshold = float(np.quantile(past, 1 - tail_share))
    excess = past[past > threshold] - threshold
    sigma = float(excess.mean()) if len(excess) else 1.0
    return threshold, max(sigma, 1e-6), float((past >= threshold).sum() + 1) / (len(past) + 1)


def false_alarm_rate(alerts_per_day: float, interval_seconds: float) -> float:
    """The share of values that may raise an alert, for a budget of `alerts_per_day` on a series sampled every
    `interval_seconds`."""
    if alerts_per_day <= 0 or interval_seconds <= 0:
        raise InputError(f"alerts_per_day ({alerts_per_day}) and the sampling interval ({interval_seconds} s) must "
                         "be positive")
    return min(1.0, alerts_per_day * interval_seconds / SECONDS_PER_DAY)
