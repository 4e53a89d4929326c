"""Key/value caches of the time-wise attention layers, for incremental (autoregressive) decoding.

Space-wise layers attend across variates at one time step, so they never need the past and keep no cache.

- `KVCache` holds the keys/values of every row (batch * variates) of one forward pass and the patches that follow
  it. Its constructor has Toto 1.0's signature. Besides keys and values it remembers which cached patches hold at
  least one observed value, so that fully missing patches stay masked out as keys while decoding (see
  `attention.time_attention_mask`), and how many such patches lead each row, from which the row's positions count
  (see `Transformer.forward`).
- `SharedPrefixKVCache` is how many sample paths continue one encoded context: the context's `KVCache` is stored
  once per row and shared by all paths; each path keeps only the keys/values of the patches it generated itself.
  Attention over the two parts is merged exactly (`attention.attend_shared_prefix`), so memory for the context does
  not grow with the number of samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class KVCache:
    """Preallocated keys/values, (rows, heads, max_seq_len, head_dim) per time-wise layer; rows = batch * variates.

    `max_seq_len` counts patches (tokens), label tokens included. `transformer_layers` tells which layers are
    time-wise; only those get a slot.
    """

    def __init__(
        self,
        batch_size: int,
        num_variates: int,
        transformer_layers: Sequence[torch.nn.Module],
        num_layers: int,
        embed_dim: int,
        num_heads: int,
        max_seq_len: int,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        use_memory_efficient_attention: bool = True,
    ) -> None:
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.batch_size, self.num_variates, self.num_heads, self.embed_dim = batch_size, num_variates, num_heads, embed_dim
        self.max_seq_len = max_seq_len
        # Kept for Toto 1.0's signature: one memory layout serves every attention kernel here.
        self.use_memory_efficient_attention = use_memory_efficient_attention
        time_layers = [i for i in range(num_layers) if _is_time_wise(transformer_layers[i])]
        # Global layer index -> slot among the time-wise layers.
        self.slot_of_layer = {layer: slot for slot, layer in enumerate(time_layers)}
        shape = (max(1, len(time_layers)), batch_size * num_variates, num_heads, max_seq_len, embed_dim // num_heads)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.key_valid = torch.ones(shape[1], max_seq_len, device=device, dtype=torch.bool)
        self._length = 0
        # Per row, how many patches at the start hold no observed value (set by the first forward).
        self.leading_invalid: Tensor | None = None

    def __len__(self) -> int:
        """Number of patches (tokens) already cached."""
        return self._length

    def current_len(self, cache_idx: int = 0) -> int:
        """Toto 1.0's name: tokens cached in a time-wise slot (all slots hold the same number after a forward)."""
        return self._length

    def seq_len(self, layer_idx: int) -> int:
        """Toto 1.0's name: tokens cached for a layer, by its index in the transformer."""
        return self._length

    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes + self.key_valid.nbytes

    def append_validity(self, valid: Tensor) -> Tensor:
        """Open room for new patches (once per forward, before the layers append their keys) and record which are
        observed; returns the validity of all cached + new patches (rows, length)."""
        start, end = self._length, self._length + valid.shape[-1]
        if end > self.max_seq_len:
            raise ValueError(f"KV cache holds {self.max_seq_len} patches; {end} were needed. Allocate a larger cache.")
        self.key_valid[:, start:end] = valid
        self._length = end
        return self.key_valid[:, :end]

    def append(self, slot: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store a time-wise layer's keys/values (rows, heads, new, head_dim) of the new patches; return all so far."""
        end = self._length
        start = end - keys.shape[2]
        self.keys[slot, :, :, start:end] = keys
        self.values[slot, :, :, start:end] = values
        return self.keys[slot, :, :, :end], self.values[slot, :, :, :end]

    def reset(self) -> None:
        self._length = 0
        self.leading_invalid = None
        self.key_valid.fill_(True)


class SharedPrefixKVCache:
    """`paths` continuations of an encoded context (rows ordered (path, context row)), one patch per forward.

    The context's keys/values stay in `prefix`, once per context row; only the generated patches are stored per path.
    """

    def __init__(self, prefix: KVCache, paths: int, max_new_patches: int) -> None:
        if len(prefix) == 0:
            raise ValueError("the shared prefix must be encoded before paths continue it")
        self.prefix = prefix
        self.paths = paths
        layers, rows, heads, _, head_dim = prefix.keys.shape
        # Uninitialised beyond the generated length: positions are always written before they are read.
        self.keys = prefix.keys.new_empty((layers, paths * rows, heads, max_new_patches, head_dim))
        self.values = torch.empty_like(self.keys)
        self._generated = 0
        self.leading_invalid = None if prefix.leading_invalid is None else prefix.leading_invalid.repeat(paths)
        # Facts that hold for every generated patch, found once so that decoding steps need no device round trip.
        self.padded = self.leading_invalid is not None and bool(self.leading_invalid.any())
        self._prefix_valid = prefix.key_valid[:, : len(prefix)]
        self._every_prefix_key_valid = bool(self._prefix_valid.all())
        self.step_space_mask: Tensor | None | bool = False  # False: not computed yet (None: no mask needed)

    @staticmethod
    def nbytes_for(prefix_rows: int, paths: int, time_layers: int, heads: int, head_dim: int, new_patches: int,
                   element_size: int) -> int:
        """Bytes the per-path part takes, for memory budgets (see `forecaster.forecast_cost_bytes`)."""
        return 2 * time_layers * paths * prefix_rows * heads * new_patches * head_dim * element_size

    def __len__(self) -> int:
        return len(self.prefix) + self._generated

    def open_patch(self) -> None:
        """Open room for the next generated patch (once per forward, before the layers append their keys)."""
        if self._generated == self.keys.shape[3]:
            raise ValueError(f"shared-prefix cache holds {self.keys.shape[3]} generated patches; allocate more")
        self._generated += 1

    def append(self, slot: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new patch's keys/values (paths*rows, heads, 1, head_dim); return the generated ones so far."""
        end = self._generated
        self.keys[slot, :, :, end - 1 : end] = keys
        self.values[slot, :, :, end - 1 : end] = values
        return self.keys[slot, :, :, :end], self.values[slot, :, :, :end]

    def prefix_for(self, slot: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """The context's keys, values (rows, heads, length, head_dim) and key validity (rows, length), or None for
        the validity when every context key is valid (then no mask is applied)."""
        length = len(self.prefix)
        return (self.prefix.keys[slot, :, :, :length], self.prefix.values[slot, :, :, :length],
                None if self._every_prefix_key_valid else self._prefix_valid)


def _is_time_wise(layer: torch.nn.Module) -> bool:
    from .attention import AttentionAxis  # attention imports this module

    return getattr(layer, "attention_axis", None) is AttentionAxis.TIME
