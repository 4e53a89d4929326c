"""Series per second of batch forecasting (toto.batch) with 1 and 2 processes, on a synthetic long panel.

    .venv/bin/python benchmarks/bench_batch_forecast.py [--series 20000]

The panel: `--series` hourly series of `--length` steps with daily cycles and noise, in one Parquet file, each
series' rows together. Each run forecasts 24 steps with the embedded toto-tiny (8 sample paths, context 128)
into a fresh output folder; the time includes starting the processes and loading the model. Results go to the
"batch-forecast" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from toto.batch import BatchJob, forecast_files, read_parts  # noqa: E402

OPTIONS = {"num_samples": 8, "context_length": 128, "batch_size": 64, "seed": 0}


def write_panel(path: Path, num_series: int, length: int) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(length)
    index = pd.date_range("2026-01-01", periods=length, freq="h")
    frames = []
    for i in range(num_series):
        cycle = 20 * rng.random() * np.sin(2 * np.pi * t / 24 + rng.random() * 6)
        values = 50 + cycle + rng.normal(0, 1, length).cumsum()
        frames.append(pd.DataFrame({"id": f"s{i:06d}", "timestamp": index, "value": values.astype(np.float32)}))
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_panel(tmp / "panel.parquet", args.series, args.length)
        results = {}
        for devices in args.devices:
            job = BatchJob(input_path=tmp / "panel.parquet", output_dir=tmp / f"out-{devices}", prediction_length=24,
                           series_per_part=512, forecast_options=OPTIONS)
            started = time.perf_counter()
            forecast_files(job, devices=devices)
            seconds = time.perf_counter() - started
            results[devices] = read_parts(job.output_dir)
            rows.append([devices, args.series, f"{seconds:.1f}", f"{args.series / seconds:.1f}",
                         f"{os.getloadavg()[0]:.1f}"])
            print(rows[-1], flush=True)
        first = results[args.devices[0]]
        same = all(np.allclose(first["median"], r["median"]) for r in results.values())
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    write_section("batch-forecast", "\n".join([
        "## Batch forecasting of a large panel (toto.batch), 1 and 2 processes",
        "",
        f"Machine: {cpu}-core CPU. Command: `{command_line()}`. toto-tiny, {OPTIONS}, horizon 24, "
        f"{args.length} hourly steps per series, 512 series per part. Same forecasts for every process count: "
        f"{same}.",
        "",
        markdown_table(["processes", "series", "seconds", "series / s", "load average after"], rows),
    ]))


if __name__ == "__main__":
    main()
