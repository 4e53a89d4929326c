"""The Toto training objectives, in the scaler's normalised space.

Toto 1.0: loss = lambda * NLL(Student-T mixture) + (1 - lambda) * robust(mixture mean - target)

with Barron's general robust loss ("A General and Adaptive Robust Loss Function", 2019). Toto 1.0 publishes
lambda = 0.575, delta = 0.1, alpha = 0 (the Cauchy / Lorentzian form), which keeps huge residuals from
spikes in observability data from dominating the point-forecast term.

Toto 2.0 predicts quantile knots instead of a distribution; it is scored with the pinball loss (`pinball_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.distributions import Distribution


def robust_loss(residual: torch.Tensor, alpha: float, delta: float) -> torch.Tensor:
    """Barron's general robust loss rho(x; alpha, delta), elementwise.

    alpha = 2: 0.5 (x/delta)^2 (L2); alpha = 0: log(1 + 0.5 (x/delta)^2) (Cauchy); alpha = -inf: Welsch;
    otherwise |alpha-2|/alpha * (((x/delta)^2 / |alpha-2| + 1)^(alpha/2) - 1). alpha must be <= 2.
    """
    if alpha > 2:
        raise ValueError(f"robust loss alpha must be <= 2, got {alpha}")
    z2 = (residual / delta) ** 2
    if alpha == 2:
        return 0.5 * z2
    if alpha == 0:
        return torch.log1p(0.5 * z2)
    if alpha == float("-inf"):
        return 1 - torch.exp(-0.5 * z2)
    b = abs(alpha - 2)
    return b / alpha * ((z2 / b + 1) ** (alpha / 2) - 1)


class TotoLoss(torch.nn.Module):
    """Elementwise combined loss; the caller masks and averages."""

    def __init__(self, nll_weight: float = 0.575, robust_delta: float = 0.1, robust_alpha: float = 0.0) -> None:
        super().__init__()
        if not 0 <= nll_weight <= 1:
            raise ValueError(f"nll_weight (lambda) must be in [0, 1], got {nll_weight}")
        self.nll_weight = nll_weight
        self.robust_delta = robust_delta
        self.robust_alpha = robust_alpha

    def forward(self, distribution: Distribution, target: torch.Tensor) -> torch.Tensor:
        nll = -distribution.log_prob(target)
        robust = robust_loss(distribution.mean - target, self.robust_alpha, self.robust_delta)
        return self.nll_weight * nll + (1 - self.nll_weight) * robust


def pinball_loss(quantiles: torch.Tensor, target: torch.Tensor, levels: Sequence[float]) -> torch.Tensor:
    """The pinball (quantile) loss averaged over the levels, elementwise: (q, ...) predictions -> (...).

    For level q and error e = target - prediction: q * e if e >= 0, else (q - 1) * e. Its expectation is minimised
    by the q-quantile of the target, so nine knots trained together approximate the predictive distribution.
    """
    if quantiles.shape[0] != len(levels) or quantiles.shape[1:] != target.shape:
        raise ValueError(f"quantiles {tuple(quantiles.shape)} must be (levels={len(levels)}, *target "
                         f"{tuple(target.shape)})")
    q = torch.tensor(levels, dtype=quantiles.dtype, device=quantiles.device).reshape(-1, *[1] * target.dim())
    error = target.unsqueeze(0) - quantiles
    return torch.maximum(q * error, (q - 1) * error).mean(0)
