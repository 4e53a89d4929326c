"""The rules a forecast's settings must follow, written once and raised as one exception type, and the warning for
a model whose output cannot be trusted.

`ForecastPipeline`, the pandas API, the CLI, the forecaster and the service's schemas check a horizon, a number of
samples or quantile levels with these functions, so a rule and its message are the same wherever a user meets
it. Whatever a user can get wrong raises `InputError` (a `ValueError`), whose message says what is wrong and how to
fix it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TypeGuard

# The model computes in float32 (largest 3.4e38) and its scaler squares values: keep inputs far from overflow.
MAX_ABS_VALUE = 1e30
# pandas needs three timestamps to infer a frequency, and a context shorter than that says nothing.
MIN_TIME_STEPS = 3
# Seeds name random streams of 32-bit keys (toto.inference.streams).
MAX_SEED = 2**32 - 1


class InputError(ValueError):
    """Input that cannot be forecast as it is; the message says what is wrong and how to fix it.

    `field` names the setting at fault when there is one ("num_samples", "feedback"), so that the service can point
    its answer at the request's field.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:  # pickled across processes (the service's model)
        return type(self), (str(self), self.field)


class NonFiniteForecastWarning(UserWarning):
    """A model produced NaN or infinite values, which the forecast replaced by 0 (Toto 1.0's contract).

    Early-training or broken models do this; an evaluation must not score those zeros as a forecast, so `boom eval`
    turns this warning into an error."""


def check_prediction_length(prediction_length: object) -> int:
    """A horizon of at least one step."""
    if not _is_integer(prediction_length) or int(prediction_length) < 1:
        raise InputError(f"prediction_length must be a positive integer, got {prediction_length!r}",
                         "prediction_length")
    return int(prediction_length)


def check_num_samples(num_samples: object) -> int:
    """A number of sample paths: at least one (quantiles come from them)."""
    if not _is_integer(num_samples) or int(num_samples) < 1:
        raise InputError(
            f"num_samples must be a positive integer (quantiles come from sample paths), got {num_samples!r}",
            "num_samples",
        )
    return int(num_samples)


def check_quantile_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """Quantile levels strictly between 0 and 1, returned sorted without repeats.

    0 and 1 are the ends of the distribution's support, which neither family can forecast: a sampling model would
    return its lowest and highest sample, whose values depend on the number of samples, a quantile model its edge
    knots.
    """
    values = list(levels)
    if not values or not all(isinstance(q, numbers.Real) and 0 < float(q) < 1 for q in values):
        raise InputError(f"quantile levels must lie strictly between 0 and 1, got {values}", "quantile_levels")
    return tuple(sorted({float(q) for q in values}))


def check_context_length(context_length: object) -> int:
    """A context of at least `MIN_TIME_STEPS` steps."""
    if not _is_integer(context_length) or int(context_length) < MIN_TIME_STEPS:
        raise InputError(f"context_length must be an integer of at least {MIN_TIME_STEPS}, got {context_length!r}",
                         "context_length")
    return int(context_length)


def check_batch_size(batch_size: object) -> int:
    """Series forecast together: at least one."""
    if not _is_integer(batch_size) or int(batch_size) < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}", "batch_size")
    return int(batch_size)


def check_seed(seed: object) -> int:
    """A seed of the random streams: an integer from 0 to 2**32 - 1."""
    if not _is_integer(seed) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}", "seed")
    return int(seed)


def _is_integer(value: object) -> TypeGuard[numbers.Integral]:
    """An integer of Python or numpy, not a bool (True is not a horizon)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
