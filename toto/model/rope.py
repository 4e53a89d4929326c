"""Rotary position embeddings with xPos length-extrapolation scaling, as Toto 1.0 applies them.

Two details are kept exactly as in the published model, because the checkpoint was trained with them:
- frequencies are interleaved: channel pairs (2i, 2i+1) rotate together at frequency theta**(-2i/dim);
- the xPos scale vector is *concatenated* ([s, s]), not interleaved like the frequencies, and its exponent is
  centred on half of the largest position of the current call: (pos - max_pos // 2) / 512. Queries get scale**p,
  keys scale**-p, so within one call the product depends only on relative position.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor


def rotate_half(x: Tensor) -> Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): rotate each interleaved channel pair by 90 degrees."""
    x = rearrange(x, "... (d r) -> ... d r", r=2)
    x1, x2 = x.unbind(dim=-1)
    return rearrange(torch.stack((-x2, x1), dim=-1), "... d r -> ... (d r)")


class XposRotaryEmbedding(torch.nn.Module):
    freqs: Tensor  # (head_dim / 2,) rotation frequencies of the channel pairs
    xpos_scale: Tensor  # (head_dim / 2,) xPos decay base per channel pair

    def __init__(self, head_dim: int, theta: float = 10000.0, xpos_scale_base: float = 512.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.scale_base = xpos_scale_base
        freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
        # Not persistent: recomputed from head_dim, so stored copies in checkpoints ("...rotary_emb.freqs") are ignored.
        self.register_buffer("freqs", freqs, persistent=False)
        self.register_buffer("xpos_scale", (torch.arange(0, head_dim, 2) + 0.4 * head_dim) / (1.4 * head_dim),
                             persistent=False)
        self._last_position: tuple[tuple[int, torch.device, torch.dtype], Tensor] | None = None

    def forward(self, q: Tensor, k: Tensor, offset: int | Tensor = 0) -> tuple[Tensor, Tensor]:
        """Rotate q and k of shape (rows, heads, seq, head_dim) whose first position is `offset`.

        `offset` is an int, or a (rows,) tensor giving each row its own first position.
        """
        seq_len = q.shape[-2]
        positions = torch.arange(seq_len, device=q.device, dtype=q.dtype)
        if isinstance(offset, Tensor):
            positions = rearrange(positions + offset.to(q.dtype)[:, None], "rows n -> rows 1 n")
        else:
            positions = positions + offset
        angles = repeat(positions[..., None].float() * self.freqs, "... n f -> ... n (f r)", r=2)
        power = (positions - positions.amax(-1, keepdim=True) // 2) / self.scale_base
        scale = self.xpos_scale ** power[..., None]
        scale = torch.cat((scale, scale), dim=-1).to(q.dtype)
        cos, sin = angles.cos(), angles.sin()
        # The position tables are small; scaling them first leaves two products per element of q and of k.
        inverse = scale**-1
        rotated_q = q * (cos * scale) + rotate_half(q) * (sin * scale)
        rotated_k = k * (cos * inverse) + rotate_half(k) * (sin * inverse)
        return rotated_q.type(q.dtype), rotated_k.type(k.dtype)

    def position_matrices(self, position: int, device: torch.device) -> Tensor:
        """(2, head_dim, head_dim) float32: the maps A_q, A_k with `forward(q, k, position)` = (q @ A_q, k @ A_k)
        for a call of one position.

        At a single position the rotation and the xPos scale are a fixed linear map of the head's channels, so a
        decoding step (every row at the same patch) can fold them into the query and key projections instead of
        rotating each row (`MultiHeadAttention`). The maps are `forward` applied to the identity, so there is one
        definition of the rotation; the last position's are kept, since every time-wise layer of a step asks for
        them (keyed also by the buffers' dtype, which `model.to(dtype)` changes).
        """
        key = (position, device, self.freqs.dtype)
        if self._last_position is None or self._last_position[0] != key:
            identity = torch.eye(self.head_dim, device=device)[:, None, None, :]
            rotated_q, rotated_k = self(identity, identity, position)  # row i: the image of basis vector i
            self._last_position = key, torch.stack((rotated_q[:, 0, 0], rotated_k[:, 0, 0]))
        return self._last_position[1]
