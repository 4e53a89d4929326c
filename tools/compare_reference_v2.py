"""Compare our Toto 2.0 with reference outputs written by tools/make_reference_v2.py (official toto-2).

    .venv/bin/python -m tools.compare_reference_v2 tests/fixtures/toto2/gqa [--dtype bfloat16]

Prints, per case, max |ours - official| / max |official| (the issue's relative error); tests/test_v2_parity.py
asserts on the same numbers. The cases' inputs are rebuilt by the same functions that built them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tools.make_reference_v2 import case_inputs, forecast_kwargs, gluonts_entries
from toto.v2 import Toto2Model


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours.float() - reference).abs().max() / reference.abs().max())


def compare(folder: Path, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    reference = load_file(folder / "reference.safetensors")
    with safe_open(folder / "reference.safetensors", "pt") as f:
        metadata = f.metadata()
    cases, pad = json.loads(metadata["cases"]), int(metadata["ragged_pad"])
    model = Toto2Model.from_pretrained(folder).to(dtype)
    patch = model.config.patch_size
    errors = {}
    for name, case in cases.items():
        ours = model.forecast(case_inputs(case, reference), case["horizon"], **forecast_kwargs(case, patch))
        errors[name] = relative_error(ours, reference[f"{name}/quantiles"])
    plain = case_inputs({}, reference)
    ragged = {"target": plain["target"][..., pad:], "target_mask": plain["target_mask"][..., pad:],
              "series_ids": plain["series_ids"]}
    errors["ragged_context"] = relative_error(model.forecast(ragged, 24), reference["ragged_context/quantiles"])
    from toto2 import Toto2GluonTSModel, Toto2GluonTSModelConfig

    gluonts_config = Toto2GluonTSModelConfig(prediction_length=20, context_length=6 * patch, target_dim=1)
    predictor = Toto2GluonTSModel(model, gluonts_config).create_predictor(batch_size=4)
    forecasts = list(predictor.predict(gluonts_entries(reference)))
    # Ours adds a "mean" key (the median) after the nine knots; the official forecasts carry the knots only.
    ours = torch.stack([torch.as_tensor(f.forecast_array[:9]) for f in forecasts])
    errors["gluonts"] = relative_error(ours, reference["gluonts/quantiles"])
    with torch.no_grad():
        out = model(reference["target"], reference["missing_observed"], reference["forward/cpm_mask"],
                    reference["series_ids"])
    for field in ("quantiles", "loc", "scale"):
        errors[f"forward_{field}"] = relative_error(getattr(out, field), reference[f"forward/{field}"])
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--record", metavar="TITLE", help="also write the figures to docs/benchmarks.md under TITLE")
    args = parser.parse_args()
    errors = compare(args.folder, getattr(torch, args.dtype))
    for name, error in errors.items():
        print(f"{name:20s} {error:.2e}")
    if args.record:
        from benchmarks.report import command_line, markdown_table, write_section

        model = Toto2Model.from_pretrained(args.folder)
        c = model.config
        parameters = sum(p.numel() for p in model.parameters())
        write_section(f"parity-v2-{args.record}", "\n".join([
            f"## Parity with toto-2 2.0.0: {args.record} ({parameters / 1e6:.1f}M parameters: {c.num_layers} layers, "
            f"d_model {c.d_model}, {c.num_heads} heads, patch {c.patch_size}), {args.dtype} on CPU",
            "",
            "Reference written by `tools/make_reference_v2.py --configs 22m` in the toto-2 venv; compared with "
            f"`{command_line()}`. Error is max |ours - official| / max |official| over the nine quantiles.",
            "",
            markdown_table(["case", "relative error vs toto-2 2.0.0"], [[n, f"{e:.1e}"] for n, e in errors.items()]),
        ]))


if __name__ == "__main__":
    main()
