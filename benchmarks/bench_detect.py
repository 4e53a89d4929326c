"""How fast anomaly detection scores values with the embedded model: a long series, a panel, and a stream.

    .venv/bin/python benchmarks/bench_detect.py [--repeats 3] [--threads 2]

- One long series: a year of 5-minute values (105,120 points: electricity load tiled, with noise), scored by
  `ForecastPipeline.detect` with the default settings (`steps_ahead` half a patch: 2 passes of toto-tiny), and with
  one pass (`steps_ahead` = the patch size). Reported: seconds and points per second, the model's passes apart.
- A panel: 1,000 series of a week at 5 minutes (2,016 points each), `detect` on all of them at once.
- A stream (`toto.streaming.StreamingDetector`): the cost of scoring one new patch (16 values) of a series whose
  history is 1,000 and 100,000 points long, median over 20 patches: it should not grow with the history.
Best (least disturbed) of --repeats runs; the machine is shared. Results go to docs/benchmarks.md ("detect").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from toto.anomaly.detector import DetectionSettings  # noqa: E402
from toto.pipeline import ForecastPipeline  # noqa: E402
from toto.streaming import StreamingDetector  # noqa: E402

YEAR_OF_5_MINUTES = 105_120
WEEK_OF_5_MINUTES = 2_016
PANEL_SERIES = 1_000


def series(length: int, seed: int) -> np.ndarray:
    """Hourly electricity load (examples/electricity_demand.csv) tiled to `length` values, with 1% noise."""
    load = pd.read_csv(REPO / "examples" / "electricity_demand.csv")["load"].to_numpy(dtype=float)
    tiled = np.tile(load, length // len(load) + 1)[:length]
    return tiled * (1 + 0.01 * np.random.default_rng(seed).standard_normal(length))


def best_seconds(run: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipeline = ForecastPipeline.from_pretrained("toto-tiny", device="cpu")
    patch = pipeline.patch_size
    rows = []

    year = series(YEAR_OF_5_MINUTES, 0)[None, None]
    for label, settings in (("default (2 passes)", DetectionSettings()),
                            ("one pass", DetectionSettings(steps_ahead=patch))):
        passes = best_seconds(lambda s=settings: pipeline.value_distributions(year, s.steps_ahead), args.repeats)
        whole = best_seconds(lambda s=settings: pipeline.detect(year, 300.0, s), args.repeats)
        rows.append([f"1 series x {YEAR_OF_5_MINUTES:,} points, {label}", f"{whole:.2f}",
                     f"{YEAR_OF_5_MINUTES / whole:,.0f}", f"{passes:.2f}"])

    panel = np.stack([series(WEEK_OF_5_MINUTES, seed)[None] for seed in range(PANEL_SERIES)])
    passes = best_seconds(lambda: pipeline.value_distributions(panel), args.repeats)
    whole = best_seconds(lambda: pipeline.detect(panel, 300.0), args.repeats)
    points = PANEL_SERIES * WEEK_OF_5_MINUTES
    rows.append([f"{PANEL_SERIES:,} series x {WEEK_OF_5_MINUTES:,} points", f"{whole:.2f}", f"{points / whole:,.0f}",
                 f"{passes:.2f}"])

    stream_rows = []
    for history in (1_000, 100_000):
        values = series(history + 20 * patch, 1)
        timestamps = 1_700_000_000 + 300 * np.arange(len(values))
        detector = StreamingDetector(pipeline, step_seconds=300)
        detector.update("s", timestamps[:history], values[:history])
        costs = []
        for i in range(20):
            chunk = slice(history + i * patch, history + (i + 1) * patch)
            started = time.perf_counter()
            detector.update("s", timestamps[chunk], values[chunk])
            costs.append(time.perf_counter() - started)
        stream_rows.append([f"{history:,}", f"{statistics.median(costs) * 1e3:.1f}", f"{min(costs) * 1e3:.1f}",
                            f"{detector.nbytes() / 2**20:.2f}"])

    when = time.strftime("%Y-%m-%d")
    text = (
        f"## Anomaly detection speed (toto-tiny)\n\nCommand: `{command_line()}`, {when}, torch {torch.__version__}, "
        f"{args.threads} thread(s); best of {args.repeats} runs.\n\n"
        + markdown_table(["scored", "seconds", "points per second", "of which the model's passes (s)"], rows)
        + "\n\nStreaming (`toto.streaming.StreamingDetector`): one new patch of "
        f"{patch} values, after a history of N points (20 patches, milliseconds):\n\n"
        + markdown_table(["history (points)", "median ms per patch", "best ms", "KV caches held (MiB)"],
                         stream_rows)
    )
    write_section("detect", text)
    print(text)


if __name__ == "__main__":
    main()
