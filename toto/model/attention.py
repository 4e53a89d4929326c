"""Multi-head attention along one axis of a (batch, variate, patch, embed) tensor.

Time-wise attention is causal self-attention of each variate over its patches, with rotary/xPos positions and a KV
cache. Space-wise attention is bidirectional attention across the variates of one patch, restricted to variates of
the same series (`id_mask`), without positions so that it does not depend on the order of the variates.

The masks, positions and kernels are `attention_math`'s; a layer reads its forward's `AttentionPlan` and, when given
a cache, lets the cache attend (`kv_cache.AttentionCache`).

Projection layout follows the published checkpoint: the fused QKV output is laid out (qkv, head_dim, heads) and the
attention output is merged back as (heads, head_dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .attention_math import AttentionAxis, AttentionPlan, attend
from .kv_cache import AttentionCache
from .rope import XposRotaryEmbedding

__all__ = ["AttentionAxis", "MultiHeadAttention", "computes_plain_linear"]  # AttentionAxis: Toto 1.0's import path


def computes_plain_linear(module: torch.nn.Module) -> bool:
    """Whether calling `module` computes exactly `F.linear(x, module.weight, module.bias)`.

    Shortcuts that use a projection's weight directly (only its value rows, or its weight with a rotation folded
    in) are valid only then: an `nn.Linear` whose class keeps `nn.Linear.forward` and that has no forward hooks.
    An adapter on the projection computes more than its weight (peft's LoRA replaces the layer by a wrapper that
    is no `nn.Linear`), and so does a subclass that overrides `forward`.
    """
    return (isinstance(module, torch.nn.Linear) and type(module).forward is torch.nn.Linear.forward
            and not module._forward_hooks and not module._forward_pre_hooks)


class MultiHeadAttention(torch.nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, dropout: float, axis: AttentionAxis,
                 rotary: XposRotaryEmbedding | None = None, allow_xformers: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.axis = axis
        self.rotary = rotary if axis is AttentionAxis.TIME else None
        self.allow_xformers = allow_xformers
        self.wQKV = torch.nn.Linear(embed_dim, 3 * embed_dim)
        self.wO = torch.nn.Linear(embed_dim, embed_dim)
        # Index of this layer's slot in the KV cache (time-wise layers only); set by the Transformer.
        self.cache_slot: int | None = None

    def forward(self, x: Tensor, plan: AttentionPlan, kv_cache: AttentionCache | None = None) -> Tensor:
        """x: (batch, variate, patch, embed) -> same shape. A time-wise layer attends through `kv_cache` if given."""
        batch, variates, patches, _ = x.shape
        dropout = self.dropout if self.training else 0.0
        plain_projection = computes_plain_linear(self.wQKV)
        time_wise = self.axis is AttentionAxis.TIME
        if not time_wise and variates == 1 and not dropout and plain_projection:
            return self.wO(self._values(x))
        rows = rearrange(x, "b v n d -> (b v) n d") if time_wise else rearrange(x, "b v n d -> (b n) v d")
        # A decoding step may put every row at one position: the projection's weight then absorbs its rotation.
        fold_rotation_at = plan.fold_rotation_at if time_wise and plain_projection else None
        if fold_rotation_at is None:
            qkv = self.wQKV(rows)
        else:
            qkv = F.linear(rows, *self._rotated_projection(fold_rotation_at, rows.device))
        q, k, v = rearrange(qkv, "r s (qkv hd h) -> qkv r h s hd", qkv=3, h=self.num_heads
                            ).unbind(0)  # each (rows, heads, seq, head_dim)

        if not time_wise:
            out = attend(q, k, v, plan.space_mask, False, dropout, self.allow_xformers)
            out = rearrange(out, "r h s hd -> r s (h hd)")
            return self.wO(rearrange(out, "(b n) v d -> b v n d", b=batch, n=patches))
        if fold_rotation_at is None:
            q, k = self._rotary()(q, k, plan.positions)
        if kv_cache is None:
            out = attend(q, k, v, plan.time_mask, plan.is_causal, dropout, self.allow_xformers)
        else:
            if self.cache_slot is None:
                raise ValueError("this time-wise layer has no KV cache slot: the Transformer assigns them")
            out = kv_cache.attend(self.cache_slot, q, k, v, plan, dropout, self.allow_xformers)
        out = rearrange(out, "r h s hd -> r s (h hd)")
        return self.wO(rearrange(out, "(b v) n d -> b v n d", b=batch, v=variates))

    def _rotary(self) -> XposRotaryEmbedding:
        if self.rotary is None:
            raise ValueError("a time-wise attention layer needs its rotary embedding (see TransformerLayer)")
        return self.rotary

    def _rotated_projection(self, position: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """wQKV's weight and bias with the rotation of one `position` applied to their query and key outputs.

        Rotating a lone patch's query and key is a linear map of each head's channels (`position_matrices`), so it
        can act on the (3 * embed) x embed weight instead of on every row: that removes about a dozen elementwise
        passes and copies over (rows, heads, head_dim) per time-wise layer and step, a measurable share of a decoding
        step (docs/benchmarks.md, "Forecasting service"). Folded in float32 (the bias as one more input column),
        then cast to the weights' dtype; once per layer and step, a few small calls. Valid only where the projection
        is its weight (`computes_plain_linear`).
        """
        weight, bias = self.wQKV.weight, self.wQKV.bias
        maps = self._rotary().position_matrices(position, device)  # (query/key, head_dim, head_dim)
        augmented = torch.cat((weight, bias[:, None]), dim=1).float()
        query_key, value = rearrange(augmented, "(qkv hd h) i -> qkv hd (h i)", qkv=3, h=self.num_heads).split((2, 1))
        rotated = maps.transpose(1, 2) @ query_key  # channel j of the rotated = sum over i of maps[i, j] * channel i
        folded = rearrange(torch.cat((rotated, value)), "qkv hd (h i) -> (qkv hd h) i", h=self.num_heads)
        folded = folded.to(weight.dtype)
        return folded[:, :-1], folded[:, -1]

    def _values(self, x: Tensor) -> Tensor:
        """The value projection alone, heads merged as (heads, head_dim) like the attention's output.

        Space-wise attention over a single variate is that variate's value: the softmax of one score is exactly 1.
        So univariate series skip the query and key projections (two thirds of the layer's input projection),
        the rearrangements and the kernel call, for the same numbers (docs/benchmarks.md, "Forecasting service").
        """
        embed_dim = x.shape[-1]
        values = F.linear(x, self.wQKV.weight[2 * embed_dim:], self.wQKV.bias[2 * embed_dim:])
        return rearrange(values, "... (hd h) -> ... (h hd)", h=self.num_heads)
