"""Attention as functions of tensors: masks, rotary positions per row, the fused kernels and the shared-prefix merge.

Both the attention layers (`attention.py`) and the KV caches (`kv_cache.py`) build on this module, and it on neither:
a forward's masks and positions are planned once (`AttentionPlan`, by `plan_attention` or by the cache), every layer
reads the plan, and a cache attends over its keys with `attend` or `attend_shared_prefix`.

Kernels: PyTorch's `scaled_dot_product_attention` (flash / memory-efficient kernels on GPU), or xformers'
`memory_efficient_attention` when it is installed, the tensors are on CUDA and the config allows it. They compute
the same function; `tests/test_attention.py` and `benchmarks/gpu_check.sh` compare them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

try:
    import xformers.ops as xops  # optional dependency without type information (mypy: ignore_missing_imports)

    XFORMERS_AVAILABLE = True
except ImportError:
    xops = None
    XFORMERS_AVAILABLE = False


class AttentionAxis(Enum):
    TIME = 1  # causal, over the patches of one variate, with rotary positions and a KV cache
    SPACE = 2  # bidirectional, over the variates of one patch that belong to the same series


@dataclass(frozen=True, slots=True)
class AttentionPlan:
    """How every layer of one transformer forward attends: planned once per forward, read by each layer.

    With a KV cache the cache plans it (`AttentionCache.plan_forward`), since only it knows what is cached;
    without one, `plan_attention`. The defaults are a plan without masks at position 0.
    """

    time_mask: Tensor | None = None  # (rows, 1, new, keys), True = may attend; None: `is_causal` or all visible
    is_causal: bool = False
    positions: int | Tensor = 0  # rotary position of each row's first new patch: one for all rows, or (rows,)
    space_mask: Tensor | None = None  # (batch*patch, 1, variate, variate) "same series"; None: one series
    # Set when every row has one new patch, all at this position, and the cache lets time-wise layers fold that
    # position's rotation into their query/key projection (`MultiHeadAttention._rotated_projection`).
    fold_rotation_at: int | None = None


def count_leading_invalid(valid: Tensor) -> Tensor:
    """(rows, patches) -> (rows,) number of patches before each row's first valid one (its left padding)."""
    return (torch.cumsum(valid, dim=-1) == 0).sum(-1)


def plan_attention(key_valid: Tensor, id_mask: Tensor, offset: int, leading_invalid: Tensor) -> AttentionPlan:
    """The plan of a forward whose new patches follow `offset` earlier ones (none without a cache).

    key_valid (rows, offset + new): which patches hold an observed value; id_mask (batch, variate, new);
    leading_invalid (rows,): each row's left padding, from its first forward.
    """
    time_mask, is_causal = time_attention_mask(key_valid, id_mask.shape[-1], offset)
    # Positions count from each row's first observed patch, so that left-padding moves nothing: with the masks
    # above, a series gives the same outputs alone or padded inside a batch.
    positions = offset - leading_invalid if bool(leading_invalid.any()) else offset
    return AttentionPlan(time_mask, is_causal, positions, space_attention_mask(id_mask))


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
    product and a sum: thousands of 1 x generated matrix products take longer on a CPU.
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
