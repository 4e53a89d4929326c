"""Output heads: from a hidden vector per time step to a Student-T (mixture) distribution in normalised space.

Parameter maps as in Toto 1.0: df = 2 + softplus(.), scale = softplus(.) (both clamped at machine epsilon), mixture
weights = softmax(.). Student-T with df > 2 has a finite mean and variance, which the robust training loss needs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import (
    AffineTransform,
    Categorical,
    Distribution,
    MixtureSameFamily,
    StudentT,
    TransformedDistribution,
)


def student_t_df(raw: Tensor) -> Tensor:
    return 2.0 + F.softplus(raw).clamp_min(torch.finfo(raw.dtype).eps)


def student_t_scale(raw: Tensor) -> Tensor:
    return F.softplus(raw).clamp_min(torch.finfo(raw.dtype).eps)


class MixtureOfStudentTsOutput(torch.nn.Module):
    """A mixture of k Student-T. Besides the torch distribution (training, `forward`), it gives the two things a
    forecast needs straight from the projections, in float32: the mean, and the parameters of one drawn component
    per value (`drawn_component`), which maps only that component's df and scale instead of all k."""

    def __init__(self, embed_dim: int, k_components: int) -> None:
        super().__init__()
        self.k_components = k_components
        self.df = torch.nn.Linear(embed_dim, k_components)
        self.loc_proj = torch.nn.Linear(embed_dim, k_components)
        self.scale_proj = torch.nn.Linear(embed_dim, k_components)
        self.mixture_weights = torch.nn.Linear(embed_dim, k_components)

    def projections(self) -> list[torch.nn.Linear]:
        """The linear maps of the head, in the order `from_projected` reads their outputs."""
        return [self.df, self.loc_proj, self.scale_proj, self.mixture_weights]

    def forward(self, hidden: Tensor) -> Distribution:
        """hidden (..., embed_dim) -> a distribution with batch shape (...)."""
        return self.from_projected(torch.cat([p(hidden) for p in self.projections()], dim=-1))

    def from_projected(self, raw: Tensor) -> Distribution:
        """The distribution from the projections' outputs concatenated, (..., 4 * k_components)."""
        df, loc, scale, logits = raw.split(self.k_components, dim=-1)
        components = StudentT(student_t_df(df), loc, student_t_scale(scale), validate_args=False)
        probs = F.softmax(logits, dim=-1)
        return MixtureSameFamily(Categorical(probs=probs, validate_args=False), components, validate_args=False)

    def mean_from_projected(self, raw: Tensor) -> Tensor:
        """(..., 4k) -> (...) float32: the weighted component locations (df > 2, so every component has a mean)."""
        _, loc, _, logits = raw.float().split(self.k_components, dim=-1)
        return (F.softmax(logits, dim=-1) * loc).sum(-1)

    def components_from_projected(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(..., 4k) -> the mixture's weights, df, loc and scale, each (..., k), in float64: what an exact CDF of
        the mixture needs (`toto.anomaly.distributions.StudentTMixture`)."""
        df, loc, scale, logits = raw.double().split(self.k_components, dim=-1)
        return F.softmax(logits, dim=-1), student_t_df(df), loc, student_t_scale(scale)

    def drawn_component(self, raw: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(df, loc, scale), float32, of the component that each uniform in [0, 1) draws (inverse CDF of the
        weights; unnormalised exp(logits - max), which selects as the softmax does)."""
        df, loc, scale, logits = raw.float().split(self.k_components, dim=-1)
        weights = (logits - logits.amax(-1, keepdim=True)).exp()
        index = pick_component(weights, uniform)[..., None]
        df, loc, scale = (t.gather(-1, index).squeeze(-1) for t in (df, loc, scale))
        return student_t_df(df), loc, student_t_scale(scale)


class StudentTOutput(torch.nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.df = torch.nn.Linear(embed_dim, 1)
        self.loc_proj = torch.nn.Linear(embed_dim, 1)
        self.scale_proj = torch.nn.Linear(embed_dim, 1)

    def projections(self) -> list[torch.nn.Linear]:
        return [self.df, self.loc_proj, self.scale_proj]

    def forward(self, hidden: Tensor) -> Distribution:
        return self.from_projected(torch.cat([p(hidden) for p in self.projections()], dim=-1))

    def from_projected(self, raw: Tensor) -> Distribution:
        df, loc, scale = raw.unbind(-1)
        return StudentT(student_t_df(df), loc, student_t_scale(scale), validate_args=False)

    def mean_from_projected(self, raw: Tensor) -> Tensor:
        return raw[..., 1].float()

    def components_from_projected(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(..., 3) -> weights (all one), df, loc and scale, each (..., 1), in float64: one component."""
        df, loc, scale = raw.double().split(1, dim=-1)
        return torch.ones_like(df), student_t_df(df), loc, student_t_scale(scale)

    def drawn_component(self, raw: Tensor, uniform: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(df, loc, scale) in float32; there is one component, so `uniform` is not used."""
        df, loc, scale = raw.float().unbind(-1)
        return student_t_df(df), loc, student_t_scale(scale)


class AffineTransformed(TransformedDistribution):
    """`base * scale + loc`, with the mean and variance that torch's TransformedDistribution leaves out (Toto 1.0
    returns GluonTS's class of that name from `TotoForecaster.create_affine_transformed`)."""

    def __init__(self, base_distribution: Distribution, loc: Tensor | float = 0.0, scale: Tensor | float = 1.0) -> None:
        self.loc, self.scale = loc, scale
        super().__init__(base_distribution, [AffineTransform(loc, scale)], validate_args=False)

    @property
    def mean(self) -> Tensor:
        return self.base_dist.mean * self.scale + self.loc

    @property
    def variance(self) -> Tensor:
        return self.base_dist.variance * self.scale**2


def pick_component(probs: Tensor, uniform: Tensor) -> Tensor:
    """Index of the mixture component each uniform in [0, 1) selects (inverse CDF of the weights, which need not
    sum to 1)."""
    cumulative = probs.cumsum(-1)
    return (cumulative < uniform[..., None] * cumulative[..., -1:]).sum(-1).clamp_max(probs.shape[-1] - 1)


# Uniforms per sampled value: one picks the mixture component, two give a point of the unit disc.
UNIFORMS_PER_VALUE = 3


def disc_point(uniforms: Tensor) -> tuple[Tensor, Tensor]:
    """A uniform point of the unit disc from two uniforms in [0, 1) (..., 2): its first coordinate u and its squared
    radius w in (0, 1].

    Bailey's polar method draws such a point by rejection (pairs of the square until one falls in the disc); here
    it is drawn directly, w uniform and the angle uniform (a point uniform in the disc has a uniform squared radius
    and an independent uniform angle), so every value takes exactly two uniforms and nothing is redrawn.
    """
    w = 1.0 - uniforms[..., 0]
    u = torch.sqrt(w) * torch.cos(2.0 * math.pi * uniforms[..., 1])
    return u, w


def student_t_from_polar(u: Tensor, w: Tensor, df: Tensor) -> Tensor:
    """Bailey's polar method, the parameter half: a standard Student-T variate with `df` degrees of freedom."""
    return u * torch.sqrt(df * (w ** (-2.0 / df) - 1.0) / w)


OutputDistribution = MixtureOfStudentTsOutput | StudentTOutput

OUTPUT_DISTRIBUTIONS: dict[str, type[MixtureOfStudentTsOutput] | type[StudentTOutput]] = {
    "<class 'model.distribution.MixtureOfStudentTsOutput'>": MixtureOfStudentTsOutput,
    "<class 'model.distribution.StudentTOutput'>": StudentTOutput,
}


def build_output_distribution(classes: list[str], embed_dim: int, kwargs: dict | None) -> OutputDistribution:
    if len(classes) != 1 or classes[0] not in OUTPUT_DISTRIBUTIONS:
        raise ValueError(f"output_distribution_classes must be one of {sorted(OUTPUT_DISTRIBUTIONS)}, got {classes}")
    return OUTPUT_DISTRIBUTIONS[classes[0]](embed_dim, **(kwargs or {}))
