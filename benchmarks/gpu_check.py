"""GPU checks, run on a lent GPU machine (see benchmarks/gpu_check.sh):

1. parity of the two attention kernels (PyTorch SDPA and xformers) on the base configuration, forward and forecast;
2. bf16-autocast training-step throughput of the base configuration (windows per second);
3. forecast throughput of the base configuration (W1 of bench_forecast.py, 256 samples);
4. Toto 2.0 single-pass forecast throughput (bench_forecast_v2.py's workloads), float32 and bf16.

Results go to the "gpu" section of docs/benchmarks.md, with the card's name.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402
from toto import MaskedTimeseries, Toto, TotoConfig, TotoForecaster  # noqa: E402
from toto.model import attention  # noqa: E402


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
    rows.append(["xformers available", attention.XFORMERS_AVAILABLE])
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

    table = markdown_table(["check", card], rows)
    write_section("gpu", f"## GPU checks\n\nCard: {card}, torch {torch.__version__}. Command: `{command_line()}`\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
