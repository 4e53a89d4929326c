"""Finding and reading checkpoints: embedded models, local folders and Hugging Face Hub repositories.

A checkpoint is a folder with `config.json` and `model.safetensors`, the layout of `Datadog/Toto-Open-Base-1.0`.
Only `hf_hub_download` is used from huggingface_hub (stable across 0.x and 1.x), not `ModelHubMixin`, whose
`_from_pretrained` signature changed in huggingface_hub 1.0 and broke the official package.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

EMBEDDED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
# The embedded model that every entry point (CLI, pandas API, service, batch forecasting) uses by default.
DEFAULT_MODEL = "toto-tiny"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# Optional, beside the weights: how they were trained (written by tools/ship_embedded_model.py). Its "status" is
# "random-init" for untrained weights, and its "context_length" is the context the model was trained with, which
# the pipelines then default to.
TRAINING_SUMMARY_FILE = "training_summary.json"
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")

# Toto 1.0 checkpoints store the SwiGLU MLP either fused (xformers) or as two plain linear layers.
_FUSED_TO_PLAIN = [(re.compile(r"\.mlp\.0\.w12\."), ".mlp.0."), (re.compile(r"\.mlp\.0\.w3\."), ".mlp.2.")]
# Buffers recomputed from the config; older checkpoints store them.
_DERIVED_KEYS = re.compile(r"rotary_emb\.(freqs|scale|cached_\w+|dummy)$")


def embedded_models() -> list[str]:
    """Names of the models that ship inside the package (usable offline by name)."""
    if not EMBEDDED_DIR.is_dir():
        return []
    return sorted(p.name for p in EMBEDDED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve(name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
            token: str | bool | None = None, local_files_only: bool = False) -> Path:
    """Return a local folder holding the checkpoint's files, downloading from the Hub if needed."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    if str(name_or_path) in embedded_models():
        return EMBEDDED_DIR / str(name_or_path)
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(
            f"no checkpoint folder at {name!r}: pass a folder with {CONFIG_FILE} and {WEIGHTS_FILE}, a Hugging Face "
            f"repo id such as 'Datadog/Toto-Open-Base-1.0', or an embedded model name ({', '.join(embedded_models())})"
        )
    return _download(name, revision, cache_dir, token, local_files_only)


def _download(repo_id: str, revision: str | None, cache_dir: str | Path | None, token: str | bool | None,
              local_files_only: bool) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        config_path = hf_hub_download(repo_id, CONFIG_FILE, revision=revision, cache_dir=cache_dir, token=token,
                                      local_files_only=local_files_only)
        hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision, cache_dir=cache_dir, token=token,
                        local_files_only=local_files_only)
    except Exception as error:  # the hub raises many types: offline, HTTP, missing repo, missing file
        raise OSError(hub_error_message(repo_id, error)) from error
    return Path(config_path).parent


def hub_error_message(repo_id: str, error: Exception) -> str:
    """What to do when a checkpoint cannot be fetched from the Hub (shared by Toto 1.0 and 2.0 loading)."""
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
    Shared by Toto 1.0 and 2.0 loading.
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


def check_state_dict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                     strict: bool = True) -> None:
    """`validate_state_dict` against an existing module's own state dict."""
    validate_state_dict(state_dict, module.state_dict(), source, strict)


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
