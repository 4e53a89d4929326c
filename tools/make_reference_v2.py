"""Write reference forecasts of the official Toto 2.0 implementation (toto-2 2.0.0) for parity tests.

Run it with the python of a SEPARATE venv holding toto-2 (its import name `toto2` clashes with ours):

    PY=$(../shared/tools/toto2-venv.sh .venv-toto2)
    $PY tools/make_reference_v2.py tests/fixtures/toto2                 # the small configs used by the tests
    $PY tools/make_reference_v2.py /tmp/toto2_22m --configs 22m          # the ~22M config, recorded in the docs

For each configuration it writes a folder NAME/ with the official layout (config.json + model.safetensors, random
weights from a fixed seed, spread so that every path matters) and NAME/reference.safetensors: the inputs and the
official outputs of every case in CASES. The cases' arguments travel in the file's metadata, so the comparison
(`python -m tools.compare_reference_v2 FOLDER`, tests/test_v2_parity.py) replays exactly what was run here.
"""

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

warnings.filterwarnings("ignore")

from toto2 import Toto2Model  # noqa: E402  (the official package)
from toto2.configuration import Toto2ModelConfig  # noqa: E402

SMALL = dict(patch_size=8, d_model=32, num_heads=4, num_layers=4, layer_group_size=2, num_variate_layers_per_group=1,
             residual_attn_ratio=Toto2ModelConfig.compute_residual_attn_ratio(512, 8))
CONFIGS = {
    # grouped-query heads (4 query heads over 2 key/value groups), variate layers last
    "gqa": dict(SMALL, variate_layer_first=False, num_groups=2),
    # variate layers first, xPos, learned norm weights and per-dim query scales
    "xpos": dict(SMALL, variate_layer_first=True, use_xpos=True, norm_include_weight=True, per_dim_scale=True),
    # biases in attention and MLP, two time layers per variate layer
    "bias": dict(SMALL, num_layers=6, layer_group_size=3, variate_layer_first=False, attn_bias=True, mlp_bias=True),
    # about 22M parameters: patch 32, d_model 384, 12 layers, 6 heads
    "22m": dict(patch_size=32, d_model=384, num_heads=6, num_layers=12, layer_group_size=4,
                num_variate_layers_per_group=1, variate_layer_first=False,
                residual_attn_ratio=Toto2ModelConfig.compute_residual_attn_ratio(2048, 32)),
}
GROUPS = {"small": ["gqa", "xpos", "bias"], "22m": ["22m"]}

# name -> forecast arguments and which inputs to use. Context length is 8 patches (plus 3 values for "ragged").
CASES = {
    "single": dict(horizon=24),
    "block1": dict(horizon=40, decode_block_size="patch"),
    "block2": dict(horizon=40, decode_block_size="2patch"),
    "ragged_horizon": dict(horizon=21),
    "missing": dict(horizon=24, inputs="missing"),
    # Block decoding with gaps inside the context. (With an empty *leading* patch the official decoder gives
    # its decode steps the context's first group ids, a quirk we do not copy: see docs/architecture.md.)
    "missing_block2": dict(horizon=40, decode_block_size="2patch", inputs="missing_inner"),
    "groups": dict(horizon=24, inputs="groups"),
    "groups_block1": dict(horizon=24, decode_block_size="patch", inputs="groups"),
    "covariates": dict(horizon=24, inputs="covariates"),
    "covariates_block1": dict(horizon=24, decode_block_size="patch", inputs="covariates"),
    "no_missing_flag": dict(horizon=24, has_missing_values=False),
    "gluonts_options": dict(horizon=24, inputs="missing", scaler_fallback_min_obs=8, quantile_real_cap_k=1e4),
}


