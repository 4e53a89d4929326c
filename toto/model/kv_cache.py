"""Key/value cache of the time-wise attention layers, for incremental (autoregressive) decoding.

Space-wise layers attend across variates at one time step, so they never need the past and keep no cache.
Besides keys and values the cache remembers which cached patches hold at least one observed value, so that fully
missing patches stay masked out as keys while decoding (see `attention.time_attention_mask`), and how many such
patches lead each row, from which the row's positions count (see `Transformer.forward`).
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Preallocated keys/values, (rows, heads, max_patches, head_dim) per time-wise layer; rows = batch * variates."""

    def __init__(
        self, num_time_layers: int, rows: int, num_heads: int, head_dim: int, max_patches: int,
        device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (num_time_layers, rows, num_heads, max_patches, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.key_valid = torch.ones(rows, max_patches, device=device, dtype=torch.bool)
        self._length = 0
        # Per row, how many patches at the start hold no observed value (set by the first forward).
        self.leading_invalid: Tensor | None = None

    @property
    def max_patches(self) -> int:
        return self.keys.shape[3]

    def __len__(self) -> int:
        """Number of patches (tokens) already cached."""
        return self._length

    def append_validity(self, valid: Tensor) -> Tensor:
        """Open room for new patches (once per forward, before the layers append their keys) and record which are
        observed; returns the validity of all cached + new patches (rows, length)."""
        start, end = self._length, self._length + valid.shape[-1]
        self._check_room(end)
        self.key_valid[:, start:end] = valid
        self._length = end
        return self.key_valid[:, :end]

    def append(self, slot: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store this layer's keys/values (rows, heads, new, head_dim) of the new patches; return all so far."""
        end = self._length
        start = end - keys.shape[2]
        self.keys[slot, :, :, start:end] = keys
        self.values[slot, :, :, start:end] = values
        return self.keys[slot, :, :, :end], self.values[slot, :, :, :end]

    def repeat(self, times: int, max_patches: int | None = None) -> KVCache:
        """A new cache holding this cache's content `times` over (rows ordered (times, rows)), with room to grow.

        This is how one encoded context is shared by many sample paths without encoding it again.
        """
        length = len(self)
        new = KVCache.__new__(KVCache)
        capacity = max_patches or self.max_patches
        layers, rows, heads, _, head_dim = self.keys.shape
        # Uninitialised beyond `length`: positions are always written before they are read.
        new.keys = self.keys.new_empty((layers, times, rows, heads, capacity, head_dim))
        new.values = torch.empty_like(new.keys)
        new.keys[..., :length, :] = self.keys[:, None, :, :, :length]
        new.values[..., :length, :] = self.values[:, None, :, :, :length]
        new.keys, new.values = new.keys.flatten(1, 2), new.values.flatten(1, 2)
        new.key_valid = self.key_valid.new_ones((rows * times, capacity))
        new.key_valid[:, :length] = self.key_valid[:, :length].repeat(times, 1)
        new._length = length
        new.leading_invalid = None if self.leading_invalid is None else self.leading_invalid.repeat(times)
        return new

    def reset(self) -> None:
        self._length = 0
        self.leading_invalid = None
        self.key_valid.fill_(True)

    def _check_room(self, end: int) -> None:
        if end > self.max_patches:
            raise ValueError(f"KV cache holds {self.max_patches} patches; {end} were needed. Allocate a larger cache.")
