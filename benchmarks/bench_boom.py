"""BOOM evaluation throughput: configurations per minute for each forecaster, through the real `boom eval` runner.

    .venv/bin/python benchmarks/bench_boom.py            # all forecasters, published Toto settings
    .venv/bin/python benchmarks/bench_boom.py --quick    # smoke run: seasonal naive, AutoETS, Toto with 16 samples
    .venv/bin/python benchmarks/bench_boom.py --data ~/boom_data --subset boomlet   # on real BOOM series

By default it runs on the tests' sample dataset (two real series in the hub layout, four configurations: one
30-minute bivariate short-term series, one daily univariate series at all three terms). Each forecaster
evaluates every configuration from scratch (model loading excluded; loading data, forecasting and metrics
included). Results go to the `boom` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # benchmarks.report, and the tests' sample dataset

from boom_fixtures import write_sample_boom  # noqa: E402

from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from boom import data, forecasters  # noqa: E402
from boom.evaluate import run  # noqa: E402


def _forecasters(args: argparse.Namespace) -> list[tuple[str, forecasters.Forecaster]]:
    samples = 16 if args.quick else args.num_samples
    toto = forecasters.toto(args.checkpoint, context_length=args.context_length, num_samples=samples,
                            device=args.device)
    names = ["seasonalnaive", "autoets"] if args.quick else list(forecasters.CLASSICAL)
    chosen = [(name, forecasters.classical(name, forecasters.CLASSICAL[name], args.context_length))
              for name in names]
    return [*chosen, (f"toto ({args.checkpoint}, {samples} samples)", toto)]


def metrics_speed(windows: int = 20, variates: int = 50, samples: int = 256, horizon: int = 48) -> list[object]:
    """Seconds to score one large configuration: `boom.metrics.evaluate` against GluonTS's `evaluate_forecasts`."""
    import numpy as np
    import pandas as pd
    from gluonts.dataset.split import split
    from gluonts.model import evaluate_forecasts
    from gluonts.model.forecast import SampleForecast

    from boom.metrics import METRICS, evaluate

    rng = np.random.default_rng(0)
    entries = [{"item_id": f"v{k}", "start": pd.Period("2024-01-01", "h"),
                "target": rng.normal(size=3000).astype(np.float32)} for k in range(variates)]
    _, template = split(entries, offset=-horizon * windows)
    test_data = template.generate_instances(prediction_length=horizon, windows=windows, distance=horizon)
    draws = [rng.normal(size=(samples, horizon)).astype(np.float32) for _ in test_data.label]
    seconds = []
    for score in (lambda f: evaluate(f, test_data, 24),
                  lambda f: evaluate_forecasts(f, test_data=test_data, metrics=METRICS, axis=None, seasonality=24)):
        forecasts = [SampleForecast(d, start_date=label["start"]) for d, label in zip(draws, test_data.label)]
        start = time.perf_counter()
        score(forecasts)
        seconds.append(time.perf_counter() - start)
    shape = f"{windows} windows x {variates} variates x {samples} samples x {horizon} steps"
    return [shape, f"{seconds[0]:.2f}", f"{seconds[1]:.2f}", f"{seconds[1] / seconds[0]:.1f}x"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer forecasters and samples")
    parser.add_argument("--data", help="BOOM folder to run on (default: the tests' sample dataset)")
    parser.add_argument("--subset", choices=["boom", "boomlet"], default="boom")
    parser.add_argument("--checkpoint", default="toto-tiny", help="Toto checkpoint (folder, name or hub id)")
    parser.add_argument("--context-length", type=int, default=forecasters.DEFAULT_CONTEXT_LENGTH)
    parser.add_argument("--num-samples", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data) if args.data else write_sample_boom(Path(tmp) / "data")
        configs = data.configurations(data.load_properties(data_dir, subset=args.subset))
        rows = []
        for label, forecaster in _forecasters(args):
            start = time.perf_counter()
            summary = run(forecaster, data_dir, configs, Path(tmp) / "results", progress=False)
            seconds = time.perf_counter() - start
            done = len(summary.evaluated)
            rows.append([label, done, len(summary.failed), f"{seconds:.1f}", f"{60 * done / seconds:.1f}"])
            print(f"{label}: {done} configurations in {seconds:.1f} s ({60 * done / seconds:.1f}/min)", flush=True)

    dataset = f"`{args.data}` ({args.subset})" if args.data else "the tests' sample dataset (4 configurations)"
    machine = f"{platform.machine()} CPU x{torch.get_num_threads()} threads" if args.device == "cpu" else args.device
    markdown = (
        f"## BOOM evaluation throughput{' (quick smoke run)' if args.quick else ''}\n\n"
        f"Configurations per minute through `boom.evaluate.run` on {dataset}; context {args.context_length}; "
        f"{machine}, torch {torch.__version__}. Command: `{command_line()}`\n\n"
        + markdown_table(["forecaster", "configurations", "failed", "seconds", "configurations / min"], rows)
        + "\n\nScoring one large configuration (random forecasts), vectorised `boom.metrics.evaluate` against "
        "GluonTS's `evaluate_forecasts` (equal results, see tests/test_boom_metrics.py):\n\n"
        + markdown_table(["configuration", "boom s", "GluonTS s", "speed-up"], [metrics_speed()])
    )
    write_section("boom", markdown)


if __name__ == "__main__":
    main()