def make_inputs(patch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random walks at very different levels and scales, so that scaling mistakes show."""
    batch, variates, length = 2, 3, 8 * patch
    walk = torch.randn(batch, variates, length, generator=generator).cumsum(-1)
    target = walk * torch.tensor([1.0, 50.0, 0.01]).view(1, 3, 1) + torch.tensor([0.0, 1000.0, -3.0]).view(1, 3, 1)
    missing = torch.rand(batch, variates, length, generator=generator) < 0.2
    missing[0, 1, 5 * patch : 6 * patch] = True  # one whole patch without data
    missing[1, 0, 0:patch] = True  # and one at the start of a row
    return {
        "target": target,
        "observed": torch.ones(batch, variates, length, dtype=torch.bool),
        "missing_observed": ~missing,
        "missing_inner_observed": ~missing | (torch.arange(length) < patch),  # the first patch complete
        "series_ids": torch.zeros(batch, variates, dtype=torch.long),
        "groups_series_ids": torch.tensor([[0, 0, 1], [0, 1, 1]]),
        "known_dynamic": torch.randn(batch, 2, length + 24, generator=generator),  # covariate cases: horizon 24
    }


def case_inputs(case: dict, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    kind = case.get("inputs")
    inputs = {
        "target": data["target"],
        "target_mask": data[f"{kind}_observed"] if kind in ("missing", "missing_inner") else data["observed"],
        "series_ids": data["groups_series_ids"] if kind == "groups" else data["series_ids"],
    }
    if kind in ("missing", "missing_inner"):
        # The official decoder needs finite values everywhere; missing ones are masked, not NaN.
        inputs["target"] = torch.where(inputs["target_mask"], data["target"], 0.0)
    if kind == "covariates":
        inputs["known_dynamic"] = data["known_dynamic"]
        inputs["known_dynamic_mask"] = torch.ones_like(data["known_dynamic"], dtype=torch.bool)
        inputs["known_dynamic_series_ids"] = torch.zeros(2, 2, dtype=torch.long)
    return inputs


def gluonts_entries(data: dict[str, torch.Tensor]) -> list[dict]:
    """Univariate GluonTS entries of different lengths, with NaN gaps (one at the end of a context)."""
    import pandas as pd

    series = data["target"].flatten(0, 1).clone()  # (6, time)
    series[1, -3:] = float("nan")
    series[2, 10:30] = float("nan")
    return [{"start": pd.Period("2024-01-01", freq="h"), "item_id": str(i), "target": row[i * 7 :].numpy()}
            for i, row in enumerate(series)]


def forecast_kwargs(case: dict, patch: int) -> dict:
    kwargs = {k: v for k, v in case.items() if k not in ("inputs", "horizon")}
    block = kwargs.get("decode_block_size")
    if block is not None:
        kwargs["decode_block_size"] = {"patch": patch, "2patch": 2 * patch}[block]
    return kwargs


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Unit-normal weights (u-muP's init), random biases, norm weights and query scales away from 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("bias"):
                p.copy_(0.3 * noise)
            elif "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            elif "per_dim_scale" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise)


def write(name: str, out: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    config = Toto2ModelConfig(**CONFIGS[name])
    model = Toto2Model(config).eval()
    randomise(model, generator)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")

    data = make_inputs(config.patch_size, generator)
    tensors = dict(data)
    for case_name, case in CASES.items():
        inputs = case_inputs(case, data)
        kwargs = forecast_kwargs(case, config.patch_size)
        tensors[f"{case_name}/quantiles"] = model.forecast(inputs, case["horizon"], **kwargs).contiguous()
    # A context that is not a whole number of patches, left-padded by our implementation (the official code
    # refuses it): its reference is the same series with the padding written out as unobserved values.
    pad = 3
    ragged = {k: v[..., pad:] for k, v in case_inputs({}, data).items() if k != "series_ids"}
    padded = {"target": torch.nn.functional.pad(ragged["target"], (pad, 0)),
              "target_mask": torch.nn.functional.pad(ragged["target_mask"], (pad, 0)),
              "series_ids": data["series_ids"]}
    tensors["ragged_context/quantiles"] = model.forecast(padded, 24).contiguous()
    # forward(): the training-time outputs, with the last two patches hidden as forecast placeholders.
    cpm = torch.ones_like(data["observed"])
    cpm[..., -2 * config.patch_size :] = False
    output = model(data["target"], data["missing_observed"], cpm, data["series_ids"])
    tensors |= {"forward/quantiles": output.quantiles, "forward/loc": output.loc, "forward/scale": output.scale,
                "forward/cpm_mask": cpm}
    # The official GluonTS wrapper (ffill imputation, scaler fallback, quantile cap) on univariate entries.
    from toto2 import Toto2GluonTSModel, Toto2GluonTSModelConfig

    gluonts_config = Toto2GluonTSModelConfig(prediction_length=20, context_length=6 * config.patch_size, target_dim=1)
    predictor = Toto2GluonTSModel(model, gluonts_config).create_predictor(batch_size=4, device="cpu")
    entries = gluonts_entries(data)
    forecasts = list(predictor.predict(entries))
    tensors["gluonts/quantiles"] = torch.stack([torch.as_tensor(f.forecast_array) for f in forecasts]).float()
    metadata = {"cases": json.dumps(CASES), "ragged_pad": str(pad)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "reference.safetensors", metadata=metadata)
    print(f"{folder}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {len(CASES) + 2} cases")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--configs", choices=sorted(GROUPS), default="small")
    args = parser.parse_args()
    torch.manual_seed(0)
    for name in GROUPS[args.configs]:
        write(name, args.out)


if __name__ == "__main__":
    main()
