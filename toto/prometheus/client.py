"""Prometheus' HTTP API, the part a forecaster reads: range queries and instant queries, over a connection that
authenticates, verifies TLS, times out and retries.

Anything that speaks the Prometheus query API works (Prometheus, Thanos, Mimir, VictoriaMetrics, Cortex): give the
URL its API lives under, e.g. `http://mimir:8080/prometheus`. Queries are POSTed as forms, so a long PromQL
expression never hits a URL length limit.

Credentials come from the environment, never from a command line or a config file that may be shared:
`PROMETHEUS_BEARER_TOKEN`, or `PROMETHEUS_USERNAME` with `PROMETHEUS_PASSWORD` (basic auth). TLS certificates are
verified; `ca_file` names a private CA bundle, and skipping verification has to be asked for by name.

Failures come in two kinds, because a caller handles them differently:
- `QueryError` (an `InputError`): the server refused the query (bad PromQL, too many points, a timeout on the
  server's side). Retrying the same query does not help; the message is Prometheus' own, with what to change.
- `PrometheusUnavailable`: the server could not be reached or answered 5xx / 429 after every retry. The query may
  succeed later; the exporter keeps its last values and retries with backoff.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from toto.validation import InputError

# Prometheus refuses a range query that would return more points per series than this (its maxPointsPerTimeseries).
MAX_POINTS_PER_SERIES = 11_000
# Answers worth retrying: the server is overloaded, restarting or behind a proxy that lost it.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
BEARER_TOKEN_ENV = "PROMETHEUS_BEARER_TOKEN"
USERNAME_ENV = "PROMETHEUS_USERNAME"
PASSWORD_ENV = "PROMETHEUS_PASSWORD"

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")


class QueryError(InputError):
    """Prometheus refused the query; its message says why."""


class PrometheusUnavailable(OSError):
    """Prometheus could not be reached, or kept answering that it cannot serve, after every retry."""


def parse_duration(text: str | float, what: str = "duration") -> float:
    """Seconds of a Prometheus duration ('5m', '1h30m', '7d', '90s') or of a number of seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        spelled = str(text).strip()
        parts = _DURATION.findall(spelled)
        if not parts or "".join(number + unit for number, unit in parts) != spelled:
            try:
                seconds = float(spelled)
            except ValueError:
                raise InputError(f"{what} {text!r} is not a duration: write it as Prometheus does, e.g. 30s, 5m, 1h30m,"
                                 " 7d") from None
        else:
            seconds = sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"{what} {text!r} must be a positive duration, e.g. 5m")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Prometheus spelling of a whole number of seconds ('5m', '1h30m'; '1.5s' below a second)."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, out = int(seconds), ""
    for unit in ("w", "d", "h", "m", "s"):
        size = int(_DURATION_UNITS[unit])
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out or "0s"


@dataclass(frozen=True)
class RangeSeries:
    """One label set of a range query's answer: its labels (with `__name__` when the query kept it) and its points,
    Unix seconds and float values (NaN where Prometheus returned NaN or an infinity)."""

    labels: dict[str, str]
    timestamps: np.ndarray  # (points,) float64 Unix seconds, increasing
    values: np.ndarray  # (points,) float64

    def __post_init__(self) -> None:
        # A NaN or infinite sample (a rate divided by zero) is a missing value to a forecaster.
        values = np.asarray(self.values, dtype=np.float64)
        object.__setattr__(self, "values", np.where(np.isfinite(values), values, np.nan))


