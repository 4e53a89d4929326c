"""Lightning checkpoint -> `Toto.from_pretrained` / `Toto2Model.from_pretrained` folder (config.json +
model.safetensors).

The module stores the model's config.json dict and its LoRA settings in every checkpoint (`toto_config` and
`toto_lora`, or `toto2_config` and `toto2_lora`), so export needs neither the original pretrained folder nor the
training config; LoRA adapters are merged into plain weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from toto.validation import InputError
from train.module import model_from_checkpoint as toto_from_checkpoint
from train.module_v2 import model_from_checkpoint as toto2_from_checkpoint


def _load(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"no checkpoint at {path}: give a .ckpt file, or a run folder whose checkpoints/ holds "
                         "last.ckpt")
    # Our own checkpoints hold only tensors and plain Python values, so the safe loader reads them.
    return torch.load(path, map_location="cpu", weights_only=True)


def resolve_checkpoint(checkpoint: str | Path, which: Literal["best", "last"] = "best") -> Path:
    """A .ckpt file as is; for a run folder (or its checkpoints/ folder), the best or last checkpoint in it."""
    path = Path(checkpoint)
    if path.is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    last = folder / "last.ckpt"
    if which == "best":
        states = _load(last).get("callbacks", {})
        best = next((s.get("best_model_path") for k, s in states.items() if k.startswith("ModelCheckpoint")), None)
        if best and Path(best).is_file():
            return Path(best)
    return last


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path, which: Literal["best", "last"] = "best") -> Path:
    """Write the model of `checkpoint` (a .ckpt file or a run folder) to `output_dir`; returns that folder."""
    path = resolve_checkpoint(checkpoint, which)
    return export_state(_load(path), output_dir, source=str(path))


def export_state(state: dict, output_dir: str | Path, source: str = "the checkpoint") -> Path:
    """Write the model of a checkpoint dict (`state_dict` plus what the module's `on_save_checkpoint` adds)."""
    if "toto2_config" in state:
        return toto2_from_checkpoint(state).save_pretrained(output_dir)
    if "toto_config" not in state:
        raise ValueError(f"{source} was not written by train.module.TotoModule or train.module_v2.Toto2Module "
                         "(no 'toto_config' or 'toto2_config' in it)")
    return toto_from_checkpoint(state).save_pretrained(output_dir)
