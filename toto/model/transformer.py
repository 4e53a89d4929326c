"""The transformer stack: pre-norm blocks alternating time-wise and space-wise attention.

Every `spacewise_every_n_layers` layers one is space-wise (first in its group when `spacewise_first`), the rest are
time-wise: a variate is mostly predicted from its own past, so cross-variate mixing is needed less often.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import MultiHeadAttention
from .attention_math import AttentionAxis, AttentionPlan, count_leading_invalid, plan_attention
from .fusion import Fusion, insert_after_padding, label_first
from .kv_cache import AttentionCache
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
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.mlp_hidden_dim, self.dropout = mlp_hidden_dim, dropout
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

    def forward(self, x: Tensor, plan: AttentionPlan, kv_cache: AttentionCache | None = None) -> Tensor:
        x = x + self.attention(self.norm1(x), plan, kv_cache)
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
        layers = [TransformerLayer(embed_dim, num_heads, mlp_hidden_dim, dropout, self.rotary_emb, axis,
                                   use_memory_efficient_attention=use_memory_efficient_attention) for axis in axes]
        time_layers = [layer for layer in layers if layer.axis is AttentionAxis.TIME]
        for slot, layer in enumerate(time_layers):
            layer.attention.cache_slot = slot
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, inputs: Tensor, id_mask: Tensor, kv_cache: AttentionCache | None = None,
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
        label_lead = None  # each row's left padding, where its label goes
        if self.fusion is not None and variate_label_embeds is not None and first_forward:
            # The label sits right before each row's first observed patch: it is valid, the padding stays before it.
            label_lead = count_leading_invalid(patch_valid.flatten(0, 1))
            inputs = self.fusion(inputs, variate_label_embeds, label_lead)
            lead = label_lead.view(batch, variates)
            id_mask = insert_after_padding(id_mask, id_mask.gather(2, lead.clamp_max(num_new - 1)[..., None]), lead)
            patch_valid = insert_after_padding(patch_valid, torch.ones_like(patch_valid[..., :1]), lead)
        key_valid = patch_valid.flatten(0, 1)  # (batch*variate, patch)
        if kv_cache is None:
            plan = plan_attention(key_valid, id_mask, 0, count_leading_invalid(key_valid))
        else:
            plan = kv_cache.plan_forward(key_valid, id_mask)
        x = inputs
        for layer in self.layers:
            x = layer(x, plan, kv_cache)
        return x if label_lead is None else label_first(x, label_lead)
