"""Toto 2.0 forecast speed, ours against the official toto-2 2.0.0, side by side in one run.

    .venv/bin/python benchmarks/bench_forecast_v2.py --reference-python .venv-toto2/bin/python

The same random weights (a ~23M config: patch 32, d_model 384, 12 layers, 6 heads), saved once in the official
layout and loaded by both implementations. Workloads, single forward pass (decode_block_size=None):
  V1: 32 series x 1 variate, context 2048, horizon 96
  V16: 1 series x 16 variates, context 2048, horizon 96
Each (implementation, dtype, workload) runs in fresh processes, --rounds times in alternating order: the best wall time
over --repeats runs after one warm-up (the least disturbed by other load on the machine), and the peak RSS. Ours runs
in float32 and with bfloat16 weights and matmuls (scaler, asinh / sinh and the head's output in float32). Errors: max
|q - q_official float32| over the series' standard deviation.
The worker half of this file runs under either python, so it only uses the API both packages share (`toto2`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKLOADS = {
    "V1": dict(batch=32, variates=1, context=2048, horizon=96),
    "V16": dict(batch=1, variates=16, context=2048, horizon=96),
}
CONFIG = dict(patch_size=32, d_model=384, num_heads=6, num_layers=12, layer_group_size=4,
              num_variate_layers_per_group=1, variate_layer_first=False)


def make_inputs(spec: dict):
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = (spec["batch"], spec["variates"], spec["context"])
    t = torch.arange(spec["context"], dtype=torch.float32)
    target = 500 + 20 * torch.sin(2 * torch.pi * t / 288) + torch.randn(shape, generator=generator).cumsum(-1)
    return {"target": target, "target_mask": torch.ones(shape, dtype=torch.bool),
            "series_ids": torch.zeros(shape[:2], dtype=torch.long)}


def worker(args: argparse.Namespace) -> None:
    import torch
    from safetensors.torch import save_file

    from toto2 import Toto2Model

    torch.set_grad_enabled(False)
    spec = WORKLOADS[args.workload]
    model = Toto2Model.from_pretrained(args.checkpoint).eval().to(getattr(torch, args.dtype))
    inputs = make_inputs(spec)

    def run():
        return model.forecast(inputs, spec["horizon"], decode_block_size=None)

    run()  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        quantiles = run()
        times.append(time.perf_counter() - start)
    save_file({"quantiles": quantiles.float().contiguous()}, args.out + ".safetensors")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps({"seconds": min(times), "peak_rss_mb": peak_mb}))


def run_worker(python: str, workload: str, dtype: str, checkpoint: Path, out: Path, repeats: int) -> dict:
    command = [str(Path(python).absolute()), __file__, "--worker", "--workload", workload, "--dtype", dtype,
               "--checkpoint", str(checkpoint), "--out", str(out), "--repeats", str(repeats)]
    # Run from this folder so that the reference python imports its own installed `toto2`, never ours; ours
    # imports this checkout's.
    env = dict(os.environ)
    if python == sys.executable:
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    subprocess.run(command, check=True, cwd=Path(__file__).resolve().parent, env=env)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference-python", help="python of a venv with toto-2 2.0.0 (../shared/tools/toto2-venv.sh)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="passes over all runs, in alternating order")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--workload", "--dtype", "--checkpoint", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import torch
    from safetensors.torch import load_file

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.report import command_line, markdown_table, write_section
    from toto.v2 import Toto2Config, Toto2Model

    runs = [("ours", sys.executable, "float32"), ("ours", sys.executable, "bfloat16")]
    if args.reference_python:
        runs.insert(0, ("toto-2 2.0.0", args.reference_python, "float32"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        config = Toto2Config(**CONFIG, residual_attn_ratio=Toto2Config.residual_attn_ratio_for(2048, 32))
        model = Toto2Model(config)
        parameters = sum(p.numel() for p in model.parameters())
        model.save_pretrained(tmp / "model")
        results: dict[tuple[str, str, str], dict] = {}
        for round_ in range(args.rounds):
            for workload in WORKLOADS:
                for name, python, dtype in runs if round_ % 2 == 0 else runs[::-1]:
                    out = tmp / f"{name.split()[0]}-{dtype}-{workload}.json"
                    result = run_worker(python, workload, dtype, tmp / "model", out, args.repeats)
                    result["quantiles"] = load_file(str(out) + ".safetensors")["quantiles"]
                    best = results.get((name, dtype, workload))
                    if best is None or result["seconds"] < best["seconds"]:
                        results[name, dtype, workload] = result
                    print(f"{workload:4s} {name:13s} {dtype:9s} {result['seconds']:.3f} s", flush=True)

    headers = ["workload", "implementation", "dtype", "s (best)", "peak RSS MB", "vs official float32",
               "max error / series std"]
    rows = []
    for workload, spec in WORKLOADS.items():
        scale = make_inputs(spec)["target"].std(-1)[None, :, :, None]
        baseline = results.get(("toto-2 2.0.0", "float32", workload)) or results["ours", "float32", workload]
        for name, _, dtype in runs:
            result = results[name, dtype, workload]
            error = float(((result["quantiles"] - baseline["quantiles"]).abs() / scale).max())
            rows.append([workload, name, dtype, f"{result['seconds']:.3f}", f"{result['peak_rss_mb']:.0f}",
                         f"{baseline['seconds'] / result['seconds']:.2f}x", f"{error:.1e}"])
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    shapes = "; ".join(f"{w}: {s['batch']} series x {s['variates']} variates, context {s['context']}, horizon "
                       f"{s['horizon']}" for w, s in WORKLOADS.items())
    write_section("forecast-v2", "\n".join([
        f"## Toto 2.0 forecast speed ({parameters / 1e6:.1f}M parameters, random weights, single pass)",
        "",
        f"Machine: {cpu}-core CPU, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the end of the"
        f" run (a shared machine: best of alternating rounds). Command: `{command_line()}`",
        "",
        f"Workloads: {shapes}. Config: {json.dumps(CONFIG)}.",
        "",
        markdown_table(headers, rows),
        "",
        "Errors are max |quantile - official float32 quantile| / the series' standard deviation, over all nine "
        "knots, series and steps.",
    ]))
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
