"""A deeper Toto 1.0 checkpoint from a trained one: each group of layers repeated (depth up-scaling).

    .venv/bin/python tools/upscale_depth.py runs/pretrain-tiny-2048/export runs/upscaled-12/export --repeat 2

Training a deeper model from scratch on two CPU cores sees too few windows to catch up with the small one. So the
deeper model starts from the trained one, as SOLAR's depth up-scaling does for language models (Kim et al.,
2023): every group of `spacewise_every_n_layers` layers (one space-wise layer and the time-wise ones that share its
group) is repeated `--repeat` times in place, so the space-wise layers keep their places in the pattern. The
repeated model is not the same function (each repeat adds its residual again); continued training recovers and
uses the new depth. Writes config.json and model.safetensors; refuses to overwrite an existing folder.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from toto.checkpoint_io import read_config, write_state
from toto.model.checkpoint import read_state_dict

LAYER_KEY = re.compile(r"^(model\.transformer\.layers\.)(\d+)(\..+)$")


def upscale(state: dict, num_layers: int, group: int, repeat: int) -> dict:
    """The state dict of a model whose layer groups of `group` layers are each repeated `repeat` times."""
    if num_layers % group:
        raise SystemExit(f"{num_layers} layers do not split into groups of {group} (spacewise_every_n_layers)")
    out = {}
    for key, value in state.items():
        match = LAYER_KEY.match(key)
        if match is None:
            out[key] = value
            continue
        layer = int(match.group(2))
        first, offset = divmod(layer, group)
        for copy in range(repeat):
            out[f"{match.group(1)}{(first * repeat + copy) * group + offset}{match.group(3)}"] = value.clone()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="a Toto 1.0 save_pretrained folder (config.json, model.safetensors)")
    parser.add_argument("target", type=Path, help="the new folder (must not exist)")
    parser.add_argument("--repeat", type=int, default=2, help="copies of each layer group (default 2: twice as deep)")
    args = parser.parse_args()
    if args.target.exists():
        raise SystemExit(f"{args.target} exists: choose a new folder (nothing is overwritten)")
    config = read_config(args.source)
    group = int(config["spacewise_every_n_layers"])
    state = upscale(read_state_dict(args.source), int(config["num_layers"]), group, args.repeat)
    config["num_layers"] = int(config["num_layers"]) * args.repeat
    write_state(args.target, config, state)
    layers = config["num_layers"]
    print(f"wrote {args.target}: {layers} layers from {args.source}'s {layers // args.repeat}")


if __name__ == "__main__":
    main()
