"""Toto 1.0's weights: `model.safetensors` (or, read as plain tensors only, a pickle file), in the fused or the plain
SwiGLU key layout. Finding folders and checking weights is shared by both families (`toto.checkpoint_io`).
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from toto.checkpoint_io import WEIGHTS_FILE

log = logging.getLogger(__name__)

PICKLE_WEIGHTS = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")

# Toto 1.0 checkpoints store the SwiGLU MLP either fused (xformers) or as two plain linear layers.
_FUSED_TO_PLAIN = [(re.compile(r"\.mlp\.0\.w12\."), ".mlp.0."), (re.compile(r"\.mlp\.0\.w3\."), ".mlp.2.")]
# Buffers recomputed from the config; older checkpoints store them.
_DERIVED_KEYS = re.compile(r"rotary_emb\.(freqs|scale|cached_\w+|dummy)$")


def read_state_dict(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Weights from model.safetensors; pickle files only through torch.load(weights_only=True).

    An empty, truncated or corrupt file is an error that names it, not safetensors' bare message.
    """
    weights = folder / WEIGHTS_FILE
    if weights.is_file():
        if weights.stat().st_size == 0:
            raise ValueError(f"{weights} is empty: download or export the checkpoint again")
        try:
            return load_file(weights, device=str(map_location))
        except (SafetensorError, OSError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"{weights} is not a readable safetensors file ({error}): it is truncated or corrupt; download or"
                " export the checkpoint again"
            ) from error
    for name in PICKLE_WEIGHTS:
        if (folder / name).is_file():
            warnings.warn(f"loading pickle weights {folder / name} with weights_only=True; prefer {WEIGHTS_FILE}")
            try:
                state = torch.load(folder / name, map_location=map_location, weights_only=True)
            except Exception as error:
                raise ValueError(
                    f"{folder / name} is not a plain tensor checkpoint and pickle code is never executed "
                    f"(weights_only=True): convert it to {WEIGHTS_FILE} in a trusted environment"
                ) from error
            return state.get("state_dict", state)
    raise FileNotFoundError(f"no {WEIGHTS_FILE} in {folder}")


def normalise_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the fused SwiGLU layout to the plain one and drop derived buffers."""
    out = {}
    for key, value in state_dict.items():
        if _DERIVED_KEYS.search(key):
            continue
        for pattern, replacement in _FUSED_TO_PLAIN:
            key = pattern.sub(replacement, key)
        out[key] = value
    return out


def load_into(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load weights, naming every missing or unexpected key instead of silently dropping it."""
    result = module.load_state_dict(normalise_keys(state_dict), strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys: {result.missing_keys}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys: {result.unexpected_keys}")
    if problems:
        message = "checkpoint does not match the model config; " + "; ".join(problems)
        if strict:
            raise ValueError(message + " (pass strict=False to load anyway)")
        log.warning(message)


