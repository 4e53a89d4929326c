"""`Toto`: the model as published (`Datadog/Toto-Open-Base-1.0`), with loading and saving.

`Toto(**config_json)` builds it like the official package; `Toto.from_pretrained` reads an embedded model name,
a local folder or a Hub repo id; `save_pretrained` writes a folder that both this package and the official one load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from toto import checkpoint_io

from . import checkpoint
from .backbone import TotoBackbone
from .config import TotoConfig


class Toto(torch.nn.Module):
    """`Toto(**config_json)`, `Toto(patch_size, stride, embed_dim, ...)` in Toto 1.0's order, or `Toto(config)`."""

    def __init__(self, *args: Any, config: TotoConfig | None = None, **config_kwargs: Any) -> None:
        super().__init__()
        self.model = TotoBackbone(*args, config=config, **config_kwargs)
        self.config = self.model.config
        self.name_or_path: str | None = None  # set by from_pretrained

    @classmethod
    def from_config(cls, config: TotoConfig) -> Toto:
        return cls(config)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        map_location: str | torch.device = "cpu",
        strict: bool = True,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        **config_overrides: Any,
    ) -> Toto:
        """Load an embedded model ("toto-tiny"), a local folder, or a Hub repo ("Datadog/Toto-Open-Base-1.0").

        `config_overrides` replace config.json values (for example `use_memory_efficient_attention=False`).
        """
        folder = checkpoint_io.resolve(name_or_path, revision, cache_dir, token, local_files_only)
        config = TotoConfig.from_dict({**checkpoint_io.read_config(folder), **config_overrides},
                                      source=str(folder / checkpoint_io.CONFIG_FILE))
        state = checkpoint.normalise_keys(checkpoint.read_state_dict(folder, map_location))
        # Checked against the config on the meta device first: a config that does not describe these weights
        # fails naming the key, before a model of its size is allocated.
        checkpoint_io.validate_state_dict(state, checkpoint_io.expected_tensors(lambda: cls(config)),
                                          folder / checkpoint_io.WEIGHTS_FILE, strict)
        model = cls(config)
        checkpoint.load_into(model, state, strict=strict)
        model.name_or_path = str(name_or_path)
        return model.to(map_location).eval()

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, map_location: str = "cpu", strict: bool = True,
                             **config_overrides: Any) -> Toto:
        """Toto 1.0's name for loading a local folder or model.safetensors file."""
        return cls.from_pretrained(checkpoint_path, map_location=map_location, strict=strict, **config_overrides)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json and model.safetensors to `directory` (created if needed)."""
        return checkpoint_io.write_folder(directory, self.config.to_dict(), self)

    @property
    def device(self) -> torch.device:
        return self.model.device
