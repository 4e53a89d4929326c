"""The transformer stack: pre-norm blocks alternating time-wise and space-wise attention.

Every `spacewise_every_n_layers` layers one is space-wise (first in its group when `spacewise_first`), the rest are
time-wise: a variate is mostly predicted from its own past, so cross-variate mixing is needed less often.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import AttentionAxis, MultiHeadAttention, space_attention_mask, time_attention_mask
from .fusion import Fusion, insert_after_padding, label_first
from .kv_cache import KVCache, SharedPrefixKVCache
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
    """Pre-norm block: x + attention(norm(x)), then x + SwiGLU-MLP(norm(x)). The FSDP wrap unit.

    The constructor has Toto 1.0's signature.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_hidden_dim: int, dropout: float,
                 rotary_emb: XposRotaryEmbedding | None = None, attention_axis: AttentionAxis = AttentionAxis.TIME,
                 RMS_norm: bool = True, use_memory_efficient_attention: bool = True) -> None:  # noqa: N803
        super().__init__()
        self.embed_dim, self.num_heads, self.mlp_hidden_dim, self.dropout = embed_dim, num_heads, mlp_hidden_dim, dropout
        self.attention_axis = attention_axis
        norm = RMSNorm if RMS_norm else torch.nn.LayerNorm
        self.norm1 = norm(embed_dim)
        self.norm2 = norm(embed_dim)
        if attention_axis is AttentionAxis.TIME and rotary_emb is None:
            rotary_emb = XposRotaryEmbedding(embed_dim // num_heads)
        self.attention = MultiHeadAttention(embed_dim, num_heads, dropout, attention_axis, rotary_emb,
                                            allow_xformers=use_memory_efficient_attention)
        # Indices 0 and 2 are the checkpoint's "mlp.0" / "mlp.2" keys.
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(embed_dim, 2 * mlp_hidden_dim),
            SwiGLU(),
            torch.nn.Linear(mlp_hidden_dim, embed_dim),
            torch.nn.Dropout(dropout),
        )

    @property
    def axis(self) -> AttentionAxis:
        return self.attention_axis

    def forward(self, x: Tensor, mask: Tensor | None, is_causal: bool, kv_cache: KVCache | SharedPrefixKVCache | None,
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
    """The layer stack. Constructor and `forward` have Toto 1.0's signatures (plus `patch_valid`)."""

    def __init__(self, num_layers: int, embed_dim: int, num_heads: int, mlp_hidden_dim: int, dropout: float,
                 spacewise_every_n_layers: int, spacewise_first: bool, use_memory_efficient_attention: bool = True,
                 *, fusion: Fusion | None = None) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.rotary_emb = XposRotaryEmbedding(embed_dim // num_heads)
        self.use_memory_efficient_attention = use_memory_efficient_attention
        self.fusion = fusion
        axes = layer_axes(num_layers, spacewise_every_n_layers, spacewise_first)
        self.layers = torch.nn.ModuleList(
            TransformerLayer(embed_dim, num_heads, mlp_hidden_dim, dropout, self.rotary_emb, axis,
                             use_memory_efficient_attention=use_memory_efficient_attention)
            for axis in axes
        )
        time_layers = [layer for layer in self.layers if layer.axis is AttentionAxis.TIME]
        for slot, layer in enumerate(time_layers):
            layer.attention.cache_slot = slot
        self.num_time_layers = len(time_layers)

    def forward(self, inputs: Tensor, id_mask: Tensor, kv_cache: KVCache | SharedPrefixKVCache | None = None,
                variate_label_embeds: Tensor | None = None, patch_valid: Tensor | None = None) -> Tensor:
        """inputs (batch, variate, patch, embed); id_mask / patch_valid (batch, variate, patch) -> hidden states.

        `patch_valid` marks patches holding at least one observed value (default: all); the others are hidden as
        keys. With `fusion` and `variate_label_embeds`, a label token per variate is added on the first forward
        (not while decoding from a cache) and the output has one more patch, the label's, first (as in Toto 1.0).
        """
        batch, variates, num_new = inputs.shape[:3]
        if patch_valid is None:
            patch_valid = torch.ones((batch, variates, num_new), dtype=torch.bool, device=inputs.device)
        id_mask = id_mask.expand(batch, variates, num_new)
        first_forward = kv_cache is None or len(kv_cache) == 0
        leading_invalid = _leading_invalid(patch_valid.flatten(0, 1)) if first_forward else kv_cache.leading_invalid
        labelled = self.fusion is not None and variate_label_embeds is not None and first_forward
        if labelled:
            # The label sits right before each row's first observed patch: it is valid, the padding stays before it.
            inputs = self.fusion(inputs, variate_label_embeds, leading_invalid)
            lead = leading_invalid.view(batch, variates)
            id_mask = insert_after_padding(id_mask, id_mask.gather(2, lead.clamp_max(num_new - 1)[..., None]), lead)
            patch_valid = insert_after_padding(patch_valid, torch.ones_like(patch_valid[..., :1]), lead)
            num_new += 1
        key_valid = patch_valid.flatten(0, 1)  # (batch*variate, patch)
        offset = 0
        if isinstance(kv_cache, SharedPrefixKVCache):
            if num_new != 1:
                raise ValueError("paths continuing a shared prefix decode one patch per forward")
            offset = len(kv_cache)
            kv_cache.open_patch()
            time_mask, is_causal = None, False  # the query sees every context key that is observed and its own path
        else:
            if kv_cache is not None:
                offset = len(kv_cache)
                if offset == 0:
                    kv_cache.leading_invalid = leading_invalid
                key_valid = kv_cache.append_validity(key_valid)
            time_mask, is_causal = time_attention_mask(key_valid, num_new, offset)
        # Positions count from each row's first observed patch, so that left-padding moves nothing: with the masks
        # above, a series gives the same outputs alone or padded inside a batch.
        if isinstance(kv_cache, SharedPrefixKVCache):
            positions = offset - leading_invalid if kv_cache.padded else offset
            if kv_cache.step_space_mask is False:  # every generated patch has the ids of the context's last one
                kv_cache.step_space_mask = space_attention_mask(id_mask)
            space_mask = kv_cache.step_space_mask
        else:
            positions = offset - leading_invalid if bool(leading_invalid.any()) else offset
            space_mask = space_attention_mask(id_mask)
        x = inputs
        for layer in self.layers:
            if layer.axis is AttentionAxis.TIME:
                x = layer(x, time_mask, is_causal, kv_cache, positions)
            else:
                x = layer(x, space_mask, False, None)
        return label_first(x, leading_invalid) if labelled else x


def _leading_invalid(valid: Tensor) -> Tensor:
    """(rows, patches) -> (rows,) number of patches before each row's first valid one."""
    return (torch.cumsum(valid, dim=-1) == 0).sum(-1)
