"""The unit-scaled (u-muP) operations of Toto 2.0, forward pass only.

u-muP keeps weights at unit scale and puts fixed multipliers in the graph instead: a linear layer's output is
multiplied by 1/sqrt(fan_in) (1/fan_in for "readout" layers), a residual branch is mixed with its skip by tau
ratios, and some activations are rescaled to unit variance. The multipliers are constants of the architecture, so
the function is fully determined by them; u-muP's separate *backward* rescaling only steers pretraining from
scratch, and is not reproduced here: fine-tuning uses the exact gradients of this forward function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


class ScaledLinear(torch.nn.Linear):
    """`F.linear(x, W, b) / fan_in**power`: power 0.5 for hidden layers, 1.0 for readout (output) layers."""

    def __init__(self, in_features: int, out_features: int, bias: bool, readout: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.output_scale = 1.0 / (in_features if readout else math.sqrt(in_features))

    def reset_parameters(self) -> None:  # u-muP initialises at unit scale
        torch.nn.init.normal_(self.weight)
        if self.bias is not None:
            torch.nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        # One fused GEMM: alpha applies the multiplier to x @ W.T, beta to the bias (or to nothing).
        flat = x.reshape(-1, x.shape[-1])
        if self.bias is None:
            out = torch.addmm(flat.new_zeros(()), flat, self.weight.t(), beta=0.0, alpha=self.output_scale)
        else:
            out = torch.addmm(self.bias, flat, self.weight.t(), beta=self.output_scale, alpha=self.output_scale)
        return out.view(*x.shape[:-1], self.out_features)


class RMSNorm(torch.nn.Module):
    """x / sqrt(mean(x**2) + eps), with an optional per-channel weight (`norm_include_weight`)."""

    def __init__(self, dim: int, eps: float, include_weight: bool) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = torch.nn.Parameter(torch.ones(dim)) if include_weight else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (self.dim,), self.weight, self.eps)
        # Half precision: the mean square is accumulated in float32 without a float32 copy of x, which
        # F.rms_norm makes (a large share of a bf16 forward on CPU).
        mean_square = torch.mean(x * x, dim=-1, keepdim=True, dtype=torch.float32)
        out = x * torch.rsqrt(mean_square + self.eps).to(x.dtype)
        return out if self.weight is None else out * self.weight


def residual_add(branch: Tensor, skip: Tensor, tau: float) -> Tensor:
    """Mix a residual branch into its skip path: (tau * branch + skip) / sqrt(1 + tau**2)."""
    return torch.add(skip, branch, alpha=tau).mul_((1 + tau**2) ** -0.5)


def transformer_residual_taus(
    num_layers: int, residual_mult: float, residual_attn_ratio: float
) -> list[tuple[float, float]]:
    """(attention tau, MLP tau) of each layer: u-muP's transformer rule (Appendix G of the u-muP paper).

    Every attention layer contributes the same variance, every MLP layer too; their total relative to the
    embedding is `residual_mult`, and attention relative to MLP is `residual_attn_ratio`.
    """
    alpha_mlp = residual_mult * (2 / (1 + residual_attn_ratio**2)) ** 0.5
    alpha_attn = residual_attn_ratio * alpha_mlp
    depth = 2 * num_layers

    def tau(index: int) -> float:
        n_attn, n_mlp = (index + 1) // 2, index // 2
        alpha = alpha_attn if index % 2 == 0 else alpha_mlp
        return alpha / (depth / 2 + n_attn * alpha_attn**2 + n_mlp * alpha_mlp**2) ** 0.5

    return [(tau(2 * i), tau(2 * i + 1)) for i in range(num_layers)]


# silu(x) of a unit normal x has a standard deviation far below 1; u-muP multiplies it by this empirical constant
# (unit_scaling's `silu` at mult=1: a log-interpolation between 2 and sqrt(2 / (1 - 1/pi)) at alpha = 0.8).
SILU_OUTPUT_SCALE = math.exp(0.8 * math.log((2 / (1 - 1 / math.pi)) ** 0.5) + 0.2 * math.log(2.0))


def scaled_silu(x: Tensor) -> Tensor:
    return F.silu(x) * SILU_OUTPUT_SCALE


class ResidualMLP(torch.nn.Module):
    """silu MLP plus a linear skip projection, mixed at tau = 1. Embeds patches and reads out quantiles.

    `readout` uses 1/fan_in multipliers on both paths into the output, as u-muP does for a network's last layer.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, readout: bool = False) -> None:
        super().__init__()
        self.linear1 = ScaledLinear(in_dim, hidden_dim, bias=True)
        self.linear2 = ScaledLinear(hidden_dim, out_dim, bias=True, readout=readout)
        self.skip_proj = ScaledLinear(in_dim, out_dim, bias=True, readout=readout)

    def forward(self, x: Tensor) -> Tensor:
        return residual_add(self.linear2(scaled_silu(self.linear1(x))), self.skip_proj(x), 1.0)


class GatedFeedForward(torch.nn.Module):
    """The transformer's GLU feed-forward: fc2(a * silu(b)) where fc1(x) = [a, b]."""

    def __init__(self, d_model: int, d_ff: int, bias: bool) -> None:
        super().__init__()
        self.fc1 = ScaledLinear(d_model, 2 * d_ff, bias=bias)
        self.fc2 = ScaledLinear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(gate * F.silu(value))
