"""What the embedded model's ways of decoding cost: one window or its context ensemble, sample or mean feedback.

    .venv/bin/python benchmarks/bench_decoding.py [--threads 2] [--repeats 5] [--checkpoint DIR]

Each forecast is `TotoForecaster.forecast` on the embedded toto-tiny in float32: weekly Mauna Loa CO2 stretches of
512 steps (statsmodels; one series, then 32 series offset by a week each), horizon 64, 100 sample paths, seeded.
512 steps give the ensemble two windows (128 and 512). The figure is the best of `--repeats` runs after a warm-up.
Results go to the "decoding" section of docs/benchmarks.md; the scores of each way are in docs/embedded-model.md.
`--checkpoint` times another Toto 1.0 folder with the embedded model's windows (a candidate, say) and only prints.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from toto.data.util.dataset import MaskedTimeseries  # noqa: E402
from toto.inference.forecaster import TotoForecaster  # noqa: E402
from toto.options import FEEDBACK  # noqa: E402
from toto.pipeline import ForecastPipeline  # noqa: E402

CONTEXT, HORIZON, PATHS = 512, 64, 100


def co2_stretches(count: int) -> MaskedTimeseries:
    """`count` 512-step stretches of weekly CO2, each a week later than the one before."""
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"].interpolate().to_numpy(np.float32)
    rows = np.stack([weekly[i : i + CONTEXT] for i in range(count)])
    return MaskedTimeseries.from_series(torch.from_numpy(rows)[:, None])


def best_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checkpoint", help="another Toto 1.0 folder to time (printed, not written to the docs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipeline = ForecastPipeline.from_pretrained("toto-tiny", device="cpu")
    ensembles = (None, pipeline.context_ensemble)
    if args.checkpoint:
        pipeline = ForecastPipeline.from_pretrained(args.checkpoint, device="cpu")
    forecaster = TotoForecaster(pipeline.model)
    rows = []
    for ensemble in ensembles:
        for feedback in FEEDBACK:
            cells = []
            for count in (1, 32):
                inputs = co2_stretches(count)
                options = {"num_samples": PATHS, "seed": 0, "context_ensemble": ensemble, "feedback": feedback}
                seconds = best_seconds(functools.partial(forecaster.forecast, inputs, HORIZON, **options),
                                       args.repeats)
                cells.append(f"{seconds * 1e3:.0f}")
                print(f"ensemble={ensemble} feedback={feedback} {count} series: {seconds * 1e3:.0f} ms", flush=True)
            windows = "one (512)" if ensemble is None else "+".join(map(str, ensemble)) + " (128 and 512 apply)"
            rows.append([windows, feedback, *cells])
    if args.checkpoint:
        return
    table = markdown_table(["windows", "feedback", "1 series, ms", "32 series, ms"], rows)
    write_section("decoding", "\n".join([
        "## The embedded model's decoding: context ensemble and feedback",
        "",
        f"Command: `{command_line()}`. toto-tiny, float32, {args.threads} threads; weekly CO2 stretches of "
        f"{CONTEXT} steps, horizon {HORIZON}, {PATHS} sample paths, seeded; best of {args.repeats} after a warm-up. "
        "Mean feedback decodes one path per series and draws every path's values from each step's distribution "
        "(`toto.options.Feedback`); its scores are in docs/embedded-model.md.",
        "",
        table,
    ]))


if __name__ == "__main__":
    main()
