"""Prometheus in and out: read the metrics a team already stores, and publish forecasts and anomaly scores back for
its alert rules.

- `toto.prometheus.client`: the query API over an authenticated, retrying connection.
- `toto.prometheus.reading`: a range query as a table for `predict_df` / `detect_df` (`read_prometheus`).
- `toto.prometheus.exporter`: `toto exporter`, which forecasts and scores configured queries on a schedule and serves
  the results on /metrics.

docs/prometheus.md goes from installing to an alert firing.
"""

from toto.prometheus.client import Connection, PrometheusUnavailable, QueryError
from toto.prometheus.reading import read_prometheus

__all__ = ["Connection", "PrometheusUnavailable", "QueryError", "read_prometheus"]
