"""Write reference outputs of the official Toto 1.0 implementation (toto-ts 0.2.0) for parity tests.

Run it with the python of a SEPARATE venv holding toto-ts (its import name `toto` clashes with ours):

    PY=$(../shared/tools/toto-ts-venv.sh .venv-toto-ts)
    $PY tools/make_reference.py tests/fixtures/toto_ts_small            # the small config used by the tests
    $PY tools/make_reference.py /tmp/toto_ts_base --config base          # the 151M config, checked by hand

It writes a from_pretrained folder (config.json + model.safetensors, random weights with a fixed seed) and
reference.safetensors: the inputs, the forward outputs (scaler loc/scale, mixture df/loc/scale/probs, mean,
log-prob of the next values) and mean forecasts with and without KV cache. `python -m tools.compare_reference` and
tests/test_parity.py load the folder with our `Toto.from_pretrained` and compare.
"""

import argparse
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

warnings.filterwarnings("ignore")

from toto.data.util.dataset import MaskedTimeseries  # noqa: E402  (the official package)
from toto.inference.forecaster import TotoForecaster  # noqa: E402
from toto.model.toto import Toto  # noqa: E402

CONFIGS = {
    "small": dict(patch_size=16, stride=16, embed_dim=64, num_layers=4, num_heads=4, mlp_hidden_dim=96,
                  spacewise_every_n_layers=2, output_distribution_kwargs={"k_components": 4}),
    "base": dict(patch_size=64, stride=64, embed_dim=768, num_layers=12, num_heads=12, mlp_hidden_dim=3072,
                 spacewise_every_n_layers=12, output_distribution_kwargs={"k_components": 24}),
}
COMMON = dict(dropout=0.1, scaler_cls="<class 'model.scaler.CausalPatchStdMeanScaler'>",
              output_distribution_classes=["<class 'model.distribution.MixtureOfStudentTsOutput'>"],
              spacewise_first=True, use_memory_efficient_attention=False, stabilize_with_global=True,
              scale_factor_exponent=10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = {**CONFIGS[args.config], **COMMON}
    model = Toto(**config).eval()
    # Spread the output head so that the mixture is far from uniform and mistakes show.
    with torch.no_grad():
        for p in model.model.output_distribution.parameters():
            p.mul_(4.0)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out / "model.safetensors")

    patch = config["patch_size"]
    batch, variates, length = 2, 3, 6 * patch
    steps = torch.randn(batch, variates, length).cumsum(-1)
    series = steps * torch.tensor([1.0, 50.0, 0.01]).view(1, 3, 1) + torch.tensor([0.0, 1000.0, -3.0]).view(1, 3, 1)
    padding_mask = torch.ones_like(series, dtype=torch.bool)
    padding_mask[1, :, :5] = False  # leading padding inside the first patch
    series[1, :, :5] = 0.0
    id_mask = torch.tensor([0, 0, 1]).view(1, 3, 1).expand(batch, variates, length).contiguous()

    with torch.no_grad():
        out = model.model(series, padding_mask, id_mask)
        dist = out.distribution
        next_values = (series[..., patch:] - out.loc[..., :-patch]) / out.scale[..., :-patch]
        reference = {
            "series": series, "padding_mask": padding_mask, "id_mask": id_mask,
            "loc": out.loc, "scale": out.scale, "mean": dist.mean,
            "df": dist.component_distribution.df, "component_loc": dist.component_distribution.loc,
            "component_scale": dist.component_distribution.scale, "probs": dist.mixture_distribution.probs,
            "log_prob": dist.log_prob(torch.nn.functional.pad(next_values, (0, patch))),
        }
        # Forecasts from a context that is not a multiple of the patch size (exercises left padding).
        context = series[..., patch + 7:]
        inputs = MaskedTimeseries(
            series=context, padding_mask=padding_mask[..., patch + 7:], id_mask=id_mask[..., patch + 7:],
            timestamp_seconds=torch.zeros_like(context, dtype=torch.int64),
            time_interval_seconds=torch.ones(batch, variates, dtype=torch.int64),
        )
        forecaster = TotoForecaster(model.model)
        for use_kv_cache in (True, False):
            forecast = forecaster.forecast(inputs, prediction_length=2 * patch + 3, num_samples=None,
                                           use_kv_cache=use_kv_cache)
            reference[f"forecast_mean_kv{int(use_kv_cache)}"] = forecast.mean
        reference["forecast_context"] = context
        reference["forecast_padding_mask"] = inputs.padding_mask
        reference["forecast_id_mask"] = inputs.id_mask
    save_file({k: v.contiguous() for k, v in reference.items()}, args.out / "reference.safetensors")
    print(f"wrote {args.out} ({args.config} config, {sum(p.numel() for p in model.parameters()):,} parameters)")


if __name__ == "__main__":
    main()
