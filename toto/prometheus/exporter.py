"""`toto exporter`: forecast and score the queries of a YAML file on a schedule, and serve the results on /metrics
for Prometheus to scrape, so that alert rules can use them (docs/prometheus.md, examples/prometheus/).

Every rule runs every `interval` (its step by default). A run reads the rule's query from Prometheus (the whole
`range` the first time, then only the steps since the last run), scores the new values of each series with the
streaming scorer (`toto.streaming.StreamingDetector`, whose cached state per series makes a run cost the new
points, not the whole history), and forecasts every series from its last `context_length` values through the
pipeline. It publishes, for every source series, with the series' labels (`__name__` dropped) and `rule`:

    toto:forecast_band:lower{level="0.98"}   the band of the next step at each configured level (and :upper)
    toto:forecast:median{horizon="6h"}       the median forecast at each configured horizon
    toto:anomaly:score                       the anomaly score of the series' latest value (in [0, 1])
    toto:anomaly:threshold                   the score from which a value is an anomaly at the rule's alert budget

The names follow Prometheus' `level:metric:operations` convention for derived series (as recording rules write
them): these are series computed from others, unlike the exporter's own health, which it publishes the way
exporters do: `toto_exporter_last_success_timestamp_seconds`, `toto_exporter_values_age_seconds`,
`toto_exporter_run_duration_seconds`, `toto_exporter_errors_total{kind}` and `toto_exporter_series`, per rule. A
source label that clashes with the exporter's (`rule`, `level`, `horizon`) is kept as `exported_<name>`, as
Prometheus does on scrape.

Nothing a source does stops the exporter: a refused query, an unreachable server, too many series or a failure
inside a run is logged on one line and counted; the rule keeps serving its last good values (with their age) and
retries with backoff, doubling from `RETRY_START_S` up to its interval.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from toto.anomaly.detector import DetectionSettings
from toto.pipeline import ForecastPipeline
from toto.prometheus.client import PrometheusClient, PrometheusUnavailable, QueryError, RangeSeries, format_duration
from toto.prometheus.config import ExporterConfig, Rule
from toto.prometheus.reading import TooManySeries, check_series_count, too_many_series
from toto.streaming import StreamingDetector
from toto.tables import Panel, Series
from toto.validation import InputError

log = logging.getLogger("toto.exporter")

# The first retry after a failed run waits this long; each further failure doubles it, up to the rule's interval.
RETRY_START_S = 5.0
RESERVED_LABELS = ("rule", "level", "horizon")
RUN_SECONDS_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

SeriesKey = tuple[tuple[str, str], ...]  # a source series' sorted labels


@dataclass(frozen=True)
class SeriesOutput:
    """What the exporter publishes for one source series."""

    labels: dict[str, str]  # the exported labels: the source's (renamed where they clash) and `rule`
    bands: dict[float, tuple[float, float]]  # level -> (lower, upper) of the next step
    medians: dict[str, float]  # horizon, as written ("6h") -> the median forecast there
    score: float  # the anomaly score of the latest scored value; NaN before the first one
    threshold: float


@dataclass(frozen=True)
class RuleOutput:
    series: list[SeriesOutput]
    computed_at: float  # Unix seconds, when the run that made it ended


@dataclass
class _SeriesState:
    context: np.ndarray  # the last values on the rule's grid, up to its last step read; NaN where missing
    score: float = math.nan
    last_seen: float = -math.inf  # the step of its latest finite value


class RuleRunner:
    """One rule's state across runs: where its reading got to, each series' recent values and scorer state."""

    def __init__(self, rule: Rule, pipeline: ForecastPipeline, client: PrometheusClient, context_length: int,
                 batch_size: int, memory_budget_bytes: int) -> None:
        self.rule = rule
        self.pipeline = pipeline
        self.client = client
        self.context_length = context_length
        self.batch_size = batch_size
        self.settings = DetectionSettings(alerts_per_day=rule.alerts_per_day)
        self.threshold = 1.0 - self.settings.alarm_rate(rule.step)
        self.detector = StreamingDetector(pipeline, step_seconds=round(rule.step), settings=self.settings,
                                          memory_budget_bytes=memory_budget_bytes, bands=False)
        self.series: dict[SeriesKey, _SeriesState] = {}
        self.read_until: float | None = None  # the last step read
        self.output: RuleOutput | None = None

    def run(self, now: float) -> RuleOutput:
        """Read what is new up to `now`, score it, forecast every series and return what to publish."""
        rule, step = self.rule, self.rule.step
        end = math.floor(now / step) * step
        check_series_count(self.client, rule.query, end, rule.max_series)
        if self.read_until is None or end - self.read_until >= rule.range:  # the first run, or after a long outage
            start = end - (rule.points - 1) * step
            for state in self.series.values():
                state.context = np.empty(0)  # what came before is not next to the new range
        else:
            start = self.read_until + step
        if start > end and self.output is not None:  # no new step since the last run: nothing changed
            return self.output
        if start <= end:
            found = self.client.query_range(rule.query, start, end, step)
            if len(found) > rule.max_series:
                raise too_many_series(rule.query, len(found), rule.max_series)
            released = self.detector.released
            self._read(found, start, end)
            if self.detector.released > released:
                log.warning("rule %s: the anomaly scorer's state of %d series is over its memory budget: %d caches"
                            " were dropped and are rebuilt when next needed (slower runs); raise"
                            " limits.memory_budget_gib, or split the rules over several exporters", rule.name,
                            len(self.series), self.detector.released - released)
            self.read_until = end
        self.output = RuleOutput(self._forecast(end), time.time())
        return self.output

    def _read(self, found: list[RangeSeries], start: float, end: float) -> None:
        """Append the steps [start, end] to every series' context (NaN where it has no value), score the new values,
        and forget series silent for a whole range."""
        step = self.rule.step
        steps = int(round((end - start) / step)) + 1
        fresh: dict[SeriesKey, np.ndarray] = {}
        for item in found:
            slot = np.round((item.timestamps - start) / step).astype(np.int64)
            inside = (slot >= 0) & (slot < steps)
            new = fresh.setdefault(tuple(sorted(item.labels.items())), np.full(steps, np.nan))
            new[slot[inside]] = item.values[inside]
        for key in fresh.keys() - self.series.keys():
            self.series[key] = _SeriesState(np.empty(0))
        for key, state in list(self.series.items()):
            new = fresh.get(key, np.full(steps, np.nan))
            observed = np.flatnonzero(np.isfinite(new))
            if len(observed):
                timestamps = start + step * observed
                scores = self.detector.update(key, timestamps, new[observed]).detection.anomaly_score[0, 0]
                finite = np.flatnonzero(np.isfinite(scores))
                if len(finite):
                    state.score = float(scores[finite[-1]])
                state.last_seen = float(timestamps[-1])
            elif state.last_seen < end - self.rule.range:
                del self.series[key]
                self.detector.forget(key)
                continue
            state.context = np.concatenate([state.context, new])[-self.context_length :]

    def _forecast(self, end: float) -> list[SeriesOutput]:
        """Forecast every series from its context, through the pipeline; the band of the next step and the medians
        at the horizons."""
        rule, step = self.rule, self.rule.step
        keys = [key for key, state in self.series.items() if np.isfinite(state.context).any()]
        if not keys:
            return []
        length = min(self.context_length, max(len(self.series[key].context) for key in keys))
        index = pd.date_range(pd.Timestamp(end - (length - 1) * step, unit="s"), periods=length,
                              freq=pd.Timedelta(seconds=step), unit="s")
        series = [Series(i, ["value"], index, _ending_at(self.series[key].context, length)[None])
                  for i, key in enumerate(keys)]
        horizons = rule.horizon_steps()
        levels = rule.quantile_levels()
        table = self.pipeline.predict_panel(Panel(series, "timestamp", "id"), max([1, *horizons]), quantiles=levels,
                                            batch_size=self.batch_size, context_length=self.context_length)
        table = table.sort_values(["id", "timestamp"], kind="stable")
        prediction_length = max([1, *horizons])
        quantiles = {level: table[str(float(level))].to_numpy().reshape(len(keys), prediction_length)
                     for level in levels}
        out = []
        for i, key in enumerate(keys):
            bands = {level: (float(quantiles[round((1 - level) / 2, 12)][i, 0]),
                             float(quantiles[round((1 + level) / 2, 12)][i, 0])) for level in rule.band_levels}
            medians = {format_duration(h * step): float(quantiles[0.5][i, h - 1]) for h in horizons}
            out.append(SeriesOutput(exported_labels(dict(key), rule.name), bands, medians, self.series[key].score,
                                    self.threshold))
        return out


def _ending_at(values: np.ndarray, length: int) -> np.ndarray:
    """The last `length` of `values`, NaN-padded in front when there are fewer."""
    if len(values) >= length:
        return values[len(values) - length :]
    return np.concatenate([np.full(length - len(values), np.nan), values])


def exported_labels(source: dict[str, str], rule: str) -> dict[str, str]:
    """A source series' labels as published: without `__name__`, clashing names as `exported_<name>`, plus `rule`."""
    labels = {(f"exported_{name}" if name in RESERVED_LABELS else name): value
              for name, value in source.items() if name != "__name__"}
    return labels | {"rule": rule}


