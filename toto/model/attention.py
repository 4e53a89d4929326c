"""Multi-head attention along one axis of a (batch, variate, patch, embed) tensor, with fused kernels.

Time-wise attention is causal self-attention of each variate over its patches, with rotary/xPos positions and a KV
cache. Space-wise attention is bidirectional attention across the variates of one patch, restricted to variates of
the same series (`id_mask`), without positions so that it does not depend on the order of the variates.

Kernels: PyTorch's `scaled_dot_product_attention` (flash / memory-efficient kernels on GPU), or xformers'
`memory_efficient_attention` when it is installed, the tensors are on CUDA and the config allows it. They compute
the same function; `tests/test_attention.py` and `benchmarks/gpu_check.sh` compare them.

Projection layout follows the published checkpoint: the fused QKV output is laid out (qkv, head_dim, heads) and the
attention output is merged back as (heads, head_dim).
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .kv_cache import KVCache, SharedPrefixKVCache
from .rope import XposRotaryEmbedding

try:
    import xformers.ops as xops

    XFORMERS_AVAILABLE = True
except ImportError:
    xops = None
    XFORMERS_AVAILABLE = False


class AttentionAxis(Enum):
    TIME = 1
    SPACE = 2


def time_attention_mask(key_valid: Tensor, num_queries: int, offset: int) -> tuple[Tensor | None, bool]:
    """Mask for queries at positions offset..offset+n-1 over keys 0..offset+n-1 of shape (rows, Tk).

    Returns (mask, is_causal). Keys of patches without any observed value are hidden from every other query (a
    query still sees itself, so no row is empty); that makes left-padding in ragged batches change nothing. In the
    common all-observed case no tensor is built and the kernel's own causal path is used.
    """
    num_keys = key_valid.shape[-1]
    if (offset == 0 or num_queries == 1) and bool(key_valid.all()):
        return None, offset == 0 and num_queries > 1
    query_pos = torch.arange(offset, offset + num_queries, device=key_valid.device)[:, None]
    key_pos = torch.arange(num_keys, device=key_valid.device)[None, :]
    causal = key_pos <= query_pos  # (n, Tk)
    visible = key_valid[:, None, :] | (key_pos == query_pos)  # (rows, n, Tk)
    return rearrange(causal & visible, "rows n k -> rows 1 n k"), False


def space_attention_mask(patch_ids: Tensor) -> Tensor | None:
    """(batch, variate, patch) ids -> (batch*patch, 1, variate, variate) 'same series' mask, or None if all equal."""
    if bool((patch_ids == patch_ids[:, :1]).all()):
        return None
    ids = rearrange(patch_ids, "b v n -> (b n) v")
    return rearrange(ids[:, :, None] == ids[:, None, :], "bn v w -> bn 1 v w")


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout: float,
           allow_xformers: bool) -> Tensor:
    """Attention for (rows, heads, seq, head_dim) tensors; mask is boolean (True = may attend) and broadcastable."""
    if allow_xformers and XFORMERS_AVAILABLE and q.is_cuda:
        return _xformers_attention(q, k, v, mask, is_causal, dropout)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)


def attend_shared_prefix(q: Tensor, prefix_k: Tensor, prefix_v: Tensor, prefix_valid: Tensor | None, own_k: Tensor,
                         own_v: Tensor, paths: int) -> Tensor:
    """One decoding step of `paths` sample paths per row that continue a shared context.

    q: (paths*rows, heads, 1, head_dim), rows ordered (path, row); prefix_k/v: (rows, heads, context, head_dim) with
    key validity (rows, context) or None when every context key is valid, stored once; own_k/v: (paths*rows, heads,
    generated, head_dim), each path's own patches (the query's own patch included). The softmax over context + own
    keys is split into two partial softmaxes merged exactly by their log-sum-exp (as in Hydragen / cascade
    attention). Against the context, the paths' queries form one matrix per row, so that part is a matrix product
    instead of `paths` copies of the cache. Against its own few patches, each path's weighted sum is an elementwise
    product and a sum: as thousands of 1 x generated matrix products it took 2-4 times as long on a CPU.
    """
    rows, heads, _, head_dim = prefix_k.shape
    scale = head_dim**-0.5
    queries = rearrange(q, "(p r) h 1 d -> r h p d", p=paths)
    # Scores and their softmax in float32 also for bf16 weights; the products run in the weights' dtype.
    context_scores = (queries @ prefix_k.transpose(-1, -2)).float() * scale  # (rows, heads, paths, context)
    if prefix_valid is not None:
        context_scores = context_scores.masked_fill(~prefix_valid[:, None, None, :], float("-inf"))
    context_lse = torch.logsumexp(context_scores, dim=-1, keepdim=True)
    context_out = torch.softmax(context_scores, dim=-1).to(prefix_v.dtype) @ prefix_v  # (rows, heads, paths, d)
    own_scores = (q @ own_k.transpose(-1, -2)).float() * scale  # (paths*rows, heads, 1, generated)
    own_lse = torch.logsumexp(own_scores, dim=-1, keepdim=True)
    own_weights = torch.softmax(own_scores, dim=-1).to(own_v.dtype)
    own_out = (rearrange(own_weights, "n h 1 g -> n h g 1") * own_v).sum(dim=-2, keepdim=True)
    context_out = rearrange(context_out, "r h p d -> (p r) h 1 d")
    context_lse = rearrange(context_lse, "r h p 1 -> (p r) h 1 1")
    # The two parts' weights sum to 1. A row whose context is all padding has context_lse = -inf: its context
    # weight is then exactly 0, and its context output (NaN) is zeroed.
    context_weight = torch.exp(context_lse - torch.logaddexp(context_lse, own_lse)).to(q.dtype)
    return torch.lerp(own_out, torch.nan_to_num(context_out), context_weight)


def _xformers_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool,
                        dropout: float) -> Tensor:
    q, k, v = (rearrange(t, "r h s d -> r s h d").contiguous() for t in (q, k, v))
    bias: object = None
    if is_causal:
        bias = xops.LowerTriangularMask()
    elif mask is not None:
        rows, heads, q_len, k_len = q.shape[0], q.shape[2], q.shape[1], k.shape[1]
        # xformers wants the bias's last dimension padded to a multiple of 8 in memory.
        padded = -(-k_len // 8) * 8
        full = torch.full((rows, heads, q_len, padded), float("-inf"), device=q.device, dtype=q.dtype)
        full[..., :k_len] = torch.zeros((), dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
        bias = full[..., :k_len]
    out = xops.memory_efficient_attention(q, k, v, attn_bias=bias, p=dropout)
    return rearrange(out, "r s h d -> r h s d")


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

    def forward(self, x: Tensor, mask: Tensor | None, is_causal: bool,
                kv_cache: KVCache | SharedPrefixKVCache | None, positions: int | Tensor = 0) -> Tensor:
        """x: (batch, variate, patch, embed) -> same shape. `positions`: rotary position of the first patch (per row)."""
        batch, variates, patches, _ = x.shape
        if (self.axis is AttentionAxis.SPACE and variates == 1 and not (self.training and self.dropout)
                and type(self.wQKV) is torch.nn.Linear):  # an adapter (peft's LoRA) wrapping it sees every input
            return self.wO(self._values(x))
        if self.axis is AttentionAxis.TIME:
            rows = rearrange(x, "b v n d -> (b v) n d")
        else:
            rows = rearrange(x, "b v n d -> (b n) v d")
        # A decoding step puts every row at the same position: its rotation is folded into the projection.
        rotate_in_projection = (self.axis is AttentionAxis.TIME and isinstance(kv_cache, SharedPrefixKVCache)
                                and isinstance(positions, int) and type(self.wQKV) is torch.nn.Linear)
        if rotate_in_projection:
            qkv = F.linear(rows, *self._rotated_projection(positions, rows.device))
        else:
            qkv = self.wQKV(rows)
        q, k, v = rearrange(qkv, "r s (qkv hd h) -> qkv r h s hd", qkv=3, h=self.num_heads
                            ).unbind(0)  # each (rows, heads, seq, head_dim)

        dropout = self.dropout if self.training else 0.0
        if self.axis is AttentionAxis.TIME and not rotate_in_projection:
            q, k = self.rotary(q, k, positions)
        if isinstance(kv_cache, SharedPrefixKVCache) and self.axis is AttentionAxis.TIME:
            own_k, own_v = kv_cache.append(self.cache_slot, k, v)
            out = attend_shared_prefix(q, *kv_cache.prefix_for(self.cache_slot), own_k, own_v, kv_cache.paths)
        else:
            if kv_cache is not None and self.axis is AttentionAxis.TIME:
                k, v = kv_cache.append(self.cache_slot, k, v)
            out = attend(q, k, v, mask, is_causal, dropout, self.allow_xformers)
        out = rearrange(out, "r h s hd -> r s (h hd)")
        if self.axis is AttentionAxis.TIME:
            out = rearrange(out, "(b v) n d -> b v n d", b=batch, v=variates)
        else:
            out = rearrange(out, "(b n) v d -> b v n d", b=batch, n=patches)
        return self.wO(out)

    def _rotated_projection(self, position: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """wQKV's weight and bias with the rotation of one `position` applied to their query and key outputs.

        Rotating a lone patch's query and key is a linear map of each head's channels (`position_matrices`), so it
        can act on the (3 * embed) x embed weight instead of on every row: that removes about a dozen elementwise
        passes and copies over (rows, heads, head_dim) per time-wise layer and step, which a profile put at about
        a tenth of a toto-tiny pass over 32 series of 100 paths (docs/benchmarks.md, "Forecasting service"). Folded in
        float32 (the bias as one more input column), then cast to the weights' dtype; once per layer and step, a
        few small calls.
        """
        weight, bias = self.wQKV.weight, self.wQKV.bias
        maps = self.rotary.position_matrices(position, device)  # (query/key, head_dim, head_dim)
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
        the rearrangements and the kernel call, for the same numbers. Measured: 5-7% off a toto-tiny forecast,
        lone or 32 series (docs/benchmarks.md, "Forecasting service").
        """
        embed_dim = x.shape[-1]
        values = F.linear(x, self.wQKV.weight[2 * embed_dim:], self.wQKV.bias[2 * embed_dim:])
        return rearrange(values, "... (hd h) -> ... (h hd)", h=self.num_heads)
