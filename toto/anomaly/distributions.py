"""The predictive distribution of each observed value, in data space: its CDF, its quantiles and tail probabilities.

A detector needs, for every value x the series took, the probability of a value at least as extreme under the
distribution the model predicted for it before seeing it. Each model family predicts a different kind of
distribution, and each has an exact CDF here (numpy, float64, so that tail probabilities of 1e-12 stay apart):

- Toto 1.0 (`StudentTMixture`): a mixture of Student-T in the scaler's normalised space, mapped to data space by
  the causal scaler's loc and scale. Its CDF is the weighted sum of the components' CDFs; upper tails are summed
  from the components' own upper tails (not as 1 - CDF), so they keep their precision far out.
- Toto 2.0 (`QuantileKnots`): nine quantile knots (0.1, ..., 0.9) in the model's asinh space,
  z = asinh((x - loc) / scale). Between two knots the CDF is linear in z (the model is trained with a pinball loss
  there). Beyond the outer knots it has an exponential tail in z continued from the last two knots: the tail
  probability halves every (k9 - k8) above the 0.9 knot (and every (k2 - k1) below the 0.1 knot), so the
  extrapolated tail passes through the 0.8 and 0.9 knots (the 0.2 and 0.1 knots). In data space that is a power
  law (asinh grows like a logarithm): heavy tails, which is what metrics with bursts need.

Every array is (..., values); NaN entries (no prediction) propagate to NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import special

# Tail probabilities below this are reported as this (-ln of it is about 690): a float64 cannot tell them apart.
SMALLEST_TAIL_PROBABILITY = 1e-300
# The mixture's quantiles (`StudentTMixture.quantile`): at most this many Newton or bisection steps, stopping once a
# step moves the value by less than this many of the scaler's scales.
QUANTILE_ITERATIONS = 60
QUANTILE_TOLERANCE = 1e-5


class ValueDistributions(Protocol):
    """The predictive distributions of a set of values (one per entry of (..., values))."""

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """P(X <= x)."""

    def tails(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P(X <= x), P(X > x)), each accurate far into its own tail."""

    def quantile(self, level: float) -> np.ndarray:
        """The value below which the given share of the distribution lies."""

    def take(self, index: np.ndarray) -> ValueDistributions:
        """The distributions at `index` along the values axis (one per row placed on a step, say)."""

    def take_series(self, index: int) -> ValueDistributions:
        """The distributions of one series of a batch (..., variates, values) -> (1, variates, values)."""


