"""Checkpoint folders, shared by both model families: finding them (embedded models, local folders, Hugging Face Hub
repositories), reading their config and training summary, checking weights against a model, and writing them.

A checkpoint is a folder with `config.json` and its weights: `model.safetensors` (the layout of
`Datadog/Toto-Open-Base-1.0` and `Datadog/Toto-2.0-*`) or safetensors shards listed by `model.safetensors.index.json`.
Each family reads its own weights (`toto.model.checkpoint`, `toto.v2.checkpoint`); everything else about a folder is
here. Only `snapshot_download` is used from huggingface_hub (stable across 0.x and 1.x), not `ModelHubMixin`, whose
`_from_pretrained` signature changed in huggingface_hub 1.0 and broke the official package.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

EMBEDDED_DIR = Path(__file__).resolve().parent / "checkpoints"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Optional, beside the weights: how they were trained (written by tools/ship_embedded_model.py). Its "status" is
# "random-init" for untrained weights, and its "context_length" is the context the model was trained with, which
# the pipelines then default to.
TRAINING_SUMMARY_FILE = "training_summary.json"
# What a checkpoint download fetches from a Hub repository.
HUB_FILES = [CONFIG_FILE, WEIGHTS_FILE, INDEX_FILE, "*.safetensors", TRAINING_SUMMARY_FILE]


def embedded_models() -> list[str]:
    """Names of the models that ship inside the package (usable offline by name)."""
    if not EMBEDDED_DIR.is_dir():
        return []
    return sorted(p.name for p in EMBEDDED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve(name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
            token: str | bool | None = None, local_files_only: bool = False, force_download: bool = False,
            proxies: dict | None = None) -> Path:
    """A local folder holding the checkpoint's files: a folder (or a file in it), an embedded model's name, or a
    Hugging Face Hub repo id ('owner/name'), downloaded (single file or shards) unless it is in the cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    name = str(name_or_path)
    if name in embedded_models():
        return EMBEDDED_DIR / name
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(
            f"no checkpoint folder at {name!r}: pass a folder with {CONFIG_FILE} and {WEIGHTS_FILE}, a Hugging Face "
            f"repo id such as 'Datadog/Toto-Open-Base-1.0', or an embedded model name ({', '.join(embedded_models())})"
        )
    from huggingface_hub import snapshot_download

    try:
        # huggingface_hub 1.x dropped `proxies` from the signature (0.x passes it to requests); its argument
        # validator still accepts it and ignores it (with a warning), hence the ignore.
        folder = snapshot_download(name, revision=revision, cache_dir=cache_dir, token=token,  # type: ignore[call-overload]
                                   local_files_only=local_files_only, force_download=force_download, proxies=proxies,
                                   allow_patterns=HUB_FILES)
    except Exception as error:  # the hub raises many types: offline, HTTP, missing repo, missing file
        raise OSError(hub_error_message(name, error)) from error
    return Path(folder)


def hub_error_message(repo_id: str, error: Exception) -> str:
    """What to do when a checkpoint cannot be fetched from the Hub."""
    return (
        f"could not get {repo_id!r} from the Hugging Face Hub ({type(error).__name__}: {error}). "
        f"On a machine without Hub access, download it elsewhere with `hf download {repo_id} --local-dir DIR` "
        f"(or `huggingface-cli download`), copy DIR here and pass the folder: from_pretrained('DIR')."
    )


def expected_tensors(build: Callable[[], torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The state dict a model would have, built on the meta device: shapes and dtypes without allocating memory,
    so that weights can be checked against a config before a (possibly absurdly large) model is allocated."""
    with torch.device("meta"):
        return dict(build().state_dict())


def validate_state_dict(state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                        source: str | Path, strict: bool = True) -> None:
    """Refuse weights that would load wrongly or silently give garbage, naming `source` (the file) and the key:
    missing or unexpected names (when `strict`), other shapes, integer weights where the model has floating
    point ones (e.g. int8) and NaN or infinite values.

    `expected` maps names to tensors of the right shape and dtype (`expected_tensors`, or a model's state dict).
    """
    if strict:
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{source}: checkpoint does not match the model config; missing keys: {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''}; unexpected keys: {unexpected[:8]}"
                f"{' ...' if len(unexpected) > 8 else ''} (pass strict=False to load anyway)"
            )
    for key, tensor in state_dict.items():
        if key not in expected:
            continue
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{source}: weight {key!r} has shape {tuple(tensor.shape)} but the config needs "
                f"{tuple(expected[key].shape)}: config.json does not describe these weights"
            )
        if expected[key].is_floating_point() and not tensor.is_floating_point():
            raise ValueError(f"{source}: weight {key!r} has dtype {tensor.dtype}; Toto weights are floating point")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{source}: weight {key!r} holds NaN or infinite values: the file is corrupt")


def read_training_summary(folder: Path) -> dict:
    """The folder's training_summary.json; {} when there is none (most checkpoints) or it is not a JSON object."""
    try:
        summary = json.loads((folder / TRAINING_SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def read_config(folder: Path) -> dict:
    """The folder's config.json as a dict; a missing, unreadable or non-object file is an error naming it."""
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: a checkpoint folder needs {CONFIG_FILE} beside its weights")
    try:
        values = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}): restore or download it again") from error
    if not isinstance(values, dict):
        raise ValueError(f"{config_path} must be a JSON object of config fields, got a {type(values).__name__}")
    return values


def write_folder(directory: str | Path, config: dict, module: torch.nn.Module) -> Path:
    """Write a checkpoint folder, config.json and model.safetensors (created if needed), as both families'
    official packages lay it out."""
    return write_state(directory, config, module.state_dict())


def write_state(directory: str | Path, config: dict, state: Mapping[str, torch.Tensor]) -> Path:
    """`write_folder` from a state dict (the tools that grow a checkpoint edit tensors, not modules)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / CONFIG_FILE, "w") as f:
        json.dump(config, f, indent=2)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, directory / WEIGHTS_FILE, metadata={"format": "pt"})
    return directory
