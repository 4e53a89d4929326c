"""Grouped-query self-attention of Toto 2.0, along time (causal, rotary, KV-cached) or across variates.

One fused input projection yields queries (num_heads), keys and values (num_groups heads each). Queries and keys
are RMS-normalised per head (QK-norm), optionally rescaled per channel (`per_dim_scale`), and rotated in time
layers. Logits are scaled by 1/qk_dim, not 1/sqrt(qk_dim) (muP: it keeps logits bounded as width grows).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from .config import Toto2Config
from .kv_cache import LayerCache
from .rope import PartialRotaryEmbedding
from .scaled import RMSNorm, ScaledLinear


class PerDimScale(torch.nn.Module):
    """Learned positive per-channel query scale, softplus(p) / log 2 (1 at p = 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.per_dim_scale = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * (F.softplus(self.per_dim_scale) / math.log(2.0)).to(x.dtype)


class SelfAttention(torch.nn.Module):
    def __init__(self, config: Toto2Config, is_variate_layer: bool) -> None:
        super().__init__()
        c = config
        # Toto2Config.__post_init__ fills in the derived fields that a config.json may leave out.
        assert c.num_groups is not None and c.qk_dim is not None and c.v_dim is not None
        assert c.qk_norm_include_weight is not None
        self.is_variate_layer = is_variate_layer
        self.num_heads, self.num_groups, self.qk_dim, self.v_dim = c.num_heads, c.num_groups, c.qk_dim, c.v_dim
        self.split_sizes = [c.qk_dim * c.num_heads, c.qk_dim * c.num_groups, c.v_dim * c.num_groups]
        self.in_proj = ScaledLinear(c.d_model, sum(self.split_sizes), bias=c.attn_bias)
        self.out_proj = ScaledLinear(c.v_dim * c.num_heads, c.d_model, bias=c.attn_bias)
        self.q_norm = RMSNorm(c.qk_dim, c.norm_eps, c.qk_norm_include_weight) if c.qk_norm else None
        self.k_norm = RMSNorm(c.qk_dim, c.norm_eps, c.qk_norm_include_weight) if c.qk_norm else None
        self._pds = PerDimScale(c.qk_dim) if c.per_dim_scale else None
        self.rotary = None if is_variate_layer else PartialRotaryEmbedding(c.qk_dim, c.use_xpos)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        is_causal: bool = False,
        positions: Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> Tensor:
        """x (rows, seq, d_model) -> (rows, seq, d_model).

        `mask` (rows or 1, 1, seq, keys) is True where a query may attend to a key. Time layers pass the patch
        `positions` (seq,) and, when decoding, their `cache`, which holds the keys and values of earlier calls.
        """
        q, k, v = self.in_proj(x).split(self.split_sizes, dim=-1)
        q = rearrange(q, "b s (h d) -> b h s d", h=self.num_heads)
        k = rearrange(k, "b s (h d) -> b h s d", h=self.num_groups)
        v = rearrange(v, "b s (h d) -> b h s d", h=self.num_groups)
        if self.q_norm is not None and self.k_norm is not None:  # both or neither (`qk_norm`)
            q, k = self.q_norm(q), self.k_norm(k)
        if self._pds is not None:
            q = self._pds(q)
        if self.rotary is not None:
            q, k = self.rotary(q, k, positions)
        if cache is not None:
            k, v = cache.extend(k, v)
        if k.shape[-2] == 1:  # one key (e.g. a single variate): softmax is 1, the output is its value
            out = v.repeat_interleave(self.num_heads // self.num_groups, dim=1).expand(-1, -1, q.shape[-2], -1)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal and mask is None, scale=1.0 / self.qk_dim,
                enable_gqa=self.num_heads != self.num_groups,
            )
        return self.out_proj(rearrange(out, "b h s d -> b s (h d)"))
