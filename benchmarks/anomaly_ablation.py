"""What each choice of the detector is worth: how far ahead values are scored, the window tests, the calibration.

    .venv/bin/python benchmarks/anomaly_ablation.py [--quick]

On the injected series of benchmarks/eval_anomaly.py (validation series of the embedded model, never trained on;
never NAB), toto-tiny:

1. The negative log density of the observed values by how many steps past its context each is predicted (one
   pass: the first value of a patch is 1 step ahead, the last `patch_size`), and the mean under steps_ahead 1, 4,
   8 and 16 (16, 4, 2 and 1 passes): the sharpness each costs.
2. AUC-PR and VUS-PR (TSB-AD's definitions, benchmarks/anomaly_metrics.py) per anomaly family for the detector's
   variants: steps_ahead 1 to 16, window tests of 16 and 64 values, and the raw (uncalibrated) point surprise.

Writes the section `anomaly-ablation` of docs/anomaly.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.anomaly_data import CLEAN, injected_series  # noqa: E402
from benchmarks.anomaly_metrics import average_precision, periodicity_window, vus_pr  # noqa: E402
from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from toto.anomaly.detector import DetectionSettings  # noqa: E402
from toto.anomaly.passes import plan_passes  # noqa: E402
from toto.pipeline import ForecastPipeline  # noqa: E402

ANOMALY_MD = REPO / "docs" / "anomaly.md"
VARIANTS = {
    "steps_ahead 1 (16 passes)": DetectionSettings(steps_ahead=1),
    "steps_ahead 4 (4 passes)": DetectionSettings(steps_ahead=4),
    "**steps_ahead 8 (2 passes, default)**": DetectionSettings(steps_ahead=8),
    "steps_ahead 16 (1 pass)": DetectionSettings(steps_ahead=16),
    "default + window tests of 16": DetectionSettings(steps_ahead=8, window=16),
    "default + window tests of 64": DetectionSettings(steps_ahead=8, window=64),
}


def sharpness(pipeline: ForecastPipeline, series: list) -> str:
    """Mean negative log density of the observed values by steps ahead, and under each steps_ahead."""
    patch = pipeline.patch_size
    by_ahead: dict[int, list[float]] = {a: [] for a in range(1, patch + 1)}
    per_setting: dict[int, list[float]] = {a: [] for a in (1, 4, 8, 16)}
    for s in series:
        values = s.values[None]
        plan = plan_passes(values.shape[-1], pipeline.scoring_windows(patch))
        nll = -np.log(pipeline.value_distributions_of(values, plan).density(values))[0, 0]
        for ahead in by_ahead:
            chosen = np.isfinite(nll) & (plan.steps_ahead_of == ahead)
            by_ahead[ahead].extend(nll[chosen].tolist())
        for ahead in per_setting:
            density = pipeline.value_distributions(values, ahead).density(values)[0, 0]
            per_setting[ahead].extend((-np.log(density[np.isfinite(density)])).tolist())
    first = markdown_table(["steps ahead", *map(str, (1, 2, 4, 8, 12, 16))],
                           [["mean -log density", *(f"{np.mean(by_ahead[a]):.3f}" for a in (1, 2, 4, 8, 12, 16))]])
    second = markdown_table(["steps_ahead setting", *map(str, per_setting)],
                            [["mean -log density", *(f"{np.mean(v):.3f}" for v in per_setting.values())]])
    return first + "\n\n" + second


def detection(pipeline: ForecastPipeline, series: list, windows: dict[str, int]) -> str:
    """Mean AUC-PR / VUS-PR per family for each variant, and the raw point surprise."""
    families = sorted({s.family for s in series})
    rows = []
    for name, settings in {**VARIANTS, "raw point surprise (no calibration)": DetectionSettings(steps_ahead=8)}.items():
        started = time.perf_counter()
        scores: dict[str, list[tuple[float, float]]] = {f: [] for f in families}
        for s in series:
            result = pipeline.detect(s.values[None], s.interval_seconds or 1.0, settings)
            score = result.surprise[0, 0] if name.startswith("raw") else result.combined_score[0]
            score = score[s.evaluate_from :]
            score = np.nan_to_num(score, nan=np.nanmin(score))
            labels = s.labels[s.evaluate_from :]
            scores[s.family].append((average_precision(labels, score), vus_pr(labels, score, windows[s.name])))
        everything = [pair for pairs in scores.values() for pair in pairs]
        rows.append([name, *(f"{np.mean([a for a, _ in scores[f]]):.3f} / {np.mean([v for _, v in scores[f]]):.3f}"
                             for f in families),
                     f"**{np.mean([a for a, _ in everything]):.3f} / {np.mean([v for _, v in everything]):.3f}**",
                     f"{time.perf_counter() - started:.0f}"])
    return markdown_table(["variant", *families, "all injected", "seconds"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="half-length series (development)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipeline = ForecastPipeline.from_pretrained("toto-tiny", device="cpu")
    every = injected_series(shorter=2.0 if args.quick else 1.0)
    clean = {s.name: s for s in every if s.family == CLEAN}
    series = [s for s in every if s.family != CLEAN]
    windows = {name: periodicity_window(c.values[0][c.evaluate_from :]) for name, c in clean.items()}
    text = (f"Written by `{command_line()}` on {time.strftime('%Y-%m-%d')} ({len(series)} injected series"
            f"{', quick run' if args.quick else ''}).\n\n"
            "**Sharpness.** The mean negative log density of the observed values (clean copies and injected alike) "
            "by how far past its context each is predicted (one pass), then under each `steps_ahead`:\n\n"
            + sharpness(pipeline, [*series, *clean.values()])
            + "\n\n**Detection.** AUC-PR / VUS-PR per family (mean over series), for each variant:\n\n"
            + detection(pipeline, series, windows))
    write_section("anomaly-ablation", text, ANOMALY_MD)
    print(text)


if __name__ == "__main__":
    main()
