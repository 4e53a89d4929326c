"""Compare our implementation with reference outputs written by tools/make_reference.py (official toto-ts).

    .venv/bin/python tools/compare_reference.py tests/fixtures/toto_ts_small

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
    args = parser.parse_args()
    for name, error in compare(args.folder).items():
        print(f"{name:20s} max relative error {error:.2e}")


if __name__ == "__main__":
    main()
