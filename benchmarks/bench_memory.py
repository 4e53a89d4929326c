"""Peak memory of a forecast against the number of samples and the context length, base configuration (151M).

    .venv/bin/python benchmarks/bench_memory.py

Each point runs in a fresh process: the model (random weights) is loaded, its resident memory noted and the peak RSS
reset (/proc/self/clear_refs), then one forecast runs (1 series x 4 variates, horizon 128, KV cache); the point is the
peak RSS during the forecast minus the RSS before it, next to the forecaster's own estimate
(`toto.inference.memory.plan_forecast`). The context's keys and values are stored once per series, so the peak should
stay flat in samples apart from the generated patches and the outputs. Results (table and plot) go to
docs/benchmarks.md and docs/bench_memory.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SAMPLES = [16, 64, 256, 1024]
CONTEXTS = [512, 1024, 2048, 4096]
VARIATES, HORIZON = 4, 128
SMALL_BUDGET_MB = 256  # the last point: 1024 samples under this budget


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux): VmRSS now, VmHWM the peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Start peak RSS (VmHWM) again from the current RSS, so that loading the model does not count."""
    Path("/proc/self/clear_refs").write_text("5")


def worker(checkpoint: str, samples: int, context: int, budget_mb: int | None) -> dict:
    import torch

    from toto import MaskedTimeseries, Toto, TotoForecaster
    from toto.inference.memory import plan_forecast

    torch.set_grad_enabled(False)
    model = Toto.from_pretrained(checkpoint).eval()
    forecaster = TotoForecaster(model.model)
    if budget_mb is not None:
        forecaster.memory_budget_bytes = budget_mb * 2**20
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(context, dtype=torch.float32)
    noise = torch.randn((1, VARIATES, context), generator=generator).cumsum(-1)
    series = 50 + 10 * torch.sin(2 * torch.pi * t / 96) + noise
    inputs = MaskedTimeseries.from_series(series)
    forecaster.model.fused_head()  # composed once per model, not per forecast
    loaded = status_mb("VmRSS")
    reset_peak()
    forecast = forecaster.forecast(inputs, HORIZON, num_samples=samples, seed=0)
    assert forecast.samples.shape == (1, VARIATES, HORIZON, samples)
    peak = status_mb("VmHWM")
    plan = plan_forecast(model.config, 1, VARIATES, context, HORIZON, samples, forecaster.memory_budget_bytes)
    return {"samples": samples, "context": context, "budget_mb": forecaster.memory_budget_bytes / 2**20,
            "forecast_mb": peak - loaded, "loaded_mb": loaded,
            "estimate_mb": plan.peak_bytes / 2**20, "paths_per_chunk": plan.paths_per_chunk}


def measure(checkpoint: Path, samples: int, context: int, budget_mb: int | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", str(checkpoint), str(samples), str(context), str(budget_mb or 0)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        checkpoint, samples, context, budget = args.worker
        print(json.dumps(worker(checkpoint, int(samples), int(context), int(budget) or None)))
        return

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.report import REPO, command_line, markdown_table, write_section
    from toto import Toto, TotoConfig

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        Toto(TotoConfig.base()).save_pretrained(Path(tmp) / "base")
        by_samples = [measure(Path(tmp) / "base", s, 512) for s in SAMPLES]
        by_context = [measure(Path(tmp) / "base", 256, c) for c in CONTEXTS]
        budgeted = measure(Path(tmp) / "base", SAMPLES[-1], 512, SMALL_BUDGET_MB)
    for point in by_samples + by_context + [budgeted]:
        print(json.dumps(point), flush=True)

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="tight")
    for axis, points, key, title in ((left, by_samples, "samples", "context 512"),
                                     (right, by_context, "context", "256 samples")):
        x = [p[key] for p in points]
        axis.plot(x, [p["forecast_mb"] for p in points], "o-", label="measured (peak RSS - RSS after loading)")
        axis.plot(x, [p["estimate_mb"] for p in points], "s--", label="forecaster's estimate (plan_forecast)")
        if key == "samples":
            axis.plot([budgeted["samples"]], [budgeted["forecast_mb"]], "v", markersize=9,
                      label=f"measured, budget {SMALL_BUDGET_MB} MiB")
        axis.set_xscale("log", base=2)
        axis.set_xlabel(key)
        axis.set_ylabel("MB")
        axis.set_title(f"base model, 1 x {VARIATES} variates, horizon {HORIZON}, {title}")
        axis.set_ylim(bottom=0)
        axis.legend(fontsize=8)
    plot = REPO / "docs" / "bench_memory.png"
    figure.savefig(plot, dpi=110)

    headers = ["samples", "context", "budget MiB", "forecast peak MB (measured)", "estimate MB", "paths per chunk"]
    rows = [[p["samples"], p["context"], f"{p['budget_mb']:.0f}", f"{p['forecast_mb']:.0f}", f"{p['estimate_mb']:.0f}",
             p["paths_per_chunk"]] for p in by_samples + by_context + [budgeted]]
    write_section("memory", "\n".join([
        "## Forecast memory, base configuration (151M, random weights)",
        "",
        f"Command: `{command_line()}`. One series of {VARIATES} variates, horizon {HORIZON}, KV cache, seeded; each "
        "point in a fresh process: its peak RSS minus its RSS after loading the model (about "
        f"{by_samples[0]['loaded_mb']:.0f} MB), next to the forecaster's estimate of its working memory.",
        "",
        markdown_table(headers, rows),
        "",
        "The context's keys and values are stored once per series, so the context length barely moves the peak. "
        "What grows with the samples is what each path decoded at the same time holds: its own generated keys and "
        "values and one step's activations; the memory budget bounds it by decoding fewer paths at once (last row). "
        "The estimate is an upper bound.",
        "",
        "![forecast memory](bench_memory.png)",
    ]))
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
