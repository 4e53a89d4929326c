"""TotoBackbone: scaler -> patch embedding -> transformer -> unembedding -> Student-T mixture.

Shapes: inputs (batch, variate, time) with time a multiple of patch_size P; N = time / P patches; D = embed_dim.
The output at patch n parameterises the distribution of the values of patch n + 1.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor
from torch.distributions import Distribution

from .config import TotoConfig
from .distribution import build_output_distribution
from .kv_cache import KVCache
from .scaler import CausalState, FixedState, build_scaler
from .transformer import Transformer

ScalerState = CausalState | FixedState


class TotoOutput(NamedTuple):
    distribution: Distribution  # batch shape (batch, variate, time), in normalised space
    loc: Tensor  # (batch, variate, time): the scaler's statistics; x = loc + scale * normalised
    scale: Tensor


class PatchEmbedding(torch.nn.Module):
    def __init__(self, patch_size: int, stride: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.stride = stride
        self.projection = torch.nn.Linear(patch_size, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(batch, variate, time) -> (batch, variate, patch, embed)."""
        return self.projection(x.unfold(-1, self.patch_size, self.stride))


class TotoBackbone(torch.nn.Module):
    def __init__(self, config: TotoConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.scaler = build_scaler(
            config.scaler_cls, config.patch_size, config.stabilize_with_global, config.scale_factor_exponent
        )
        self.patch_embed = PatchEmbedding(config.patch_size, config.stride, config.embed_dim)
        self.transformer = Transformer(config)
        self.unembed = torch.nn.Linear(config.embed_dim, config.embed_dim * config.patch_size)
        self.output_distribution = build_output_distribution(
            config.output_distribution_classes, config.embed_dim, config.output_distribution_kwargs
        )
        # Exogenous-variable fine-tuning (Toto 1.0): one learned label token per variate, "target" or "exogenous",
        # prepended to its patch sequence so that the model can tell known-future covariates from targets.
        self.num_prepended_tokens = 0
        if config.use_variate_labels:
            self.num_prepended_tokens = 1
            self.target_variate_label = torch.nn.Parameter(torch.randn(config.embed_dim))
            self.exogenous_variate_label = torch.nn.Parameter(torch.randn(config.embed_dim))

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def allocate_kv_cache(self, batch_size: int, num_variates: int, max_time_steps: int,
                          device: torch.device | str, dtype: torch.dtype) -> KVCache:
        """A cache with room for `max_time_steps` of series (plus label tokens), as in Toto 1.0."""
        max_patches = -(-max_time_steps // self.patch_size) + self.num_prepended_tokens
        return KVCache(self.transformer.num_time_layers, batch_size * num_variates, self.config.num_heads,
                       self.config.head_dim, max_patches, device, dtype)

    def scale(self, inputs: Tensor, padding_mask: Tensor, prefix_length: int | None = None,
              state: ScalerState | None = None) -> tuple[Tensor, Tensor, Tensor, ScalerState]:
        """Normalise; returns (scaled, loc, scale), each (batch, variate, time), and the scaler's state at the end.

        With `state` the inputs continue the series that state ends (decoding), and the history is not rescanned.

        Unobserved values before a variate's first observation are left-padding and enter as raw zeros, as in
        Toto 1.0 (and its training). Unobserved values after it are missing data and enter as 0 in normalised
        space, i.e. at the running mean, whatever their raw value (NaN included).
        """
        raw = torch.where(padding_mask, inputs, torch.zeros((), dtype=inputs.dtype, device=inputs.device))
        scaled, loc, scale, end = self.scaler(raw, padding_mask, prefix_length, state)
        started = torch.cumsum(padding_mask, dim=-1) > 0
        if state is not None:
            started = started | (state.weight > 0) if isinstance(state, CausalState) else torch.ones_like(started)
        missing = started & ~padding_mask
        return scaled.masked_fill(missing, 0.0), loc, scale, end

    def encode(self, scaled: Tensor, padding_mask: Tensor, id_mask: Tensor, kv_cache: KVCache | None = None,
               num_exogenous_variables: int = 0) -> Tensor:
        """Normalised series -> hidden state per patch, (batch, variate, patch, embed).

        With a KV cache the inputs are the patches that follow the cached ones.
        """
        patch = self.patch_size
        tokens = self.patch_embed(scaled)
        patch_ids = id_mask.unfold(-1, patch, patch)
        if bool((patch_ids.amin(-1) != patch_ids.amax(-1)).any()):
            raise ValueError("a patch spans two series: id_mask must be constant within each patch")
        patch_ids = patch_ids[..., 0]
        patch_valid = padding_mask.unfold(-1, patch, patch).any(-1)

        prepend = self.num_prepended_tokens and (kv_cache is None or len(kv_cache) == 0)
        if prepend:
            labels = self._variate_labels(tokens, num_exogenous_variables)
            tokens = torch.cat([labels, tokens], dim=2)
            patch_ids = torch.cat([patch_ids[..., :1], patch_ids], dim=-1)
            patch_valid = F.pad(patch_valid, (1, 0), value=True)
        hidden = self.transformer(tokens, patch_ids, patch_valid, kv_cache)
        return hidden[:, :, 1:] if prepend else hidden

    def head(self, hidden: Tensor, num_positions: int | None = None) -> Distribution:
        """Hidden states (batch, variate, patch, embed) -> distribution over the next values, (batch, variate, patch*P).

        `num_positions` keeps only the first positions of each next patch: the unembedding's output features are
        laid out (position, embed), so a prefix of its rows computes just those (the last patch of a forecast
        often needs only part of its values).
        """
        weight, bias = self.unembed.weight, self.unembed.bias
        if num_positions is not None:
            weight, bias = weight[: num_positions * self.embed_dim], bias[: num_positions * self.embed_dim]
        flat = rearrange(F.linear(hidden, weight, bias), "b v n (p d) -> b v (n p) d", d=self.embed_dim)
        return self.output_distribution(flat)

    def forward(self, inputs: Tensor, input_padding_mask: Tensor, id_mask: Tensor, kv_cache: KVCache | None = None,
                scaling_prefix_length: int | None = None, num_exogenous_variables: int = 0) -> TotoOutput:
        """Toto 1.0's forward. With a KV cache, only the patches after the cached ones are run through the model."""
        scaled, loc, scale, _ = self.scale(inputs, input_padding_mask.bool(), scaling_prefix_length)
        padding_mask, id_mask = input_padding_mask.bool(), id_mask.expand_as(inputs)
        if kv_cache is not None and len(kv_cache):
            start = (len(kv_cache) - self.num_prepended_tokens) * self.patch_size
            scaled, padding_mask, id_mask = scaled[..., start:], padding_mask[..., start:], id_mask[..., start:]
        hidden = self.encode(scaled, padding_mask, id_mask, kv_cache, num_exogenous_variables)
        return TotoOutput(self.head(hidden), loc, scale)

    def _variate_labels(self, tokens: Tensor, num_exogenous_variables: int) -> Tensor:
        batch, variates = tokens.shape[:2]
        is_exogenous = torch.arange(variates, device=tokens.device) >= variates - num_exogenous_variables
        labels = torch.where(is_exogenous[:, None], self.exogenous_variate_label, self.target_variate_label)
        labels = F.normalize(labels, p=2, dim=-1).to(tokens.dtype)
        return repeat(labels, "v d -> b v 1 d", b=batch)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
