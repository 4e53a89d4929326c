"""Check benchmarks/anomaly_metrics.py against TSB-AD's own metric code on fixed score and label arrays.

TSB-AD 1.5 pins numpy<2, so it lives in its own virtual environment; the arrays travel through .npy files. Not part
of the test suite (tests/test_anomaly_metrics.py keeps values recorded with it). Run it from the repository root:

    python3 -m venv /tmp/tsbad
    /tmp/tsbad/bin/pip install "numpy<2" scikit-learn scipy statsmodels   # what TSB_AD.evaluation needs
    /tmp/tsbad/bin/pip install --no-deps tsb-ad==1.5                      # not its models' torch, transformers...
    .venv/bin/python benchmarks/check_anomaly_metrics.py [--tsb-ad-python /tmp/tsbad/bin/python]

It writes the cases into a temporary folder, runs itself with --tsb-ad-side under TSB-AD's interpreter (which
computes `metric_PR`, `generate_curve(..., version="opt", thre=250)`'s VUS-PR and `find_length_rank(rank=1)`), and
prints both sides; it fails when any value differs by more than 1e-9.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TOLERANCE = 1e-9


def cases() -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """(labels, scores, VUS window) arrays that exercise the metric's corners: ties, events at the edges, buffers
    that merge, a score that ignores the anomaly, and a real seasonal series (for the periodicity window)."""
    rng = np.random.default_rng(20261207)
    out: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    labels = np.zeros(400, np.int64)
    labels[[100, 101, 102, 250, 251, 252, 253, 254]] = 1
    out["two events"] = (labels, rng.random(400) + 0.8 * labels, 20)
    out["ties"] = (labels, np.round(rng.random(400) * 4) + labels, 10)
    edges = np.zeros(300, np.int64)
    edges[:5] = edges[-7:] = edges[150:153] = 1
    out["events at the edges"] = (edges, rng.normal(size=300) + 2.0 * edges, 16)
    close = np.zeros(500, np.int64)
    close[200:210] = close[214:220] = 1
    lagged = np.roll(close, 4) * 3.0 + rng.normal(size=500)  # a late detector: the buffer credits it
    out["close events, late score"] = (close, lagged, 24)
    out["blind score"] = (labels, rng.random(400), 12)
    hours = np.arange(24 * 60)
    seasonal = 10 * np.sin(2 * np.pi * hours / 24) + rng.normal(size=len(hours))
    long_labels = np.zeros(len(hours), np.int64)
    long_labels[700:712] = long_labels[1100:1103] = 1
    out["seasonal series"] = (long_labels, np.abs(rng.normal(size=len(hours))) + 1.5 * long_labels, 24)
    out["seasonal values"] = (long_labels, seasonal, 24)
    slow = np.sin(2 * np.pi * np.arange(3000) / 350) + 0.1 * rng.normal(size=3000)  # period past 300: window 125
    slow_labels = np.zeros(3000, np.int64)
    slow_labels[2000:2100] = 1
    out["period longer than 300"] = (slow_labels, slow, 40)
    return out


def tsb_ad_side(folder: Path) -> None:
    """Under TSB-AD's interpreter: its metrics of every case in `folder`, written to folder/tsb_ad.json."""
    from TSB_AD.evaluation.basic_metrics import basic_metricor, generate_curve
    from TSB_AD.utils.slidingWindows import find_length_rank

    results = {}
    for path in sorted(folder.glob("*.labels.npy")):
        name = path.name.removesuffix(".labels.npy")
        labels, scores = np.load(path), np.load(folder / f"{name}.scores.npy")
        window = int(np.load(folder / f"{name}.window.npy"))
        vus = generate_curve(labels.astype(int), scores, window, "opt", 250)[-1]
        results[name] = {"AUC-PR": float(basic_metricor().metric_PR(labels, scores)), "VUS-PR": float(vus),
                         "window": int(find_length_rank(scores, rank=1))}
    (folder / "tsb_ad.json").write_text(json.dumps(results, indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tsb-ad-python", default="/tmp/tsbad/bin/python", help="interpreter that has tsb-ad")
    parser.add_argument("--tsb-ad-side", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tsb_ad_side is not None:
        tsb_ad_side(args.tsb_ad_side)
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.anomaly_metrics import average_precision, periodicity_window, vus_pr

    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours = {}
        for index, (name, (labels, scores, window)) in enumerate(cases().items()):
            key = f"case{index}"
            np.save(folder / f"{key}.labels.npy", labels)
            np.save(folder / f"{key}.scores.npy", scores)
            np.save(folder / f"{key}.window.npy", np.array(window))
            ours[key] = (name, {"AUC-PR": average_precision(labels, scores), "VUS-PR": vus_pr(labels, scores, window),
                                "window": periodicity_window(scores)})
        subprocess.run([args.tsb_ad_python, __file__, "--tsb-ad-side", str(folder)], check=True)
        theirs = json.loads((folder / "tsb_ad.json").read_text())
    print(f"{'case':28} {'metric':8} {'ours':>20} {'TSB-AD':>20}")
    for key, (name, values) in ours.items():
        for metric, value in values.items():
            worst = max(worst, abs(value - theirs[key][metric]))
            print(f"{name:28} {metric:8} {value:20.15f} {theirs[key][metric]:20.15f}")
    print(f"largest difference: {worst:.3g}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
