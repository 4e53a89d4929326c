"""Throughput and latency of the forecasting service, with batching on and off.

    .venv/bin/python benchmarks/bench_serve.py            # full run (the lead reruns it on a quiet machine)
    .venv/bin/python benchmarks/bench_serve.py --quick    # smoke run

For each setting of TOTO_SERVE_DTYPE (float32, bfloat16) and TOTO_SERVE_BATCHING a real server is started on 127.0.0.1
(`serve.local`) and warmed up with a few requests, then 1, 8 and 32 concurrent clients send `--requests` requests in
all (each client its share, one after the other, so that every setting is timed over as many requests), `--repeats`
times, the fastest run reported: one weekly CO2 series (statsmodels) per request, each client its own stretch and seed.
Reported: requests per second, p50 and p99 latency, and the peak resident memory of the server's processes (arbiter,
worker and model process, sampled every 0.1 s). Goal: with batching, 32 clients get at least 4x the requests per second
of one client calling sequentially, counted against the best single-client rate (the higher of the batching-on and
batching-off runs, since a lone client may be served faster without the batching queue), for each dtype. Results go to
docs/benchmarks.md and docs/serve_benchmark.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

import aiohttp
import matplotlib
import numpy as np
from statsmodels.datasets import co2
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script, still import benchmarks.report
from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from benchmarks.sampling import PeakMemory  # noqa: E402
from serve.local import local_server  # noqa: E402
from serve.settings import ServeSettings  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CLIENTS = (1, 8, 32)
GOAL = 4.0
JSON_HEADERS = {"content-type": "application/json"}
PLOT = Path(__file__).resolve().parents[1] / "docs" / "serve_benchmark.png"


def make_request(series: np.ndarray, client: int, args: argparse.Namespace) -> dict:
    start = (client * 97) % (len(series) - args.context)
    window = series[start:start + args.context]
    return {"series": [{"variates": {"co2": [None if np.isnan(v) else float(v) for v in window]}}],
            "prediction_length": args.horizon, "num_samples": args.num_samples, "seed": client}


async def load(url: str, clients: int, rounds: int, series: np.ndarray, args: argparse.Namespace
               ) -> tuple[float, list[float]]:
    """`clients` concurrent clients, each sending `rounds` requests in turn; returns (wall seconds, latencies).

    The clients share the server's cores, so the load generator must cost as little CPU as it can: aiohttp with
    each client's body encoded once. (httpx, with the body encoded per request, took 2.9 ms of CPU a request at
    32 clients, against 1.6 ms in the server's BentoML worker: a tenth of the machine at 70 requests/s.)
    """
    latencies: list[float] = []

    async def one_client(http: aiohttp.ClientSession, client: int) -> None:
        body = json.dumps(make_request(series, client, args)).encode()
        for _ in range(rounds):
            start = time.perf_counter()
            async with http.post("/forecast", data=body, headers=JSON_HEADERS) as response:
                response.raise_for_status()
                await response.read()
            latencies.append(time.perf_counter() - start)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(one_client(http, c) for c in range(clients)))
        return time.perf_counter() - start, latencies


def run_setting(dtype: str, batching: bool, series: np.ndarray, args: argparse.Namespace, workdir: Path
                ) -> list[dict]:
    env = {"TOTO_SERVE_CHECKPOINT": args.checkpoint, "TOTO_SERVE_BATCHING": batching, "TOTO_SERVE_DTYPE": dtype}
    rows = []
    with local_server(workdir / f"{dtype}-{batching}", env) as server, PeakMemory(server.pid) as memory:
        asyncio.run(load(server.url, 4, 2, series, args))  # warm-up: first calls pay for lazy initialisation
        for clients in tqdm(CLIENTS, desc=f"{dtype}, batching {'on' if batching else 'off'}", unit="setting"):
            rounds = max(1, args.requests // clients)
            runs = [asyncio.run(load(server.url, clients, rounds, series, args)) for _ in range(args.repeats)]
            wall, latencies = min(runs, key=lambda run: run[0])  # the least disturbed run (the machine is shared)
            rows.append({"dtype": dtype, "batching": batching, "clients": clients, "requests": len(latencies),
                         "rps": len(latencies) / wall, "p50": 1e3 * float(np.percentile(latencies, 50)),
                         "p99": 1e3 * float(np.percentile(latencies, 99))})
        for row in rows:
            row["peak_mib"] = memory.peak / 2**20
    return rows


def plot(rows: list[dict], path: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    for (dtype, batching), style in zip([(d, b) for d in dtypes for b in (True, False)], ("o-", "s--", "^-", "v--")):
        mine = [r for r in rows if r["dtype"] == dtype and r["batching"] is batching]
        label = f"{dtype}, batching {'on' if batching else 'off'}"
        left.plot([r["clients"] for r in mine], [r["rps"] for r in mine], style, label=label)
        right.plot([r["clients"] for r in mine], [r["p99"] for r in mine], style, label=label)
    for axis, title in ((left, "requests per second"), (right, "p99 latency (ms)")):
        axis.set(xscale="log", xticks=CLIENTS, xticklabels=CLIENTS, xlabel="concurrent clients", title=title)
        axis.legend()
    figure.suptitle("POST /forecast, one series per request")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def verdict(dtype: str, rows: list[dict]) -> str:
    """The goal, for one dtype: 32 clients with batching against the best single-client rate of that dtype."""
    rps = {(r["batching"], r["clients"]): r["rps"] for r in rows if r["dtype"] == dtype}
    sequential_batching = max((False, True), key=lambda batching: rps[batching, 1])
    sequential = rps[sequential_batching, 1]
    speedup = rps[True, 32] / sequential
    return (
        f"- {dtype}: best single-client rate {sequential:.1f} requests/s (batching "
        f"{'on' if sequential_batching else 'off'}). Batching at 32 clients serves **{speedup:.1f}x** that rate "
        f"(goal {GOAL:.0f}x: {'met' if speedup >= GOAL else 'NOT met'}); against the single client with batching "
        f"on it is {rps[True, 32] / rps[True, 1]:.1f}x, and without batching 32 clients get "
        f"{rps[False, 32] / rps[False, 1]:.1f}x.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="toto-tiny", help="TOTO_SERVE_CHECKPOINT for the server")
    parser.add_argument("--requests", type=int, default=256, help="requests per setting, shared by its clients")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting; the fastest is reported")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--horizon", type=int, default=64)
    parser.add_argument("--num-samples", type=int, default=100)
    dtypes = get_args(ServeSettings.model_fields["dtype"].annotation)
    parser.add_argument("--dtypes", nargs="+", default=list(dtypes), choices=dtypes,
                        help="TOTO_SERVE_DTYPE settings to run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 requests, short context and horizon")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.repeats, args.context, args.horizon, args.num_samples = 64, 1, 256, 32, 32

    series = co2.load_pandas().data["co2"].to_numpy(dtype=float)
    with tempfile.TemporaryDirectory() as workdir:
        rows = [row for dtype in args.dtypes for batching in (True, False)
                for row in run_setting(dtype, batching, series, args, Path(workdir))]

    table = markdown_table(
        ["dtype", "batching", "clients", "requests", "requests/s", "p50 ms", "p99 ms", "server peak RSS MiB"],
        [[r["dtype"], "on" if r["batching"] else "off", r["clients"], r["requests"], f"{r['rps']:.1f}",
          f"{r['p50']:.0f}", f"{r['p99']:.0f}", f"{r['peak_mib']:.0f}"] for r in rows],
    )
    plot(rows, PLOT)
    markdown = (
        "## Forecasting service: throughput and latency\n\n"
        f"Command: `{command_line()}`. Checkpoint `{args.checkpoint}`, one weekly CO2 series per request "
        f"(context {args.context}, horizon {args.horizon}, {args.num_samples} samples), clients and server on the "
        f"same machine. Plot: [serve_benchmark.png](serve_benchmark.png).\n\n{table}\n\n"
        + "".join(verdict(dtype, rows) for dtype in args.dtypes)
    )
    write_section("serve", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
