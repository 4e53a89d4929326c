"""Training throughput (windows per second) and peak memory for the tiny and base configurations.

Each configuration runs in its own process (so peak memory is its own) through a real Lightning Trainer on
synthetic windows shaped like the config's; the first steps are warm-up and not timed. On a CUDA machine it
trains in bf16-mixed and reports peak GPU memory; on CPU, fp32 and peak resident memory.

    python benchmarks/bench_train.py            # full run, writes the "train" section of docs/benchmarks.md
    python benchmarks/bench_train.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402


def shapes(name: str, quick: bool, cuda: bool) -> dict:
    """Batch and context from the shipped config; on CPU the base model gets a smaller batch and context."""
    config = yaml.safe_load((REPO / "configs" / f"pretrain-{name}.yaml").read_text())
    batch, context = config["data"]["batch_size"], config["data"]["context_length"]
    if name == "base" and not cuda:
        batch, context = 4, 1024
    if quick:
        batch, context = min(batch, 4), min(context, 256)
    return {"model_config": config["model"]["model_config"], "batch_size": batch, "context_length": context}


def worker(name: str, steps: int, warmup: int, quick: bool) -> dict:
    import lightning as L
    import torch

    from train.datamodule import TotoDataModule
    from train.module import TotoModule
    from train.sources import SyntheticSource

    cuda = torch.cuda.is_available()
    setup = shapes(name, quick, cuda)
    module = TotoModule(model_config=setup["model_config"], warmup_steps=1)
    data = TotoDataModule([SyntheticSource(num_series=64, length=setup["context_length"] * 2, max_variates=4)],
                          context_length=setup["context_length"], patch_size=module.patch_size,
                          batch_size=setup["batch_size"], max_variates=4, num_workers=2)

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == warmup:
                if cuda:
                    torch.cuda.synchronize()
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *args):
            if cuda:
                torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    trainer = L.Trainer(max_steps=warmup + steps, precision="bf16-mixed" if cuda else "32-true", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[clock])
    trainer.fit(module, datamodule=data)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if cuda
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "config": name, "device": torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)",
        "precision": "bf16-mixed" if cuda else "fp32", "params_m": sum(p.numel() for p in module.parameters()) / 1e6,
        "batch": setup["batch_size"], "context": setup["context_length"],
        "windows_per_s": steps * setup["batch_size"] / clock.seconds, "step_s": clock.seconds / steps,
        "peak_mb": peak_mb, "memory": "GPU allocated" if cuda else "process RSS",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps with small batches (smoke run)")
    parser.add_argument("--configs", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps, warmup = (3, 1) if args.quick else (20, 3)
    if args.worker:
        print(json.dumps(worker(args.worker, steps, warmup, args.quick)))
        return
    results = []
    for name in args.configs:
        print(f"benchmarking {name} ({steps} timed steps)...", flush=True)
        command = [sys.executable, __file__, "--worker", name] + (["--quick"] if args.quick else [])
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    rows = [[r["config"], r["device"], r["precision"], f"{r['params_m']:.1f}M", r["batch"], r["context"],
             f"{r['windows_per_s']:.1f}", f"{r['step_s']:.3f}", f"{r['peak_mb']:.0f} ({r['memory']})"] for r in results]
    table = markdown_table(["config", "device", "precision", "params", "batch", "context", "windows/s", "s/step",
                            "peak memory MB"], rows)
    note = " (quick smoke run: tiny batches, not a measurement)" if args.quick else ""
    write_section("train", f"## Training throughput{note}\n\n`{command_line()}`\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
