"""Key/value caches of the time-wise attention layers, for incremental (autoregressive) decoding.

Space-wise layers attend across variates at one time step, so they never need the past and keep no cache.

A cache decides how attention runs over what it holds (`AttentionCache`): each transformer forward asks it once for
the forward's plan (masks, positions; it opens room for the new patches then), and each time-wise layer hands it
its new keys/values and queries to attend. The layers do not know which cache they run over.

- `KVCache` holds the keys/values of every row (batch * variates) of one forward pass and the patches that follow
  it. Its constructor has Toto 1.0's signature. Besides keys and values it remembers which cached patches hold at
  least one observed value, so that fully missing patches stay masked out as keys while decoding (see
  `attention_math.time_attention_mask`), and how many such patches lead each row, from which the row's positions
  count (see `attention_math.plan_attention`).
- `SharedPrefixKVCache` is how many sample paths continue one encoded context: the context's `KVCache` is stored
  once per row and shared by all paths; each path keeps only the keys/values of the patches it generated itself.
  Attention over the two parts is merged exactly (`attention_math.attend_shared_prefix`), so memory for the context
  does not grow with the number of samples.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import Tensor

from .attention_math import (
    AttentionAxis,
    AttentionPlan,
    attend,
    attend_shared_prefix,
    count_leading_invalid,
    plan_attention,
    space_attention_mask,
)


class AttentionCache(abc.ABC):
    """What a transformer forward asks of the cache of its time-wise layers."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of patches (tokens) already cached."""

    @abc.abstractmethod
    def plan_forward(self, key_valid: Tensor, id_mask: Tensor) -> AttentionPlan:
        """Open room for a forward's new patches and plan its attention over cached + new keys.

        key_valid (rows, new): which new patches hold an observed value; id_mask (batch, variate, new) their series.
        Called once per forward, before any layer attends.
        """

    @abc.abstractmethod
    def attend(self, slot: int, q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan, dropout: float,
               allow_xformers: bool) -> Tensor:
        """Store a time-wise layer's new keys/values and attend its queries over everything cached for its `slot`.

        q, k, v: (rows, heads, new, head_dim), rotated -> (rows, heads, new, head_dim).
        """


class KVCache(AttentionCache):
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
        self.batch_size, self.num_variates = batch_size, num_variates
        self.num_heads, self.embed_dim = num_heads, embed_dim
        self.max_seq_len = max_seq_len
        # Kept for Toto 1.0's signature: one memory layout serves every attention kernel here.
        self.use_memory_efficient_attention = use_memory_efficient_attention
        time_layers = sum(getattr(transformer_layers[i], "attention_axis", None) is AttentionAxis.TIME
                          for i in range(num_layers))
        rows = batch_size * num_variates
        shape = (max(1, time_layers), rows, num_heads, max_seq_len, embed_dim // num_heads)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.key_valid = torch.ones(rows, max_seq_len, device=device, dtype=torch.bool)
        self._length = 0
        # Per row, how many patches at the start hold no observed value (none until the first forward says).
        self.leading_invalid = torch.zeros(rows, device=device, dtype=torch.long)

    def __len__(self) -> int:
        return self._length

    def current_len(self, cache_idx: int = 0) -> int:
        """Toto 1.0's name: tokens cached in a time-wise slot (all slots hold the same number after a forward)."""
        return self._length

    def seq_len(self, layer_idx: int) -> int:
        """Toto 1.0's name: tokens cached for a layer, by its index in the transformer."""
        return self._length

    def plan_forward(self, key_valid: Tensor, id_mask: Tensor) -> AttentionPlan:
        """Masks and positions as without a cache, for queries that follow the cached patches."""
        offset = self._length
        if offset == 0:
            self.leading_invalid = count_leading_invalid(key_valid)
        end = offset + key_valid.shape[-1]
        if end > self.max_seq_len:
            raise ValueError(f"KV cache holds {self.max_seq_len} patches; {end} were needed. Allocate a larger cache.")
        self.key_valid[:, offset:end] = key_valid
        self._length = end
        return plan_attention(self.key_valid[:, :end], id_mask, offset, self.leading_invalid)

    def attend(self, slot: int, q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan, dropout: float,
               allow_xformers: bool) -> Tensor:
        end = self._length
        start = end - k.shape[2]
        self.keys[slot, :, :, start:end] = k
        self.values[slot, :, :, start:end] = v
        keys, values = self.keys[slot, :, :, :end], self.values[slot, :, :, :end]
        return attend(q, keys, values, plan.time_mask, plan.is_causal, dropout, allow_xformers)

    def reset(self) -> None:
        self._length = 0
        self.leading_invalid = torch.zeros_like(self.leading_invalid)
        self.key_valid.fill_(True)


class SharedPrefixKVCache(AttentionCache):
    """`paths` continuations of an encoded context (rows ordered (path, context row)), one patch per forward.

    The context's keys/values stay in `prefix`, once per context row; only the generated patches are stored per path.
    For decoding only: attention over it applies no dropout.
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
        # Facts that hold for every generated patch, found once so that decoding steps need no device round trip.
        self._leading_invalid = prefix.leading_invalid.repeat(paths)
        self._padded = bool(self._leading_invalid.any())
        prefix_valid = prefix.key_valid[:, : len(prefix)]
        self._prefix_valid = None if bool(prefix_valid.all()) else prefix_valid  # None: no mask needed
        # Every generated patch has the ids of the context's last one: the first step's mask serves all steps.
        self._step_space_mask: Tensor | None = None

    def __len__(self) -> int:
        return len(self.prefix) + self._generated

    def plan_forward(self, key_valid: Tensor, id_mask: Tensor) -> AttentionPlan:
        """Every path sees the observed context patches and its own; every row's one new patch is at the same
        position (unless the context is left-padded), so that position's rotation can be folded."""
        if key_valid.shape[-1] != 1:
            raise ValueError("paths continuing a shared prefix decode one patch per forward")
        if self._generated == self.keys.shape[3]:
            raise ValueError(f"shared-prefix cache holds {self.keys.shape[3]} generated patches; allocate more")
        offset = len(self)
        self._generated += 1
        if self._generated == 1:
            self._step_space_mask = space_attention_mask(id_mask)
        if self._padded:
            return AttentionPlan(positions=offset - self._leading_invalid, space_mask=self._step_space_mask)
        return AttentionPlan(positions=offset, space_mask=self._step_space_mask, fold_rotation_at=offset)

    def attend(self, slot: int, q: Tensor, k: Tensor, v: Tensor, plan: AttentionPlan, dropout: float,
               allow_xformers: bool) -> Tensor:
        """q, k, v: (paths*rows, heads, 1, head_dim) of the new patch; the context part is attended once per row."""
        end, length = self._generated, len(self.prefix)
        self.keys[slot, :, :, end - 1 : end] = k
        self.values[slot, :, :, end - 1 : end] = v
        return attend_shared_prefix(q, self.prefix.keys[slot, :, :, :length], self.prefix.values[slot, :, :, :length],
                                    self._prefix_valid, self.keys[slot, :, :, :end], self.values[slot, :, :, :end],
                                    self.paths)
