"""Finding and reading Toto 2.0 checkpoints: local folders and Hugging Face Hub repositories.

A checkpoint folder holds `config.json` (the flat fields of `Toto2Config`) and either `model.safetensors` or
shards listed by `model.safetensors.index.json`, the layout of `Datadog/Toto-2.0-*`. Local names, embedded
models and the Hub's error messages are shared with Toto 1.0 (`toto.model.checkpoint`); weights are read from
safetensors only (never pickle), and checked against the model before they replace its parameters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from toto.model import checkpoint as shared
from toto.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_config, write_folder

INDEX_FILE = "model.safetensors.index.json"

__all__ = ["CONFIG_FILE", "INDEX_FILE", "WEIGHTS_FILE", "load_weights", "read_config", "read_state_dict", "resolve",
           "write_folder"]


def resolve(name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
            token: str | bool | None = None, local_files_only: bool = False, force_download: bool = False,
            proxies: dict | None = None) -> Path:
    """A local folder with the checkpoint's files; a Hub repo id is downloaded (single file or shards)."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists() or name in shared.embedded_models() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        return shared.resolve(name_or_path, revision, cache_dir, token, local_files_only)
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            name, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only,
            force_download=force_download, proxies=proxies,
            allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE, "*.safetensors"],
        )
    except Exception as error:  # the hub raises many types: offline, HTTP, missing repo
        raise OSError(shared.hub_error_message(name, error)) from error
    return Path(folder)


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


def load_weights(build: Callable[[], torch.nn.Module], folder: Path, map_location: str | torch.device,
                 strict: bool) -> torch.nn.Module:
    """Read the folder's tensors, check them against the model `build` makes (names, shapes, dtypes, finiteness)
    on the meta device, so that a config that does not describe them fails before a model of its size is
    allocated, then build the model and load them."""
    state = read_state_dict(folder, map_location)
    shared.validate_state_dict(state, shared.expected_tensors(build), folder, strict)
    model = build()
    model.load_state_dict(state, strict=strict)
    return model
