"""Baseline anomaly scorers of benchmarks/eval_anomaly.py, with the interface the Toto adapter shares.

A scorer maps (variates, time) values (NaN = missing), the sampling interval (None: no clock) and the period (steps
per day, or the autocorrelation's period without a clock) to `Scores`: one score per value, higher = more
anomalous, NaN where a value is missing or the method has no score yet. The baselines score each variate alone and
combine variates by their largest score (their scores are z-like or forest path lengths, comparable across
variates); they have no threshold of their own (`Scores.flags` is None), benchmarks/eval_anomaly.py gives them one.

- rolling z-score (causal): abs(x - mean) / std over the previous `period` values (a day, at least 16).
- MSTL residual z (not causal: LOESS reads both sides, and the scale the whole series): the robust z (median,
  1.4826 MAD) of the remainder of statsmodels' MSTL (robust STL fits) with the period and, on a series with a clock
  where a week is at most 1,000 values and the series holds two, the weekly one.
- Isolation Forest (not causal: the forest is fit on every window of the series, as TSB-AD does): scikit-learn's
  forest (100 trees, seed 0) on the trailing windows of `period` values (at most 300, where TSB-AD caps its
  windows); a value gets the score of the window it ends.
- AutoETS interval (causal): abs(x - one-step forecast) / sigma of an additive-error AutoETS (statsforecast, season =
  period, trend and season chosen by AICc), i.e. the z of the value's one-step prediction interval. Refit sparingly:
  on the last `7 * period` values (at most 2,016) every `7 * period` steps; in between the fitted model's states are
  filtered forward over the new values with its parameters fixed (statsforecast's `forward`).

Methods that cannot skip missing values read them linearly interpolated; missing values still get no score.
"""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.anomaly_data import interpolate

LONGEST_WEEK = 1_000  # MSTL's weekly period only when a week is at most this many values (hourly; 5-minute is slow)
LONGEST_FOREST_WINDOW = 300  # TSB-AD's windows stop at 300 values
LONGEST_ETS_FIT = 2_016  # values an AutoETS fit reads (a week of 5-minute data)


@dataclass(frozen=True)
class Scores:
    """A scorer's output for one (variates, time) series."""

    per_variate: np.ndarray  # (variates, time)
    combined: np.ndarray  # (time,): over the variates
    flags: np.ndarray | None = None  # (time,) the method's own decisions, when it has a calibrated threshold


class Scorer(abc.ABC):
    """A named method with one interface: (values, interval_seconds, period) -> Scores."""

    name: str
    causal: bool  # whether a value's score reads only the values up to it

    @abc.abstractmethod
    def __call__(self, values: np.ndarray, interval_seconds: float | None, period: int) -> Scores:
        """(variates, time) values, NaN = missing; interval_seconds None for a series without a clock."""


class UnivariateScorer(Scorer):
    """A baseline that scores each variate alone; variates are combined by their largest score."""

    @abc.abstractmethod
    def score(self, values: np.ndarray, interval_seconds: float | None, period: int) -> np.ndarray:
        """(time,) values with NaN -> (time,) scores."""

    def __call__(self, values: np.ndarray, interval_seconds: float | None, period: int) -> Scores:
        per_variate = np.stack([self.score(row, interval_seconds, period) for row in values])
        per_variate[~np.isfinite(values)] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps stay NaN
            combined = np.nanmax(per_variate, axis=0)
        return Scores(per_variate, combined)


def _robust_scale(values: np.ndarray) -> float:
    """A standard deviation that anomalies barely move (1.4826 MAD), the plain one where the MAD is 0."""
    finite = values[np.isfinite(values)]
    mad = 1.4826 * float(np.median(np.abs(finite - np.median(finite))))
    return mad if mad > 0 else float(np.std(finite)) or 1.0


class RollingZScore(UnivariateScorer):
    name = "rolling z-score"
    causal = True

    def score(self, values: np.ndarray, interval_seconds: float | None, period: int) -> np.ndarray:
        window = max(period, 16)
        past = pd.Series(values).shift(1).rolling(window, min_periods=window // 2)
        mean, std = past.mean().to_numpy(), past.std().to_numpy()
        floor = 1e-6 * _robust_scale(values)  # a flat past (std 0) makes any change infinitely surprising
        return np.abs(values - mean) / np.maximum(std, floor)


class MSTLResidualZScore(UnivariateScorer):
    name = "MSTL residual z"
    causal = False

    def score(self, values: np.ndarray, interval_seconds: float | None, period: int) -> np.ndarray:
        from statsmodels.tsa.seasonal import MSTL

        filled = interpolate(values)
        periods = [period]
        if interval_seconds is not None and 7 * period <= LONGEST_WEEK and len(filled) >= 14 * period:
            periods.append(7 * period)
        remainder = np.asarray(MSTL(filled, periods=periods, stl_kwargs={"robust": True}).fit().resid)
        return np.abs(remainder - np.median(remainder)) / _robust_scale(remainder)


class IsolationForestWindows(UnivariateScorer):
    name = "Isolation Forest"
    causal = False

    def score(self, values: np.ndarray, interval_seconds: float | None, period: int) -> np.ndarray:
        from sklearn.ensemble import IsolationForest

        window = min(period, LONGEST_FOREST_WINDOW)
        windows = np.lib.stride_tricks.sliding_window_view(interpolate(values), window)
        forest = IsolationForest(n_estimators=100, random_state=0).fit(windows)
        out = np.full(len(values), np.nan)
        out[window - 1 :] = -forest.score_samples(windows)  # higher = shorter paths = more anomalous
        return out


class AutoETSInterval(UnivariateScorer):
    name = "AutoETS interval"
    causal = True

    def score(self, values: np.ndarray, interval_seconds: float | None, period: int) -> np.ndarray:
        filled = interpolate(values)
        fit_length = min(7 * period, LONGEST_ETS_FIT)
        out = np.full(len(values), np.nan)
        for start in range(fit_length, len(filled), fit_length):
            stop = min(start + fit_length, len(filled))
            model = _fit_ets(filled[start - fit_length : start], period)
            forecasts = model.forward(y=filled[start - fit_length : stop], h=1, fitted=True)["fitted"][fit_length:]
            out[start:stop] = np.abs(filled[start:stop] - forecasts) / np.sqrt(max(model.model_["sigma2"], 1e-12))
        return out


def _fit_ets(values: np.ndarray, period: int) -> Any:
    """An additive-error AutoETS (trend and season chosen by AICc); without the season if that fit fails (a
    flatline in the window can make the seasonal fit singular)."""
    from statsforecast.models import AutoETS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return AutoETS(season_length=period, model="AZZ").fit(values)
        except Exception:  # statsforecast raises bare exceptions when no model fits
            return AutoETS(season_length=1, model="AZN").fit(values)


BASELINES: tuple[type[Scorer], ...] = (RollingZScore, MSTLResidualZScore, IsolationForestWindows, AutoETSInterval)