@dataclass
class _Schedule:
    runner: RuleRunner
    next_run: float = 0.0
    failures: int = 0


class _Outputs(Collector):
    """The rules' latest good outputs as metric families, built at each scrape."""

    def __init__(self, schedules: Iterable[_Schedule]) -> None:
        self.schedules = list(schedules)

    def collect(self) -> Iterator[Metric]:
        lower = Metric("toto:forecast_band:lower", "Lower end of the next step's central forecast band at `level`",
                       "gauge")
        upper = Metric("toto:forecast_band:upper", "Upper end of the next step's central forecast band at `level`",
                       "gauge")
        median = Metric("toto:forecast:median", "Median forecast `horizon` ahead of the latest step", "gauge")
        score = Metric("toto:anomaly:score", "Anomaly score of the series' latest value, in [0, 1]", "gauge")
        threshold = Metric("toto:anomaly:threshold", "Anomaly score from which a value is flagged at the rule's alert"
                           " budget", "gauge")
        for schedule in self.schedules:
            output = schedule.runner.output
            for series in output.series if output else ():
                for level, (low, high) in series.bands.items():
                    lower.add_sample(lower.name, series.labels | {"level": f"{level:g}"}, low)
                    upper.add_sample(upper.name, series.labels | {"level": f"{level:g}"}, high)
                for horizon, value in series.medians.items():
                    median.add_sample(median.name, series.labels | {"horizon": horizon}, value)
                if math.isfinite(series.score):
                    score.add_sample(score.name, series.labels, series.score)
                    threshold.add_sample(threshold.name, series.labels, series.threshold)
        yield from (lower, upper, median, score, threshold)


