"""A PromQL range query as a table in the project's conventions (`toto.tables`), ready for `predict_df` and
`detect_df`:

    table = read_prometheus("http://localhost:9090", 'rate(http_requests_total{job="api"}[5m])', range="7d", step="5m")
    forecast = predict_df(table, prediction_length=12)

- One series per label set the query returns; its `id` is the label set in PromQL notation
  (`node_load1{instance="web-1",job="node"}`), so a forecast row says which series it is and the id can be pasted
  back into a query.
- The query's step is the table's frequency: every series has a row at every step from its first sample to the end
  of the range, on one grid aligned to multiples of the step (so that two reads of one query line up).
- Where Prometheus has no sample (a gap, a series gone stale: Prometheus writes a stale marker when a target stops
  exposing it, and a range query then returns nothing for those steps), the row's value is NaN, a missing value. So
  are NaN and infinite samples (a rate divided by zero). A gap shorter than Prometheus' lookback (5 minutes by
  default) is not one to a range query: it answers each step with the latest sample of the lookback before it.
- Counters only grow and reset on restarts: forecast and score their rate, `rate(requests_total[5m])`, not the raw
  counter (docs/prometheus.md). `counter_like` names series that look like raw counters, for a warning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from toto.options import DEFAULT_MAX_SERIES
from toto.prometheus.client import Connection, PrometheusClient, QueryError, RangeSeries, parse_duration
from toto.validation import InputError

# Metric-name suffixes of counters and of histograms' and summaries' counter parts (Prometheus naming conventions).
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


def series_id(labels: Mapping[str, str]) -> str:
    """A label set in PromQL notation: `name{a="x",b="y"}`, labels sorted, values escaped as PromQL does."""
    name = labels.get("__name__", "")
    pairs = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()) if key != "__name__")
    return f"{name}{{{pairs}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def aligned_range(range_s: float, step_s: float, end: float | None = None) -> tuple[float, float]:
    """(start, end) of `range_s` seconds of steps ending at the last multiple of the step at or before `end` (now):
    `range_s / step_s` points, on a grid every read of the query shares."""
    end = time.time() if end is None else end
    end = math.floor(end / step_s) * step_s
    points = max(1, int(range_s // step_s))
    return end - (points - 1) * step_s, end


class TooManySeries(QueryError):
    """A query returns more series than the reader allows."""


def too_many_series(query: str, count: int, max_series: int) -> TooManySeries:
    return TooManySeries(f"the query {query!r} returns {count:,} series, over the limit of {max_series:,}: narrow it"
                         ' with a label matcher ({job="api"}) or aggregate it (sum by (instance) (...)), or raise the'
                         " limit")


def check_series_count(client: PrometheusClient, query: str, at: float, max_series: int) -> None:
    """Refuse, before fetching a range, a query that returns more than `max_series` series at `at`: an instant query,
    one value per series instead of every series' points. (Wrapping the query in count() would return one number,
    but Prometheus' error messages would then point into the wrapped text instead of the user's.)"""
    count = len(client.query(query, at))
    if count > max_series:
        raise too_many_series(query, count, max_series)


def read_series(client: PrometheusClient, query: str, start: float, end: float, step_s: float,
                max_series: int = DEFAULT_MAX_SERIES) -> list[RangeSeries]:
    """The query's series over [start, end] every `step_s`, at most `max_series` of them (checked before and after
    the fetch)."""
    check_series_count(client, query, end, max_series)
    found = client.query_range(query, start, end, step_s)
    if len(found) > max_series:
        raise too_many_series(query, len(found), max_series)
    return found


def to_table(series: Sequence[RangeSeries], start: float, end: float, step_s: float) -> pd.DataFrame:
    """Long table (`id`, `timestamp`, `value`) of `series` on the grid start, start + step, ... end: each series from
    its first finite sample to `end`, NaN where it has none. Timestamps are UTC, without a time zone."""
    points = int(round((end - start) / step_s)) + 1
    ids, stamps, values = [], [], []
    for item in series:
        slot = np.round((item.timestamps - start) / step_s).astype(np.int64)
        grid = np.full(points, np.nan)
        inside = (slot >= 0) & (slot < points)
        grid[slot[inside]] = item.values[inside]
        observed = np.flatnonzero(np.isfinite(grid))
        if not len(observed):
            continue
        first = int(observed[0])
        ids.append(np.full(points - first, series_id(item.labels), dtype=object))
        stamps.append(start + step_s * np.arange(first, points))
        values.append(grid[first:])
    if not ids:
        return pd.DataFrame({"id": pd.Series(dtype=object), "timestamp": pd.Series(dtype="datetime64[s]"),
                             "value": pd.Series(dtype=np.float64)})
    seconds = np.concatenate(stamps)
    return pd.DataFrame({
        "id": np.concatenate(ids),
        "timestamp": pd.to_datetime(np.round(seconds).astype(np.int64), unit="s").as_unit("s"),
        "value": np.concatenate(values),
    })


def counter_like(series: Sequence[RangeSeries]) -> list[str]:
    """Metric names among `series` that look like raw counters (a query without rate() keeps `__name__`)."""
    names = {item.labels.get("__name__", "") for item in series}
    return sorted(name for name in names if name.endswith(COUNTER_SUFFIXES))


def read_prometheus(
    url: str | Connection,
    query: str,
    range: str | float = "7d",  # noqa: A002 - Prometheus' own word for it
    step: str | float = "5m",
    end: float | pd.Timestamp | None = None,
    max_series: int = DEFAULT_MAX_SERIES,
) -> pd.DataFrame:
    """The series of the PromQL `query` over the last `range` (up to `end`, default now; a Prometheus duration like
    '7d' or seconds) every `step`, as a long table `id`, `timestamp`, `value` for `predict_df` and `detect_df`
    (module docstring). `url` is the server's (credentials from the environment, see `toto.prometheus.client`) or a
    `Connection`. Raises `QueryError` for a query the server refuses or one returning more than `max_series` series,
    `PrometheusUnavailable` when the server cannot be reached."""
    step_s = parse_duration(step, "step")
    range_s = parse_duration(range, "range")
    if range_s < step_s:
        raise InputError(f"the range {range} is shorter than one step of {step}: read at least a few steps")
    end_s = pd.Timestamp(end).timestamp() if isinstance(end, (pd.Timestamp, str)) else end
    start, stop = aligned_range(range_s, step_s, end_s)
    connection = url if isinstance(url, Connection) else Connection(url)
    with PrometheusClient(connection) as client:
        series = read_series(client, query, start, stop, step_s, max_series)
    return to_table(series, start, stop, step_s)
