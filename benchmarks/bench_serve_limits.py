"""The largest requests the service's default limits allow: answered or refused with a 413, never knocked over.

    .venv/bin/python benchmarks/bench_serve_limits.py            # default settings (the lead's record)
    .venv/bin/python benchmarks/bench_serve_limits.py --quick    # smoke run: shorter context and horizon

A real server (`serve.local`) runs with the default settings (only the checkpoint can be changed), and receives,
one case after the other, the requests issue 11 found knocking the worker over:
- the largest single series: 64 variates, context 4096, horizon 1024, 256 samples (without and with the samples);
- 64 short series, horizon 1024, 1024 samples, samples returned (a 4.8 KB body);
- 8 concurrent mid-sized requests (8 variates, context 4096, horizon 16, 256 samples) that batching merges.
For each: status codes, seconds, the refusal's message, the server's peak RSS (arbiter and worker, sampled every
0.1 s) and /readyz probed every 0.5 s throughout (failures, slowest probe). Goal: every request answered or refused
with a 413 naming the limit, peak RSS under 8 GB, /readyz healthy throughout. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from statsmodels.datasets import co2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script, still import benchmarks.*
from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from benchmarks.sampling import PeakMemory, PeriodicSampler  # noqa: E402
from serve.local import local_server  # noqa: E402
from serve.settings import ServeSettings  # noqa: E402

RSS_GOAL_BYTES = 8 * 10**9


class ReadyProbe(PeriodicSampler):
    """GET /readyz every `every_s` seconds: failures and the slowest answer."""

    def __init__(self, url: str, every_s: float = 0.5) -> None:
        super().__init__(every_s)
        self.url = url
        self.probes = self.failures = 0
        self.slowest_s = 0.0

    def sample(self) -> None:
        start = time.perf_counter()
        try:
            healthy = httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            healthy = False
        self.probes += 1
        self.failures += not healthy
        self.slowest_s = max(self.slowest_s, time.perf_counter() - start)


def series(values: np.ndarray, variates: int, length: int, offset: int = 0) -> dict:
    """`variates` stretches of weekly CO2 (NaN as null), each from its own start, as one series."""
    columns = {}
    for v in range(variates):
        start = (offset + 53 * v) % (len(values) - length)
        columns[f"v{v}"] = [None if np.isnan(x) else float(x) for x in values[start:start + length]]
    return {"variates": columns}


def cases(values: np.ndarray, limits: ServeSettings, quick: bool) -> dict[str, list[dict]]:
    context = 512 if quick else limits.max_context_length
    horizon = 64 if quick else limits.max_prediction_length
    largest = {"series": [series(values, limits.max_variates, context)], "prediction_length": horizon,
               "num_samples": 256, "seed": 0}
    short = [series(values, 1, 16, offset=i) for i in range(limits.max_series)]
    return {
        f"1 x {limits.max_variates} x {context}, horizon {horizon}, 256 samples": [largest],
        "the same, samples returned": [{**largest, "return_samples": True}],
        f"{limits.max_series} x 1 x 16, horizon {horizon}, {limits.max_num_samples} samples, samples returned": [
            {"series": short, "prediction_length": horizon, "num_samples": limits.max_num_samples,
             "return_samples": True, "seed": 0}],
        f"8 concurrent requests of 1 x 8 x {context}, horizon 16, 256 samples": [
            {"series": [series(values, 8, context, offset=97 * i)], "prediction_length": 16, "num_samples": 256,
             "seed": i} for i in range(8)],
    }


async def send(url: str, bodies: list[dict], timeout_s: float) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as http:
        return list(await asyncio.gather(*(http.post("/forecast", json=body) for body in bodies)))


def _error(answer: httpx.Response) -> str:
    """The refusal's message: the `error` of a JSON body, else the start of the body."""
    try:
        return str(answer.json()["error"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:300]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="toto-tiny", help="TOTO_SERVE_CHECKPOINT for the server")
    parser.add_argument("--quick", action="store_true", help="smoke run: context 512, horizon 64")
    args = parser.parse_args()
    defaults = ServeSettings(_env_file=None)
    # Weekly CO2 (2,284 weeks) repeated three times, so that stretches reach the context limit.
    values = np.tile(co2.load_pandas().data["co2"].to_numpy(dtype=float), 3)
    rows = []
    with (tempfile.TemporaryDirectory() as workdir,
          local_server(Path(workdir), {"TOTO_SERVE_CHECKPOINT": args.checkpoint}) as server):
        for name, bodies in cases(values, defaults, args.quick).items():
            start = time.perf_counter()
            with PeakMemory(server.pid) as memory, ReadyProbe(server.url) as probe:
                answers = asyncio.run(send(server.url, bodies, defaults.timeout_s + 60))
            seconds = time.perf_counter() - start
            refusals = [_error(a) for a in answers if a.status_code != 200]
            statuses = sorted({a.status_code for a in answers})
            rows.append({"case": name, "status": statuses, "seconds": seconds, "peak": memory.peak,
                         "probes": probe.probes, "failures": probe.failures, "slowest": probe.slowest_s,
                         "message": refusals[0] if refusals else ""})
            print({key: value for key, value in rows[-1].items() if key != "message"}, flush=True)
    ok = all(set(r["status"]) <= {200, 413} and r["peak"] < RSS_GOAL_BYTES and not r["failures"] for r in rows)
    table = markdown_table(
        ["request", "status", "seconds", "server peak RSS MiB", "/readyz probes (failed)", "slowest probe s"],
        [[r["case"], ", ".join(map(str, r["status"])), f"{r['seconds']:.1f}", f"{r['peak'] / 2**20:,.0f}",
          f"{r['probes']} ({r['failures']})", f"{r['slowest']:.2f}"] for r in rows],
    )
    messages = "\n".join(f"- {r['case']}: \"{r['message']}\"" for r in rows if r["message"])
    markdown = (
        "## Forecasting service: the largest requests the default limits allow\n\n"
        f"Command: `{command_line()}`. Checkpoint `{args.checkpoint}`, every other setting at its default "
        f"(memory budget {defaults.memory_budget_bytes / 2**30:g} GiB, timeout {defaults.timeout_s} s); weekly "
        f"CO2 stretches (the series repeated three times) as variates.\n\n{table}\n\n"
        + (f"Refusals:\n{messages}\n\n" if messages else "")
        + f"Goal (answered or 413, peak RSS under 8 GB, /readyz healthy throughout): {'met' if ok else 'NOT met'}.\n"
    )
    write_section("serve-limits", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
