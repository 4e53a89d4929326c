"""Stopping a forecast that nobody waits for any more (a server's client left, or its deadline passed).

A forecast checks its `cancel` hook between decoding steps (Toto 1.0) or before its forward pass (Toto 2.0, one
pass); when the hook says so, it stops with `ForecastCancelled`, which frees the model for other work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Cancellation = Callable[[], bool] | threading.Event
"""A callable returning True, or an event that is set, once the forecast should stop."""


class ForecastCancelled(RuntimeError):
    """Raised between decoding steps when the forecast's `cancel` hook says nobody waits for it any more."""


def cancelled(cancel: Cancellation | None) -> bool:
    """Whether the hook says to stop (None never does)."""
    if cancel is None:
        return False
    return cancel.is_set() if isinstance(cancel, threading.Event) else cancel()


def raise_if_cancelled(cancel: Cancellation | None) -> None:
    if cancelled(cancel):
        raise ForecastCancelled("forecast cancelled between decoding steps: nobody waits for its result")