def tail_probability(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """The probability of a value at least as extreme, from its two tails (`ValueDistributions.tails`): twice the
    smaller one, at most 1 (two-sided)."""
    return np.clip(2 * np.minimum(lower, upper), SMALLEST_TAIL_PROBABILITY, 1.0)


@dataclass(frozen=True)
class StudentTMixture:
    """Toto 1.0's next-value distributions: K Student-T components per value, in the scaler's normalised space.

    weights, df, loc, scale: (..., values, K); data_loc, data_scale: (..., values), the causal scaler's statistics
    (x = data_loc + data_scale * normalised)."""

    weights: np.ndarray
    df: np.ndarray
    loc: np.ndarray
    scale: np.ndarray
    data_loc: np.ndarray
    data_scale: np.ndarray

    def take_series(self, index: int) -> StudentTMixture:
        return StudentTMixture(self.weights[index : index + 1], self.df[index : index + 1],
                               self.loc[index : index + 1], self.scale[index : index + 1],
                               self.data_loc[index : index + 1], self.data_scale[index : index + 1])

    def take(self, index: np.ndarray) -> StudentTMixture:
        return StudentTMixture(np.take(self.weights, index, axis=-2), np.take(self.df, index, axis=-2),
                               np.take(self.loc, index, axis=-2), np.take(self.scale, index, axis=-2),
                               np.take(self.data_loc, index, axis=-1), np.take(self.data_scale, index, axis=-1))

    def _standardised(self, x: np.ndarray) -> np.ndarray:
        normalised = (np.asarray(x, dtype=np.float64) - self.data_loc) / self.data_scale
        return (normalised[..., None] - self.loc) / self.scale

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return (self.weights * special.stdtr(self.df, self._standardised(x))).sum(-1)

    def tails(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = self._standardised(x)
        smaller = special.stdtr(self.df, -np.abs(t))  # each component's own tail on x's side, to full precision
        lower = np.where(t < 0, smaller, 1 - smaller)
        upper = np.where(t < 0, 1 - smaller, smaller)
        return (self.weights * lower).sum(-1), (self.weights * upper).sum(-1)

    def density(self, x: np.ndarray) -> np.ndarray:
        """The probability density at `x`, in data space."""
        t = self._standardised(x)
        log_norm = (special.gammaln((self.df + 1) / 2) - special.gammaln(self.df / 2)
                    - 0.5 * np.log(self.df * math.pi))
        component = np.exp(log_norm - (self.df + 1) / 2 * np.log1p(t**2 / self.df)) / self.scale
        return (self.weights * component).sum(-1) / self.data_scale

    def quantile(self, level: float) -> np.ndarray:
        """The mixture's quantile, between the smallest and the largest of its components' quantiles (a mixture's
        CDF at any point is a weighted mean of theirs): Newton steps from the weighted mean of those, each replaced
        by bisection when it would leave the bracket, on the values not yet converged only."""
        components = self.loc + self.scale * special.stdtrit(self.df, level)  # (..., values, K), normalised
        components_of = self.weights.shape[-1]
        flat = StudentTMixture(self.weights.reshape(-1, components_of), self.df.reshape(-1, components_of),
                               self.loc.reshape(-1, components_of), self.scale.reshape(-1, components_of),
                               self.data_loc.reshape(-1), self.data_scale.reshape(-1))
        ends = components.reshape(-1, components.shape[-1])
        low = flat.data_loc + flat.data_scale * ends.min(-1)
        high = flat.data_loc + flat.data_scale * ends.max(-1)
        x = flat.data_loc + flat.data_scale * (flat.weights * ends).sum(-1)
        active = np.flatnonzero(np.isfinite(x))
        for _ in range(QUANTILE_ITERATIONS):
            if not len(active):
                break
            part = flat.take(active)
            excess = part.cdf(x[active]) - level
            low[active] = np.where(excess < 0, x[active], low[active])
            high[active] = np.where(excess >= 0, x[active], high[active])
            with np.errstate(divide="ignore", invalid="ignore"):
                newton = x[active] - excess / part.density(x[active])
            inside = (newton > low[active]) & (newton < high[active])
            step = np.where(inside, newton, (low[active] + high[active]) / 2)
            moved = np.abs(step - x[active]) > QUANTILE_TOLERANCE * part.data_scale
            x[active] = step
            active = active[moved]
        return x.reshape(self.data_loc.shape)


@dataclass(frozen=True)
class QuantileKnots:
    """Toto 2.0's next-value distributions: nine sorted knots (0.1, ..., 0.9) per value in the model's asinh space.

    knots: (..., values, 9); data_loc, data_scale: (..., values), the causal scaler's statistics of the patch before
    (x = data_loc + data_scale * sinh(z))."""

    knots: np.ndarray
    data_loc: np.ndarray
    data_scale: np.ndarray
    levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

    def take_series(self, index: int) -> QuantileKnots:
        return QuantileKnots(self.knots[index : index + 1], self.data_loc[index : index + 1],
                             self.data_scale[index : index + 1], self.levels)

    def take(self, index: np.ndarray) -> QuantileKnots:
        return QuantileKnots(np.take(self.knots, index, axis=-2), np.take(self.data_loc, index, axis=-1),
                             np.take(self.data_scale, index, axis=-1), self.levels)

    def _z(self, x: np.ndarray) -> np.ndarray:
        return np.arcsinh((np.asarray(x, dtype=np.float64) - self.data_loc) / self.data_scale)

    def _tail_scales(self) -> tuple[np.ndarray, np.ndarray]:
        """The exponential tails' scales in z, below the first knot and above the last (at least a tiny step, so
        that equal knots still give a distribution)."""
        tiny = 1e-9
        below = np.maximum(self.knots[..., 1] - self.knots[..., 0], tiny) / math.log(self.levels[1] / self.levels[0])
        above = np.maximum(self.knots[..., -1] - self.knots[..., -2], tiny) / math.log(
            (1 - self.levels[-2]) / (1 - self.levels[-1]))
        return below, above

    def cdf(self, x: np.ndarray) -> np.ndarray:
        return self._cdf_and_upper(self._z(x))[0]

    def tails(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._cdf_and_upper(self._z(x))
    def _cdf_and_upper(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        knots, levels = self.knots, np.asarray(self.levels)
        below, above = self._tail_scales()
        first, last = knots[..., 0], knots[..., -1]
        # Linear between the knots: the segment each z falls in (searchsorted per row, vectorised by counting).
        index = np.clip((knots <= z[..., None]).sum(-1) - 1, 0, len(levels) - 2)
        left = np.take_along_axis(knots, index[..., None], -1)[..., 0]
        right = np.take_along_axis(knots, index[..., None] + 1, -1)[..., 0]
        width = np.maximum(right - left, 1e-12)
        inside = levels[index] + (levels[index + 1] - levels[index]) * np.clip((z - left) / width, 0.0, 1.0)
        with np.errstate(over="ignore"):
            low_tail = levels[0] * np.exp((z - first) / below)
            high_tail = (1 - levels[-1]) * np.exp(-(z - last) / above)
        cdf = np.where(z < first, low_tail, np.where(z > last, 1 - high_tail, inside))
        upper = np.where(z > last, high_tail, np.where(z < first, 1 - low_tail, 1 - inside))
        return cdf, upper

    def quantile(self, level: float) -> np.ndarray:
        levels = np.asarray(self.levels)
        below, above = self._tail_scales()
        if level < levels[0]:
            z = self.knots[..., 0] + below * math.log(level / levels[0])
        elif level > levels[-1]:
            z = self.knots[..., -1] - above * math.log((1 - level) / (1 - levels[-1]))
        else:
            i = min(int(np.searchsorted(levels, level, side="right")) - 1, len(levels) - 2)
            share = (level - levels[i]) / (levels[i + 1] - levels[i])
            z = self.knots[..., i] + share * (self.knots[..., i + 1] - self.knots[..., i])
        return self.data_loc + self.data_scale * np.sinh(z)
