"""The transformer stack: pre-norm blocks alternating time-wise and space-wise attention.

Every `spacewise_every_n_layers` layers one is space-wise (first in its group when `spacewise_first`), the rest are
time-wise: a variate is mostly predicted from its own past, so cross-variate mixing is needed less often.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import AttentionAxis, MultiHeadAttention, space_attention_mask, time_attention_mask
from .config import TotoConfig
from .kv_cache import KVCache
from .rope import XposRotaryEmbedding


class RMSNorm(torch.nn.Module):
    def __init__(self, dim: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.scale = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.scale, self.eps)


class SwiGLU(torch.nn.Module):
    """silu(gate) * value, with the gate in the first half of the input (the xformers fused-kernel convention)."""

    def forward(self, x: Tensor) -> Tensor:
        gate, value = x.chunk(2, dim=-1)
        return F.silu(gate) * value


class TransformerLayer(torch.nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + SwiGLU-MLP(norm(x)). The FSDP wrap unit."""

    def __init__(self, config: TotoConfig, axis: AttentionAxis, rotary: XposRotaryEmbedding) -> None:
        super().__init__()
        self.axis = axis
        self.norm1 = RMSNorm(config.embed_dim)
        self.norm2 = RMSNorm(config.embed_dim)
        self.attention = MultiHeadAttention(
            config.embed_dim, config.num_heads, config.dropout, axis, rotary,
            allow_xformers=config.use_memory_efficient_attention,
        )
        # Indices 0 and 2 are the checkpoint's "mlp.0" / "mlp.2" keys.
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(config.embed_dim, 2 * config.mlp_hidden_dim),
            SwiGLU(),
            torch.nn.Linear(config.mlp_hidden_dim, config.embed_dim),
            torch.nn.Dropout(config.dropout),
        )

    def forward(self, x: Tensor, mask: Tensor | None, is_causal: bool, kv_cache: KVCache | None,
                positions: int | Tensor = 0) -> Tensor:
        x = x + self.attention(self.norm1(x), mask, is_causal, kv_cache, positions)
        return x + self.mlp(self.norm2(x))


def layer_axes(num_layers: int, spacewise_every_n_layers: int, spacewise_first: bool) -> list[AttentionAxis]:
    if spacewise_every_n_layers == -1:
        return [AttentionAxis.TIME] * num_layers
    group = [AttentionAxis.TIME] * (spacewise_every_n_layers - 1)
    group = [AttentionAxis.SPACE, *group] if spacewise_first else [*group, AttentionAxis.SPACE]
    return group * (num_layers // spacewise_every_n_layers)


class Transformer(torch.nn.Module):
    def __init__(self, config: TotoConfig) -> None:
        super().__init__()
        self.rotary_emb = XposRotaryEmbedding(config.head_dim)
        axes = layer_axes(config.num_layers, config.spacewise_every_n_layers, config.spacewise_first)
        self.layers = torch.nn.ModuleList(TransformerLayer(config, axis, self.rotary_emb) for axis in axes)
        time_layers = [layer for layer in self.layers if layer.axis is AttentionAxis.TIME]
        for slot, layer in enumerate(time_layers):
            layer.attention.cache_slot = slot
        self.num_time_layers = len(time_layers)

    def forward(self, x: Tensor, patch_ids: Tensor, patch_valid: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """x (batch, variate, patch, embed); patch_ids/patch_valid (batch, variate, patch) -> (batch, variate, patch, embed).

        `patch_valid` marks patches holding at least one observed value; the others are hidden as keys.
        """
        num_new = x.shape[2]
        key_valid = patch_valid.flatten(0, 1)  # (batch*variate, patch)
        offset = 0
        if kv_cache is None:
            leading_invalid = _leading_invalid(key_valid)
        else:
            offset = len(kv_cache)
            if offset == 0:
                kv_cache.leading_invalid = _leading_invalid(key_valid)
            leading_invalid = kv_cache.leading_invalid
            key_valid = kv_cache.append_validity(key_valid)
        # Positions count from each row's first observed patch, so that left-padding moves nothing: with the masks
        # below, a series gives the same outputs alone or padded inside a batch.
        positions = offset - leading_invalid if bool(leading_invalid.any()) else offset
        time_mask, is_causal = time_attention_mask(key_valid, num_new, offset)
        space_mask = space_attention_mask(patch_ids)
        for layer in self.layers:
            if layer.axis is AttentionAxis.TIME:
                x = layer(x, time_mask, is_causal, kv_cache, positions)
            else:
                x = layer(x, space_mask, False, None)
        return x


def _leading_invalid(valid: Tensor) -> Tensor:
    """(rows, patches) -> (rows,) number of patches before each row's first valid one."""
    return (torch.cumsum(valid, dim=-1) == 0).sum(-1)
