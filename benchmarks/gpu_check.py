"""GPU checks, run on a lent GPU machine (see benchmarks/gpu_check.sh):

1. parity of the two attention kernels (PyTorch SDPA and xformers) on the base configuration, forward and forecast;
2. bf16-autocast training-step throughput of the base configuration (windows per second);
3. forecast throughput of the base configuration (W1 of bench_forecast.py, 256 samples);
4. Toto 2.0 single-pass forecast throughput (bench_forecast_v2.py's workloads), float32 and bf16;
5. FSDP through Lightning on one GPU (`toto-train fit` with configs/strategy/fsdp.yaml, bf16-mixed): a few steps of
   the base config and of Toto 2.0, each resumed from its whole checkpoint and exported.

Results go to the "gpu" section of docs/benchmarks.md, with the card's name.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from toto import MaskedTimeseries, Toto, TotoConfig, TotoForecaster  # noqa: E402
from toto.model import attention, attention_math  # noqa: E402


def timed(fn, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    assert torch.cuda.is_available(), "gpu_check needs a CUDA device"
    device = torch.device("cuda")
    card = torch.cuda.get_device_name(0)
    torch.manual_seed(0)
    model = Toto(TotoConfig.base()).to(device).eval()
    rows = []

    # 1. Kernel parity: the same model with xformers allowed vs. forced SDPA.
    x = torch.randn(4, 8, 1024, device=device).cumsum(-1)
    mask = torch.ones_like(x, dtype=torch.bool)
    ids = torch.arange(8, device=device).div(4, rounding_mode="floor").view(1, 8, 1).expand_as(x)
    outputs = {}
    for allow in (True, False):
        for module in model.modules():
            if isinstance(module, attention.MultiHeadAttention):
                module.allow_xformers = allow
        with torch.no_grad():
            outputs[allow] = model.model(x, mask, ids).distribution.mean
    diff = float(((outputs[True] - outputs[False]).abs() / outputs[False].abs().clamp_min(1.0)).max())
    rows.append(["xformers available", attention_math.XFORMERS_AVAILABLE])
    rows.append(["SDPA vs xformers forward, max rel diff (fp32)", f"{diff:.1e}"])

    # 2. bf16 training step throughput (NLL of next patch, AdamW), batch 16 x 1 variate x 2048.
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = torch.randn(16, 1, 2048, device=device).cumsum(-1)
    bmask = torch.ones_like(batch, dtype=torch.bool)
    bids = torch.zeros_like(batch, dtype=torch.long)

    def train_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model.model(batch, bmask, bids)
        patch = model.config.patch_size
        target = (batch[..., patch:] - out.loc[..., :-patch]) / out.scale[..., :-patch]
        loss = -out.distribution.log_prob(torch.nn.functional.pad(target, (0, patch)))[..., :-patch].mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(train_step)
    rows.append(["bf16 train step, 16 windows x 2048 steps", f"{seconds * 1000:.0f} ms ({16 / seconds:.0f} windows/s)"])
    rows.append(["peak GPU memory, training", f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"])

    # 3. Forecast throughput.
    model.eval()
    forecaster = TotoForecaster(model.model)
    inputs = MaskedTimeseries.from_series(torch.randn(1, 4, 512).cumsum(-1)).to(device)
    seconds = timed(lambda: forecaster.forecast(inputs, 96, num_samples=256))
    rows.append(["forecast W1 (1x4, ctx 512, h 96, 256 samples)", f"{seconds * 1000:.0f} ms"])
    inputs = MaskedTimeseries.from_series(torch.randn(32, 1, 2048).cumsum(-1)).to(device)
    seconds = timed(lambda: forecaster.forecast(inputs, 64, num_samples=256, samples_per_batch=256), repeats=2)
    rows.append(["forecast 32 series, ctx 2048, h 64, 256 samples", f"{seconds:.2f} s"])

    # 4. Toto 2.0, single pass, bf16 weights (scaler and head outputs float32): the bench_forecast_v2 workloads.
    from benchmarks.bench_forecast_v2 import CONFIG, WORKLOADS, make_inputs
    from toto.v2 import Toto2Config, Toto2Model

    config = Toto2Config(**CONFIG, residual_attn_ratio=Toto2Config.residual_attn_ratio_for(2048, 32))
    model_v2 = Toto2Model(config).to(device).eval()
    for dtype in (torch.float32, torch.bfloat16):
        model_v2.to(dtype)
        for name, spec in WORKLOADS.items():
            inputs = {k: v.to(device) for k, v in make_inputs(spec).items()}
            with torch.no_grad():
                seconds = timed(lambda inputs=inputs, spec=spec: model_v2.forecast(inputs, spec["horizon"]))
            rows.append([f"Toto 2.0 23M forecast {name} ({spec['batch']}x{spec['variates']}, ctx 2048, h 96), "
                         f"{str(dtype).removeprefix('torch.')}", f"{seconds * 1000:.1f} ms"])

    # 5. FSDP through Lightning (last: it leaves a process group behind), Toto 2.0 from the model of section 4.
    with tempfile.TemporaryDirectory() as v2_checkpoint:
        model_v2.to(torch.float32).save_pretrained(v2_checkpoint)
        rows += lightning_fsdp(Path(v2_checkpoint))

    table = markdown_table(["check", card], rows)
    header = f"## GPU checks\n\nCard: {card}, torch {torch.__version__}. Command: `{command_line()}`"
    write_section("gpu", f"{header}\n\n{table}")
    print(table)


def lightning_fsdp(v2_checkpoint: Path, overrides: Sequence[str] = ()) -> list[list[str]]:
    """8 steps of `toto-train fit --config <model> --config configs/strategy/fsdp.yaml` on one GPU, for the base
    config (Toto 1.0, 151M) and Toto 2.0 (from `v2_checkpoint`), on synthetic series; each run then resumes from
    its whole (`state_dict_type: full`) last checkpoint for 2 more steps and exports. `overrides` are appended
    to the command line."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    from train.cli import run_cli

    data = ["--data.sources", json.dumps([{"class_path": "train.sources.SyntheticSource",
                                           "init_args": {"num_series": 64, "length": 4096, "max_variates": 4}}]),
            "--data.train_windows_per_epoch", "4096", "--data.max_val_series", "16", "--data.num_workers", "2"]
    models = {
        "Toto 1.0 base": ["--config", str(REPO / "configs" / "pretrain-base.yaml")],
        "Toto 2.0 23M": ["--config", str(REPO / "configs" / "finetune-v2.yaml"), "--model.pretrained",
                         str(v2_checkpoint), "--data.context_length", "2048", "--data.val_length", "128"],
    }
    rows = []
    for name, model in models.items():
        check = f"FSDP (Lightning, 1 GPU, bf16-mixed) {name}: fit 8 steps, resume to 10, export"
        with tempfile.TemporaryDirectory() as run_dir:
            args = ["fit", *model, "--config", str(REPO / "configs" / "strategy" / "fsdp.yaml"), "--trainer.devices",
                    "1", "--trainer.default_root_dir", run_dir, *data, "--model.warmup_steps", "2",
                    "--trainer.val_check_interval", "8", "--trainer.enable_model_summary", "false",
                    "--history.every_n_steps", "4", *overrides]
            try:  # a failure is recorded as the check's result, and the other checks' figures are kept
                start = time.perf_counter()
                cli = run_cli([*args, "--trainer.max_steps", "8"])
                seconds = time.perf_counter() - start
                units = sum(isinstance(m, FullyShardedDataParallel) for m in cli.trainer.strategy.model.modules())
                loss = float(cli.trainer.callback_metrics["train_loss"])
                resumed = run_cli([*args, "--trainer.max_steps", "10", "--ckpt_path", "last"]).trainer.global_step
                exported = (Path(run_dir) / "export" / "model.safetensors").is_file()
                result = (f"{seconds:.0f} s for 8 steps with setup; {units} FSDP units; train_loss {loss:.3f}; "
                          f"resumed to step {resumed}; export {'written' if exported else 'MISSING'}")
            except Exception as err:
                result = f"FAILED: {type(err).__name__}: {err}"[:300]
        rows.append([check, result])
        print(rows[-1])
    return rows


if __name__ == "__main__":
    main()
