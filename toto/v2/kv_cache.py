"""The key/value cache of Toto 2.0's block decoding.

Decoding feeds, per block, the previous block's median forecast ("feedback" patches, kept) followed by placeholder
patches for the block to predict (used once, then dropped), as the official decoder does. Each time layer's cache
therefore appends the keys of a call and keeps only its first `keep` positions for the next call.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LayerCache:
    """Keys and values (rows, kv_heads, length, dim) of one time-wise attention layer."""

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None
        self.keep: int | None = None  # how many of the current call's positions to keep; None keeps them all

    def extend(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Return the cached keys and values followed by the new ones; keep the first `keep` new ones."""
        cached = 0 if self.keys is None else self.keys.shape[-2]
        if self.keys is not None:
            assert self.values is not None  # keys and values are always set together
            keys, values = torch.cat([self.keys, keys], dim=-2), torch.cat([self.values, values], dim=-2)
        kept = keys.shape[-2] if self.keep is None else cached + self.keep
        self.keys, self.values = keys[..., :kept, :], values[..., :kept, :]
        return keys, values


class KVCache:
    """One `LayerCache` per time layer, plus which cached positions are valid keys (patches with data)."""

    def __init__(self, num_time_layers: int) -> None:
        self.layers = [LayerCache() for _ in range(num_time_layers)]
        self.key_valid: Tensor | None = None  # (rows, cached length) bool

    @property
    def length(self) -> int:
        keys = self.layers[0].keys if self.layers else None
        return 0 if keys is None else keys.shape[-2]

    def extend_valid(self, valid: Tensor) -> Tensor | None:
        """Record which of this call's positions are valid keys; return the cached ones followed by the new ones
        (None on the first call, whose mask is the plain one). The first call's positions are valid where their
        patch has data; positions decoded later always are (they hold forecasts), as in the official decoder."""
        keep = self.layers[0].keep if self.layers else None
        if self.key_valid is None:
            self.key_valid = valid if keep is None else valid[:, :keep]
            return None
        key_valid = torch.cat([self.key_valid, torch.ones_like(valid)], dim=-1)
        self.key_valid = key_valid if keep is None else key_valid[:, : self.length + keep]
        return key_valid

    def set_keep(self, keep: int) -> None:
        for layer in self.layers:
            layer.keep = keep
