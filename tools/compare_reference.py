"""Compare our implementation with reference outputs written by tools/make_reference.py (official toto-ts).

    .venv/bin/python -m tools.compare_reference tests/fixtures/toto_ts_small [--record small]

Prints the largest relative error of every compared output; tests/test_parity.py asserts on the same numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.model.toto import Toto


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - ref| / max(|ref|, 1): relative for large values, absolute near zero."""
    return float(((ours - reference).abs() / reference.abs().clamp_min(1.0)).max())


def compare(folder: Path) -> dict[str, float]:
    ref = load_file(folder / "reference.safetensors")
    model = Toto.from_pretrained(folder)
    errors = {}
    with torch.no_grad():
        out = model.model(ref["series"], ref["padding_mask"], ref["id_mask"])
        dist = out.distribution
        patch = model.config.patch_size
        next_values = (ref["series"][..., patch:] - out.loc[..., :-patch]) / out.scale[..., :-patch]
        ours = {
            "loc": out.loc, "scale": out.scale, "mean": dist.mean,
            "df": dist.component_distribution.df, "component_loc": dist.component_distribution.loc,
            "component_scale": dist.component_distribution.scale, "probs": dist.mixture_distribution.probs,
            "log_prob": dist.log_prob(torch.nn.functional.pad(next_values, (0, patch))),
        }
        for name, value in ours.items():
            errors[name] = relative_error(value, ref[name])
        context = ref["forecast_context"]
        inputs = MaskedTimeseries(
            series=context, padding_mask=ref["forecast_padding_mask"], id_mask=ref["forecast_id_mask"],
            timestamp_seconds=torch.zeros_like(context, dtype=torch.int64),
            time_interval_seconds=torch.ones(context.shape[:2], dtype=torch.int64),
        )
        forecaster = TotoForecaster(model.model)
        for kv in (1, 0):
            reference_mean = ref[f"forecast_mean_kv{kv}"]
            forecast = forecaster.forecast(inputs, reference_mean.shape[-1], num_samples=None, use_kv_cache=bool(kv))
            errors[f"forecast_mean_kv{kv}"] = relative_error(forecast.mean, reference_mean)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--record", metavar="TITLE", help="also write the figures to docs/benchmarks.md under TITLE")
    args = parser.parse_args()
    errors = compare(args.folder)
    for name, error in errors.items():
        print(f"{name:20s} max relative error {error:.2e}")
    if args.record:
        from benchmarks.report import command_line, markdown_table, write_section

        config = Toto.from_pretrained(args.folder).config
        table = markdown_table(["output", "max relative error vs toto-ts 0.2.0"],
                               [[name, f"{error:.1e}"] for name, error in errors.items()])
        write_section(f"parity-{args.record}", "\n".join([
            f"## Parity with toto-ts 0.2.0: {args.record} ({config.num_layers} layers, embed {config.embed_dim}, "
            f"patch {config.patch_size}), float32 on CPU",
            "",
            f"Reference written by `tools/make_reference.py` in the toto-ts venv; compared with `{command_line()}`. "
            "Relative error is max |ours - ref| / max(|ref|, 1). Forecasts are mean forecasts (num_samples=None).",
            "",
            table,
        ]))


if __name__ == "__main__":
    main()
