"""Rotary positions of Toto 2.0's time-wise attention: the first half of each head's channels, optional xPos.

Details that the published weights were trained with and that are therefore kept:
- only channels [0, head_dim / 2) rotate (the official `partial_factor=(0, 0.5)`), the rest pass unchanged;
- channel pairs (2i, 2i+1) rotate together at frequency base**(-2i / rotary_dim), as in Toto 1.0;
- xPos (`use_xpos`) scales queries by s**p and keys by s**-p, with the scale vector *interleaved* over the pairs
  and p = (position - (max_position + 1) // 2) / 256, centred on the positions of the current call. A KV cache
  therefore keeps keys scaled as in the call that computed them, exactly as the official decoder does.
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import Tensor

from toto.model.rope import rotate_half

XPOS_SCALE_BASE = 256.0


class PartialRotaryEmbedding(torch.nn.Module):
    inv_freq: Tensor  # (rotary_dim / 2,) rotation frequencies of the channel pairs (buffer)
    xpos_base: Tensor  # (rotary_dim / 2,) xPos scale of each pair (buffer)

    def __init__(self, head_dim: int, use_xpos: bool, base: float = 10000.0) -> None:
        super().__init__()
        self.rotary_dim = head_dim // 2
        self.use_xpos = use_xpos
        steps = torch.arange(0, self.rotary_dim, 2, dtype=torch.float32)
        self.register_buffer("inv_freq", 1.0 / base ** (steps / self.rotary_dim), persistent=False)
        self.register_buffer("xpos_base", (steps + 0.4 * self.rotary_dim) / (1.4 * self.rotary_dim), persistent=False)

    def forward(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate q (rows, heads, seq, head_dim) and k (rows, kv_heads, seq, head_dim) at `positions` (seq,)."""
        angles = repeat(positions.float()[:, None] * self.inv_freq, "s f -> s (f 2)")
        cos, sin = angles.cos(), angles.sin()
        if self.use_xpos:
            center = torch.div(positions.max() + 1, 2, rounding_mode="floor")
            power = (positions.float() - center) / XPOS_SCALE_BASE
            scale = repeat(self.xpos_base ** power[:, None], "s f -> s (f 2)")
            q_factors, k_factors = (cos * scale, sin * scale), (cos / scale, sin / scale)
        else:
            q_factors = k_factors = (cos, sin)
        return self._rotate(q, *q_factors), self._rotate(k, *k_factors)

    def _rotate(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        rotated, rest = x[..., : self.rotary_dim], x[..., self.rotary_dim :]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return torch.cat([rotated * cos + rotate_half(rotated) * sin, rest], dim=-1)
