"""Toto 2.0's weights: `model.safetensors` or the shards `model.safetensors.index.json` lists, the layout of
`Datadog/Toto-2.0-*`, read from safetensors only (never pickle) and checked against the model before they replace
its parameters. Finding folders and checking weights is shared by both families (`toto.checkpoint_io`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from toto.checkpoint_io import INDEX_FILE, WEIGHTS_FILE, expected_tensors, validate_state_dict


def read_state_dict(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors`, or of the shards that `model.safetensors.index.json` names."""
    index = folder / INDEX_FILE
    if (folder / WEIGHTS_FILE).is_file():
        files = [folder / WEIGHTS_FILE]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = [folder / name for name in sorted(set(weight_map.values()))]
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{index} is not a safetensors index (a JSON object with a 'weight_map')") from error
    else:
        raise FileNotFoundError(f"no {WEIGHTS_FILE} or {INDEX_FILE} in {folder}")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing: {index.name} lists it as a shard")
        try:
            state.update(load_file(file, device=str(map_location)))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{file} is not a readable safetensors file ({error}): download it again") from error
    return state


ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def load_weights(build: Callable[[], ModuleT], folder: Path, map_location: str | torch.device,
                 strict: bool) -> ModuleT:
    """Read the folder's tensors, check them against the model `build` makes (names, shapes, dtypes, finiteness)
    on the meta device, so that a config that does not describe them fails before a model of its size is
    allocated, then build the model and load them."""
    state = read_state_dict(folder, map_location)
    validate_state_dict(state, expected_tensors(build), folder, strict)
    model = build()
    model.load_state_dict(state, strict=strict)
    return model