class _Health:
    """The exporter's own metrics, per rule."""

    def __init__(self, registry: CollectorRegistry, schedules: list[_Schedule]) -> None:
        self.last_success = Gauge("toto_exporter_last_success_timestamp_seconds",
                                  "When the rule's last successful run ended", ["rule"], registry=registry)
        self.duration = Histogram("toto_exporter_run_duration_seconds", "Duration of the rule's runs, failed or not",
                                  ["rule"], registry=registry, buckets=RUN_SECONDS_BUCKETS)
        self.errors = Counter("toto_exporter_errors", "Failed runs by kind: query (refused), unavailable (server"
                              " unreachable), limit (too many series), internal", ["rule", "kind"], registry=registry)
        self.series = Gauge("toto_exporter_series", "Series the rule publishes", ["rule"], registry=registry)
        age = Gauge("toto_exporter_values_age_seconds", "Age of the values the rule publishes (since the run that"
                    " made them)", ["rule"], registry=registry)
        for schedule in schedules:
            name = schedule.runner.rule.name
            age.labels(name).set_function(functools.partial(_age, schedule.runner))
            for kind in ("query", "unavailable", "limit", "internal"):
                self.errors.labels(name, kind)  # exported as 0 from the start, so that rate() sees the first error


def _age(runner: RuleRunner) -> float:
    return time.time() - runner.output.computed_at if runner.output else math.nan


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in flight does not hold the process at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the standard library's name
        """Scrapes are not worth a log line each."""


