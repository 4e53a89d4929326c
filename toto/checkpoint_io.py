"""Checkpoint folders, shared by both model families: finding them (embedded models, local folders, Hugging Face Hub
repositories), reading their config and training summary, checking weights against a model, and writing them.

A checkpoint is a folder with `config.json` and its weights: `model.safetensors` (the layout of
`Datadog/Toto-Open-Base-1.0` and `Datadog/Toto-2.0-*`) or safetensors shards listed by `model.safetensors.index.json`.
Each family reads its own weights (`toto.model.checkpoint`, `toto.v2.checkpoint`); everything else about a folder is
here. Only `snapshot_download` is used from huggingface_hub (stable across 0.x and 1.x), not `ModelHubMixin`, whose
`_from_pretrained` signature changed in huggingface_hub 1.0 and broke the official package.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from toto.validation import MIN_TIME_STEPS, InputError, check_context_length

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
# The files a model is loaded from, beside config.json and the training summary: safetensors (single or sharded)
# and the pickle files Toto 1.0 folders may hold.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
# The size keys of each family's config.json (Toto 1.0, Toto 2.0): width, feed-forward width, depth.
WIDTH_KEYS = ("embed_dim", "d_model")
FEED_FORWARD_KEYS = ("mlp_hidden_dim", "d_ff")
# A model is built in float32 from its config before its weights are loaded into it.
BUILD_BYTES_PER_PARAMETER = 4


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


# The fields of a training summary that set a pipeline's defaults: a context length, or a list of them.
SUMMARY_CONTEXT_FIELDS = ("context_length", "default_context_length")
SUMMARY_ENSEMBLE_FIELD = "context_ensemble"


def read_training_summary(folder: Path) -> dict:
    """The folder's training_summary.json; {} when there is none (most checkpoints).

    The fields that set a pipeline's defaults (`SUMMARY_CONTEXT_FIELDS`, `SUMMARY_ENSEMBLE_FIELD`) are checked here,
    where the file is read, so that a bad one is an `InputError` naming the file and the field, not an error about a
    setting the caller never gave; a file that is not a JSON object is refused too, rather than taken for none.
    """
    path = folder / TRAINING_SUMMARY_FILE
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # unreadable, not UTF-8 or not JSON
        raise InputError(f"{path} is not valid JSON ({error}): fix it or delete it (the file is optional)") from error
    if not isinstance(summary, dict):
        raise InputError(f"{path} must be a JSON object, got a {type(summary).__name__}: fix it or delete it")
    for field in SUMMARY_CONTEXT_FIELDS:
        if field in summary and not _is_context_length(summary[field]):
            raise InputError(f"{path}: {field} must be an integer of at least {MIN_TIME_STEPS}, got "
                             f"{summary[field]!r}; fix the field or remove it")
    ensemble = summary.get(SUMMARY_ENSEMBLE_FIELD)
    if SUMMARY_ENSEMBLE_FIELD in summary and not (
            isinstance(ensemble, list) and ensemble and all(_is_context_length(c) for c in ensemble)):
        raise InputError(f"{path}: {SUMMARY_ENSEMBLE_FIELD} must be a list of integers of at least {MIN_TIME_STEPS},"
                         f" got {ensemble!r}; fix the field or remove it")
    return summary


def _is_context_length(value: object) -> bool:
    """Whether `value` passes the rule of a context length (`toto.validation.check_context_length`)."""
    try:
        check_context_length(value)
    except InputError:
        return False
    return True


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
    check_model_size(values, config_path)
    return values


def check_model_size(values: Mapping[str, object], source: str | Path) -> None:
    """Refuse a config whose model cannot be built on this machine, before any tensor is made (a width of 2**40
    overflows torch's size arithmetic even on the meta device, where weights are checked against the config).

    The estimate counts the layers' attention projections (4 width x width) and feed-forward (3 width x
    feed-forward width), as both families lay them out with their default head sizes, in float32; embeddings,
    norms and the output head add a few percent. Sizes that are not positive integers are left to the family's
    config, which refuses them naming the key (`toto.model.config`, `toto.v2.config`).
    """
    def size(keys: tuple[str, ...]) -> tuple[str, int] | None:
        for key in keys:
            value = values.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return key, value
        return None

    width, feed_forward, depth = size(WIDTH_KEYS), size(FEED_FORWARD_KEYS), size(("num_layers",))
    if width is None:
        return
    parameters = (depth[1] if depth else 1) * width[1] * (4 * width[1] + 3 * (feed_forward[1] if feed_forward else 0))
    needed, available = parameters * BUILD_BYTES_PER_PARAMETER, available_memory_bytes()
    if available is not None and needed > available:
        sizes = ", ".join(f"{key} {value}" for key, value in filter(None, (width, feed_forward, depth)))
        raise ValueError(
            f"{source}: a model of {sizes} has about {parameters:.3g} parameters, {needed / 2**30:.3g} GiB of"
            f" float32 weights, more than the {available / 2**30:,.1f} GiB of memory available: the file is"
            " damaged or describes another model; restore it, or load the model on a machine with more memory"
        )


def available_memory_bytes() -> int | None:
    """The memory this machine can still give: MemAvailable (Linux), else its physical memory; None where the
    system says neither."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows), or a name this system lacks
        return None


def fingerprint(folder: Path) -> str:
    """The sha256 of what a checkpoint folder's forecasts are made from: its config, training summary and weights
    (names and bytes). Two folders with the same fingerprint forecast alike, wherever they are."""
    digest = hashlib.sha256()
    names = {CONFIG_FILE, INDEX_FILE, TRAINING_SUMMARY_FILE}
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.name in names or path.suffix in WEIGHT_SUFFIXES):
            digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
            with path.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


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
