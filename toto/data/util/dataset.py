"""`MaskedTimeseries`: the model's input container, field for field as in Toto 1.0, plus a NaN-aware constructor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class MaskedTimeseries(NamedTuple):
    series: Tensor
    """(batch?, variates, time) values. NaN marks a missing value."""
    padding_mask: Tensor
    """(batch?, variates, time) bool: True where `series` holds an observed value, False for padding/missing."""
    id_mask: Tensor
    """(batch?, variates, time or 1) int: variates with equal ids belong to one multivariate series."""
    timestamp_seconds: Tensor
    """(batch?, variates, time) POSIX seconds of each step."""
    time_interval_seconds: Tensor
    """(batch?, variates) sampling interval in seconds."""
    num_exogenous_variables: int = 0
    """The last `num_exogenous_variables` variates are known-future covariates, not forecast targets."""

    def to(self, device: torch.device | str) -> MaskedTimeseries:
        return self._replace(**{name: getattr(self, name).to(device) for name in self._fields[:5]})

    def batched(self) -> MaskedTimeseries:
        """The same inputs with a batch dimension: one series (variates, time) becomes a batch of one."""
        if torch.as_tensor(self.series).ndim != 2:
            return self
        series, padding_mask, id_mask, timestamp_seconds, time_interval_seconds = (
            torch.as_tensor(t)[None] for t in self[:5])
        return self._replace(series=series, padding_mask=padding_mask, id_mask=id_mask,
                             timestamp_seconds=timestamp_seconds, time_interval_seconds=time_interval_seconds)

    @classmethod
    def from_series(
        cls,
        series: Tensor | np.ndarray,
        time_interval_seconds: int | Tensor | np.ndarray = 1,
        start_timestamp_seconds: int | Tensor | np.ndarray = 0,
        id_mask: Tensor | np.ndarray | None = None,
        num_exogenous_variables: int = 0,
    ) -> MaskedTimeseries:
        """Build all fields from values shaped (variates, time) or (batch, variates, time); NaN = missing.

        Shorter series in a batch are left-padded with NaN by the caller. Intervals and start times are scalars or
        broadcastable to (batch?, variates).
        """
        values = torch.as_tensor(series, dtype=torch.float32)
        if values.ndim not in (2, 3):
            raise ValueError(
                f"series must be (variates, time) or (batch, variates, time); got shape {tuple(values.shape)}")
        interval = torch.as_tensor(time_interval_seconds, dtype=torch.int64).expand(values.shape[:-1])
        start = torch.as_tensor(start_timestamp_seconds, dtype=torch.int64).expand(values.shape[:-1])
        steps = torch.arange(values.shape[-1], dtype=torch.int64)
        ids = torch.zeros(values.shape, dtype=torch.int64) if id_mask is None else torch.as_tensor(id_mask)
        return cls(
            series=values,
            padding_mask=torch.isfinite(values),
            id_mask=ids.expand(values.shape) if ids.shape[-1] == 1 else ids,
            timestamp_seconds=start[..., None] + steps * interval[..., None],
            time_interval_seconds=interval.clone(),
            num_exogenous_variables=num_exogenous_variables,
        )


def unobserved_in_context(values: np.ndarray, names: Sequence[str], context_length: int) -> list[str]:
    """The names of the rows of `values` (variates, time) with no observed (non-NaN) value in their last
    `context_length` steps: the model would read nothing of them, so the entry points refuse them by name."""
    window = np.asarray(values, dtype=float)[:, -context_length:]
    return [name for name, row in zip(names, window, strict=True) if np.isnan(row).all()]


def stack_ragged(
    series: Sequence[np.ndarray | Tensor],
    context_length: int | None = None,
    time_interval_seconds: Sequence[int] | int = 1,
    end_timestamp_seconds: Sequence[int] | int = 0,
) -> MaskedTimeseries:
    """Batch series of different lengths, each (variates, time) with the same number of variates.

    Each is cut to its last `context_length` steps and left-padded with NaN (unobserved) to the longest; the
    forecaster treats that padding as absent, so every series forecasts as it would alone.
    `end_timestamp_seconds` is the timestamp of each series' last step.
    """
    windows = [np.atleast_2d(np.asarray(s, dtype=np.float32)) for s in series]
    if context_length is not None:
        windows = [w[:, -context_length:] for w in windows]
    if len({w.shape[0] for w in windows}) > 1:
        raise ValueError(f"series in one batch need the same number of variates, got {[w.shape[0] for w in windows]}")
    length = max(w.shape[1] for w in windows)
    stacked = np.full((len(windows), windows[0].shape[0], length), np.nan, dtype=np.float32)
    for row, window in enumerate(windows):
        stacked[row, :, length - window.shape[1]:] = window
    intervals = np.broadcast_to(np.asarray(time_interval_seconds, dtype=np.int64), (len(windows),))[:, None].copy()
    ends = np.broadcast_to(np.asarray(end_timestamp_seconds, dtype=np.int64), (len(windows),))[:, None].copy()
    return MaskedTimeseries.from_series(stacked, time_interval_seconds=intervals,
                                        start_timestamp_seconds=ends - (length - 1) * intervals)


def left_pad(values: Tensor, multiple: int, value: float | bool = 0) -> Tensor:
    """Left-pad the last axis to a multiple of `multiple` with `value`."""
    pad = -values.shape[-1] % multiple
    if pad == 0:
        return values
    filler = torch.full((*values.shape[:-1], pad), value, dtype=values.dtype, device=values.device)
    return torch.cat([filler, values], dim=-1)


def left_pad_edge(values: Tensor, multiple: int) -> Tensor:
    """Left-pad the last axis to a multiple of `multiple` by repeating the first value (for id masks)."""
    pad = -values.shape[-1] % multiple
    return torch.cat([values[..., :1].expand(*values.shape[:-1], pad), values], dim=-1) if pad else values