@dataclass
class Exporter:
    """The rules of `config`, their schedule and the registry that serves their results (module docstring)."""

    config: ExporterConfig
    pipeline: ForecastPipeline
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        config = self.config
        self.client = PrometheusClient(config.prometheus.connection())
        context_length = self.pipeline.context_length
        budget = int(config.limits.memory_budget_gib * 2**30 / len(config.rules))
        self.schedules = [_Schedule(RuleRunner(rule, self.pipeline, self.client, context_length,
                                               config.model.batch_size, budget)) for rule in config.rules]
        self.registry.register(_Outputs(self.schedules))
        self.health = _Health(self.registry, self.schedules)

    def run_due(self, now: float | None = None) -> float:
        """Run every rule whose time has come; returns when the next one is due."""
        now = time.time() if now is None else now
        for schedule in self.schedules:
            if schedule.next_run <= now:
                self._run(schedule)
        return min(schedule.next_run for schedule in self.schedules)

    def run_all(self) -> None:
        """Run every rule now, whatever its schedule (the first run at start, benchmarks, tests)."""
        for schedule in self.schedules:
            self._run(schedule)

    def _run(self, schedule: _Schedule) -> None:
        runner, rule = schedule.runner, schedule.runner.rule
        started = time.time()
        try:
            output = runner.run(started)
        except Exception as error:  # noqa: BLE001 - a rule's failure must not stop the others or the server
            kind = _kind(error)
            self.health.errors.labels(rule.name, kind).inc()
            schedule.failures += 1
            retry = min(rule.every, RETRY_START_S * 2 ** (schedule.failures - 1))
            schedule.next_run = time.time() + retry
            kept = (f"serving the values of {format_duration(round(_age(runner)))} ago" if runner.output
                    else "nothing to serve yet")
            log.warning("rule %s: %s error: %s; %s; retrying in %s", rule.name, kind, _one_line(error), kept,
                        format_duration(retry))
        else:
            schedule.failures = 0
            schedule.next_run = (math.floor(started / rule.every) + 1) * rule.every
            self.health.last_success.labels(rule.name).set(time.time())
            self.health.series.labels(rule.name).set(len(output.series))
            log.info("rule %s: %d series in %.1f s", rule.name, len(output.series), time.time() - started)
        finally:
            self.health.duration.labels(rule.name).observe(time.time() - started)

    def serve(self) -> tuple[WSGIServer, threading.Thread]:
        """Serve /metrics on the configured address; returns the server (its `shutdown()` stops it) and thread.

        Always in Prometheus' classic text format: prometheus_client 0.26 writes the samples of a name with colons
        with underscores instead in OpenMetrics (not in their TYPE lines), which Prometheus would then drop; the
        text format keeps the names, and every Prometheus reads it."""
        metrics = make_wsgi_app(self.registry)

        def classic_text(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            return metrics({key: value for key, value in environ.items() if key != "HTTP_ACCEPT"}, start_response)

        listen = self.config.listen
        server = make_server(listen.address, listen.port, classic_text, _ThreadingServer, _QuietHandler)
        thread = threading.Thread(target=server.serve_forever, name="toto-exporter-http", daemon=True)
        thread.start()
        return server, thread

    def run_forever(self, stop: threading.Event) -> None:
        """Run the rules on their schedule until `stop` is set."""
        while not stop.is_set():
            next_run = self.run_due()
            stop.wait(max(0.0, next_run - time.time()))

    def close(self) -> None:
        self.client.close()


def _kind(error: Exception) -> str:
    if isinstance(error, PrometheusUnavailable):
        return "unavailable"
    if isinstance(error, TooManySeries):
        return "limit"
    if isinstance(error, (QueryError, InputError)):
        return "query"
    return "internal"


def _one_line(error: Exception) -> str:
    """The error on one line; an unexpected one with its type, which says more than its message alone."""
    text = str(error) if isinstance(error, (InputError, OSError)) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())
