"""A Toto 1.0 checkpoint with wider MLPs, computing exactly what the trained one computes (function-preserving).

    .venv/bin/python tools/widen_mlp.py runs/pretrain-tiny-2048/export runs/widened-768/init --mlp-hidden-dim 768

The depth up-scaled model (tools/upscale_depth.py) forecasts better but 1.8 times slower, because a lone series'
pass is bound by the number of torch calls, and depth adds calls. Width adds none: a wider MLP only makes the same
matrix products larger. This grows every layer's SwiGLU from `mlp_hidden_dim` to `--mlp-hidden-dim` units, as
Net2Net's wider networks do (Chen et al., 2016), keeping the function: the new units' gate and value rows are
drawn like a fresh `nn.Linear`'s, and their columns of the output projection are zero, so they add nothing until
training moves them (their gradient is not zero: it is the upstream gradient times the new units' activations).
Writes config.json and model.safetensors; refuses to overwrite an existing folder.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch

from toto.checkpoint_io import read_config, write_state
from toto.model.checkpoint import read_state_dict

MLP_KEY = re.compile(r"^model\.transformer\.layers\.\d+\.mlp\.(0|2)\.(weight|bias)$")


def widen(state: dict[str, torch.Tensor], hidden: int, wider: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """The state dict with every MLP widened from `hidden` to `wider` SwiGLU units.

    mlp.0 maps the embedding to (gate, value), gate in the first half (`transformer.SwiGLU`); mlp.2 maps the units
    back. New gate and value rows are uniform in +-1/sqrt(embed), as nn.Linear draws them; new output columns are 0.
    """
    if wider <= hidden:
        raise SystemExit(f"--mlp-hidden-dim {wider} must exceed the checkpoint's mlp_hidden_dim ({hidden})")
    generator = torch.Generator().manual_seed(seed)
    added = wider - hidden
    out = {}
    for key, value in state.items():
        match = MLP_KEY.match(key)
        if match is None:
            out[key] = value
            continue
        layer, kind = match.groups()
        if layer == "0":  # (2 * hidden, embed) weight or (2 * hidden,) bias: gate rows, then value rows
            gate, val = value.split(hidden, dim=0)
            bound = 1 / math.sqrt(state[key.rsplit(".", 1)[0] + ".weight"].shape[1])  # nn.Linear's, by fan-in
            fresh = [(torch.rand((added, *value.shape[1:]), generator=generator) * 2 - 1) * bound for _ in range(2)]
            out[key] = torch.cat([gate, fresh[0].to(value.dtype), val, fresh[1].to(value.dtype)], dim=0)
        elif kind == "weight":  # (embed, hidden): the new units' columns are zero
            out[key] = torch.cat([value, value.new_zeros(value.shape[0], added)], dim=1)
        else:  # mlp.2.bias lives in the embedding space: unchanged
            out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a Toto 1.0 save_pretrained folder (config.json, model.safetensors)")
    parser.add_argument("target", type=Path, help="the new folder (must not exist)")
    parser.add_argument("--mlp-hidden-dim", type=int, required=True, help="SwiGLU units per layer of the new model")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new units' gate and value rows")
    args = parser.parse_args()
    if args.target.exists():
        raise SystemExit(f"{args.target} exists: choose a new folder (nothing is overwritten)")
    config = read_config(args.source)
    hidden = int(config["mlp_hidden_dim"])
    state = widen(read_state_dict(args.source), hidden, args.mlp_hidden_dim, args.seed)
    config["mlp_hidden_dim"] = args.mlp_hidden_dim
    write_state(args.target, config, state)
    print(f"wrote {args.target}: SwiGLU of {args.mlp_hidden_dim} units from {args.source}'s {hidden}")


if __name__ == "__main__":
    main()
