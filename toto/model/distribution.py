"""Output heads: from a hidden vector per time step to a Student-T (mixture) distribution in normalised space.

Parameter maps as in Toto 1.0: df = 2 + softplus(.), scale = softplus(.) (both clamped at machine epsilon), mixture
weights = softmax(.). Student-T with df > 2 has a finite mean and variance, which the robust training loss needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import Categorical, Distribution, MixtureSameFamily, StudentT


class MixtureOfStudentTsOutput(torch.nn.Module):
    def __init__(self, embed_dim: int, k_components: int) -> None:
        super().__init__()
        self.k_components = k_components
        self.df = torch.nn.Linear(embed_dim, k_components)
        self.loc_proj = torch.nn.Linear(embed_dim, k_components)
        self.scale_proj = torch.nn.Linear(embed_dim, k_components)
        self.mixture_weights = torch.nn.Linear(embed_dim, k_components)

    def forward(self, hidden: Tensor) -> Distribution:
        """hidden (..., embed_dim) -> a distribution with batch shape (...)."""
        eps = torch.finfo(hidden.dtype).eps
        df = 2.0 + F.softplus(self.df(hidden)).clamp_min(eps)
        scale = F.softplus(self.scale_proj(hidden)).clamp_min(eps)
        probs = F.softmax(self.mixture_weights(hidden), dim=-1)
        components = StudentT(df, self.loc_proj(hidden), scale, validate_args=False)
        return MixtureSameFamily(Categorical(probs=probs, validate_args=False), components, validate_args=False)


class StudentTOutput(torch.nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.df = torch.nn.Linear(embed_dim, 1)
        self.loc_proj = torch.nn.Linear(embed_dim, 1)
        self.scale_proj = torch.nn.Linear(embed_dim, 1)

    def forward(self, hidden: Tensor) -> Distribution:
        eps = torch.finfo(hidden.dtype).eps
        df = 2.0 + F.softplus(self.df(hidden)).clamp_min(eps).squeeze(-1)
        scale = F.softplus(self.scale_proj(hidden)).clamp_min(eps).squeeze(-1)
        return StudentT(df, self.loc_proj(hidden).squeeze(-1), scale, validate_args=False)


def select_rows(dist: Distribution, rows: slice | Tensor) -> Distribution:
    """The same kind of distribution restricted to some entries of its first batch dimension."""
    if isinstance(dist, MixtureSameFamily):
        components = dist.component_distribution
        return MixtureSameFamily(
            Categorical(probs=dist.mixture_distribution.probs[rows], validate_args=False),
            StudentT(components.df[rows], components.loc[rows], components.scale[rows], validate_args=False),
            validate_args=False,
        )
    return StudentT(dist.df[rows], dist.loc[rows], dist.scale[rows], validate_args=False)


OUTPUT_DISTRIBUTIONS = {
    "<class 'model.distribution.MixtureOfStudentTsOutput'>": MixtureOfStudentTsOutput,
    "<class 'model.distribution.StudentTOutput'>": StudentTOutput,
}


def build_output_distribution(classes: list[str], embed_dim: int, kwargs: dict | None) -> torch.nn.Module:
    if len(classes) != 1 or classes[0] not in OUTPUT_DISTRIBUTIONS:
        raise ValueError(f"output_distribution_classes must be one of {sorted(OUTPUT_DISTRIBUTIONS)}, got {classes}")
    return OUTPUT_DISTRIBUTIONS[classes[0]](embed_dim, **(kwargs or {}))