@dataclass(frozen=True)
class Connection:
    """Where Prometheus is and how to talk to it. Credentials are read from the environment (module docstring)."""

    url: str
    timeout_s: float = 30.0
    retries: int = 3  # further tries after a connection failure or a retryable answer
    backoff_s: float = 0.5  # the first retry's wait; each next one doubles
    ca_file: str | None = None
    insecure_skip_verify: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.match(r"https?://[^/]", self.url):
            raise InputError(f"Prometheus URL {self.url!r} must start with http:// or https://, e.g."
                             " http://localhost:9090")
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise InputError("a Prometheus connection needs a positive timeout and non-negative retries and backoff")
        if self.ca_file is not None and not os.path.isfile(self.ca_file):
            raise InputError(f"CA file {self.ca_file} does not exist: give the PEM bundle that signed the server's"
                             " certificate")

    def auth(self) -> httpx.Auth | None:
        """Bearer token or basic auth from the environment; both set, or half of basic auth, is an error."""
        token = os.environ.get(BEARER_TOKEN_ENV)
        user, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
        if token and (user or password):
            raise InputError(f"both {BEARER_TOKEN_ENV} and {USERNAME_ENV}/{PASSWORD_ENV} are set: unset the one the"
                             " server does not use")
        if bool(user) != bool(password):
            raise InputError(f"basic auth needs both {USERNAME_ENV} and {PASSWORD_ENV}; only one is set")
        if token:
            return _BearerAuth(token)
        if user and password:
            return httpx.BasicAuth(user, password)
        return None

    def verify(self) -> bool | str:
        if self.insecure_skip_verify:
            return False
        return self.ca_file or True


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class PrometheusClient:
    """Range and instant queries against one server (see the module docstring for errors and credentials)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._http = httpx.Client(base_url=connection.url.rstrip("/"), auth=connection.auth(),
                                  verify=connection.verify(), timeout=connection.timeout_s,
                                  headers=dict(connection.headers))

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def query_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        """The query's series at `start`, `start + step`, ... up to `end` (Unix seconds). A range with more points
        than Prometheus serves per series (`MAX_POINTS_PER_SERIES`) is fetched in consecutive parts and joined."""
        if end < start:
            raise InputError(f"the range ends ({end:.0f}) before it starts ({start:.0f})")
        points = int(math.floor((end - start) / step + 1e-9)) + 1
        parts: dict[tuple[tuple[str, str], ...], list[tuple[np.ndarray, np.ndarray]]] = {}
        for first in range(0, points, MAX_POINTS_PER_SERIES):
            last = min(first + MAX_POINTS_PER_SERIES, points) - 1
            data = self._call("/api/v1/query_range", {
                "query": query, "start": _seconds(start + first * step), "end": _seconds(start + last * step),
                "step": _seconds(step),
            })
            if data.get("resultType") != "matrix":
                raise QueryError(f"the query {query!r} gives a {data.get('resultType')}, not series over time: give an"
                                 " expression of instant vectors, e.g. rate(http_requests_total[5m])")
            for item in data.get("result", []):
                if "histograms" in item:
                    raise QueryError(f"the query {query!r} returns native histograms, which are not numbers: query a"
                                     " histogram_quantile(...) or histogram_count(...) of them instead")
                pairs = item.get("values", [])
                timestamps = np.array([float(t) for t, _ in pairs], dtype=np.float64)
                values = np.array([float(v) for _, v in pairs], dtype=np.float64)
                key = tuple(sorted(item.get("metric", {}).items()))
                parts.setdefault(key, []).append((timestamps, values))
        out = []
        for key, pieces in parts.items():
            timestamps = np.concatenate([t for t, _ in pieces])
            out.append(RangeSeries(dict(key), timestamps, np.concatenate([v for _, v in pieces])))
        return out

    def query(self, query: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result items (`{"metric": {...}, "value": [t, "v"]}`), at `at` or now."""
        form = {"query": query} | ({"time": _seconds(at)} if at is not None else {})
        data = self._call("/api/v1/query", form)
        result = data.get("result", [])
        return result if isinstance(result, list) else []

    def _call(self, path: str, form: dict[str, str]) -> dict[str, Any]:
        """POST one API call, retrying what may succeed later; the answer's `data`."""
        connection = self.connection
        for attempt in range(connection.retries + 1):
            try:
                response = self._http.post(path, data=form)
            except httpx.TransportError as error:
                problem = f"cannot reach Prometheus at {connection.url} ({type(error).__name__}: {error})"
            else:
                if response.status_code not in RETRYABLE_STATUS and response.status_code < 500:
                    return _answer(response, form.get("query", ""), connection.url)
                problem = (f"Prometheus at {connection.url} answered {response.status_code}"
                           f" ({_error_text(response) or response.reason_phrase})")
            if attempt < connection.retries:
                time.sleep(connection.backoff_s * 2**attempt)
        raise PrometheusUnavailable(f"{problem}, after {connection.retries + 1} tries")


def _answer(response: httpx.Response, query: str, url: str) -> dict[str, Any]:
    """The `data` of a successful answer; a refused query is a QueryError in Prometheus' words."""
    if response.status_code in (401, 403):
        raise QueryError(f"Prometheus at {url} answered {response.status_code}: set {BEARER_TOKEN_ENV}, or"
                         f" {USERNAME_ENV} and {PASSWORD_ENV}, to credentials it accepts")
    if response.status_code == 404:
        raise QueryError(f"{url} has no Prometheus query API (404 for {response.request.url.path}): give the URL the"
                         " API lives under, e.g. http://host:9090 or http://mimir/prometheus")
    text = _error_text(response)
    if response.status_code != 200 or text is not None:
        raise QueryError(f"Prometheus refused the query {query!r}: {text or response.reason_phrase}")
    body = response.json()
    data = body.get("data")
    if not isinstance(data, dict):
        raise QueryError(f"Prometheus at {url} gave an answer without data for {query!r}")
    return data


def _error_text(response: httpx.Response) -> str | None:
    """Prometheus' own error message of an answer (`{"status": "error", "error": ...}`), if it has one."""
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("status") == "error":
        return str(body.get("error", "unknown error"))
    return None


def _seconds(value: float) -> str:
    """A time or step for the API, to the millisecond (Prometheus' resolution)."""
    return f"{round(value, 3):.3f}"
