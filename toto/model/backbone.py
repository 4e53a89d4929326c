"""TotoBackbone: scaler -> patch embedding -> transformer -> unembedding -> Student-T mixture.

Shapes: inputs (batch, variate, time) with time a multiple of patch_size P; N = time / P patches; D = embed_dim.
The output at patch n parameterises the distribution of the values of patch n + 1.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor
from torch.distributions import Distribution

from .config import TotoConfig
from .distribution import build_output_distribution
from .fusion import Fusion
from .kv_cache import AttentionCache, KVCache
from .scaler import CausalState, FixedState, Scaler, build_scaler
from .transformer import Transformer

ScalerState = CausalState | FixedState
WeightsVersion = tuple[int, torch.dtype, torch.device, int]


class TotoOutput(NamedTuple):
    distribution: Distribution  # batch shape (batch, variate, time), in normalised space
    loc: Tensor  # (batch, variate, time): the scaler's statistics; x = loc + scale * normalised
    scale: Tensor


class PatchEmbedding(torch.nn.Module):
    def __init__(self, patch_size: int, stride: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.stride = stride
        self.embed_dim = embed_dim
        self.projection = torch.nn.Linear(patch_size, embed_dim)

    def forward(self, x: Tensor, id_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(batch, variate, time) values and ids -> (batch, variate, patch, embed) tokens and (batch, variate, patch)
        ids, as in Toto 1.0. A patch must not span two series (ids constant within it)."""
        if x.shape[-1] % self.patch_size:
            raise ValueError(f"series length {x.shape[-1]} is not a multiple of the patch size {self.patch_size}")
        patch_ids = id_mask.expand_as(x).unfold(-1, self.patch_size, self.stride)
        if bool((patch_ids.amin(-1) != patch_ids.amax(-1)).any()):
            raise ValueError("a patch spans two series: id_mask must be constant within each patch")
        tokens = self.projection(x.unfold(-1, self.patch_size, self.stride).to(self.projection.weight.dtype))
        return tokens, patch_ids[..., 0]


class TotoBackbone(torch.nn.Module):
    """The network. `TotoBackbone(**config_json)`, Toto 1.0's positional arguments, or `TotoBackbone(config)`."""

    def __init__(self, *args: Any, config: TotoConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        config = _config_from(args, config, kwargs)
        self.config = config
        self.embed_dim = config.embed_dim
        self.num_layers = config.num_layers
        self.dropout = config.dropout
        self.use_memory_efficient_attention = config.use_memory_efficient_attention
        self.scaler: Scaler = build_scaler(
            config.scaler_cls, config.patch_size, config.stabilize_with_global, config.scale_factor_exponent
        )
        self.patch_embed = PatchEmbedding(config.patch_size, config.stride, config.embed_dim)
        self.transformer = Transformer(
            config.num_layers, config.embed_dim, config.num_heads, config.mlp_hidden_dim, config.dropout,
            config.spacewise_every_n_layers, config.spacewise_first, config.use_memory_efficient_attention,
        )
        self.unembed = torch.nn.Linear(config.embed_dim, config.embed_dim * config.patch_size)
        self.output_distribution = build_output_distribution(
            config.output_distribution_classes, config.embed_dim, config.output_distribution_kwargs
        )
        self.fusion: Fusion | None = None
        self.num_prepended_tokens = 0
        self.target_variate_label: torch.nn.Parameter | None = None
        self.exogenous_variate_label: torch.nn.Parameter | None = None
        if config.use_variate_labels:
            self.enable_variate_labels()
        self._fused_head: tuple[tuple[WeightsVersion, ...], Tensor, Tensor] | None = None

    def enable_variate_labels(self) -> None:
        """Exogenous-variable fine-tuning (Toto 1.0): learned "target" / "exogenous" label tokens (see `fusion`)."""
        self.fusion = Fusion()
        self.transformer.fusion = self.fusion
        self.num_prepended_tokens = 1
        device = self.unembed.weight.device
        self.target_variate_label = torch.nn.Parameter(torch.randn(self.embed_dim, device=device))
        self.exogenous_variate_label = torch.nn.Parameter(torch.randn(self.embed_dim, device=device))
        self.config.use_variate_labels = True

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def allocate_kv_cache(self, batch_size: int, num_variates: int, max_time_steps: int,
                          device: torch.device | str, dtype: torch.dtype) -> KVCache:
        """A cache with room for `max_time_steps` of series (plus label tokens), as in Toto 1.0."""
        return KVCache(batch_size, num_variates, list(self.transformer.layers), self.num_layers, self.embed_dim,
                       self.config.num_heads, -(-max_time_steps // self.patch_size) + self.num_prepended_tokens,
                       device, dtype, self.use_memory_efficient_attention)

    def scale(self, inputs: Tensor, padding_mask: Tensor, prefix_length: int | None = None,
              state: ScalerState | None = None, causal_stabilisation: bool = False
              ) -> tuple[Tensor, Tensor, Tensor, ScalerState]:
        """Normalise; returns (scaled, loc, scale), each (batch, variate, time), and the scaler's state at the end.

        With `state` the inputs continue the series that state ends (decoding), and the history is not rescanned.
        `causal_stabilisation` makes the scaler's global clamp read only each step's past (scoring values inside a
        window, `toto.inference.next_value`).

        Unobserved values carry no weight in the statistics. What the model reads there follows Toto 1.0 for finite
        values: the value scaled like any other. A NaN has no value: before a variate's first observation
        (left-padding) it enters as a raw 0, as Toto 1.0's zero padding does; after it, as 0 in normalised space,
        i.e. at the running mean.
        """
        finite = torch.isfinite(inputs)
        raw = torch.where(finite, inputs, torch.zeros((), dtype=inputs.dtype, device=inputs.device))
        weights = (padding_mask & finite).to(inputs.dtype)
        scaled, loc, scale, end = self.scaler.scale_from(raw, weights, prefix_length, state, causal_stabilisation)
        started = torch.cumsum(weights, dim=-1) > 0
        if state is not None:
            started = started | (state.weight > 0) if isinstance(state, CausalState) else torch.ones_like(started)
        return scaled.masked_fill(started & ~finite, 0.0), loc, scale, end

    def encode(self, scaled: Tensor, padding_mask: Tensor, id_mask: Tensor,
               kv_cache: AttentionCache | None = None, num_exogenous_variables: int = 0) -> Tensor:
        """Normalised series -> hidden state per patch, (batch, variate, patch, embed).

        With a KV cache the inputs are the patches that follow the cached ones.
        """
        tokens, patch_ids = self.patch_embed(scaled, id_mask)
        patch_valid = padding_mask.unfold(-1, self.patch_size, self.patch_size).any(-1)
        labels = self.build_variate_label_embeds(num_exogenous_variables, tokens)
        hidden = self.transformer(tokens, patch_ids, kv_cache, labels, patch_valid)
        return hidden[:, :, hidden.shape[2] - tokens.shape[2]:]

    def head(self, hidden: Tensor, num_positions: int | None = None) -> Distribution:
        """Hidden states (batch, variate, patch, embed) -> distribution over the next values, (batch, variate, patch*P).

        `num_positions` keeps only the first positions of each next patch: the unembedding's output features are
        laid out (position, embed), so a prefix of its rows computes just those (the last patch of a forecast
        often needs only part of its values).
        """
        if torch.is_grad_enabled():
            weight: Tensor = self.unembed.weight
            bias: Tensor = self.unembed.bias
            if num_positions is not None:
                weight, bias = weight[: num_positions * self.embed_dim], bias[: num_positions * self.embed_dim]
            flat = rearrange(F.linear(hidden, weight, bias), "b v n (p d) -> b v (n p) d", d=self.embed_dim)
            return self.output_distribution(flat)
        return self.output_distribution.from_projected(self.head_projections(hidden, num_positions))

    def head_projections(self, hidden: Tensor, num_positions: int | None = None) -> Tensor:
        """Without gradients: the output distribution's projections, (batch, variate, patch*P, 4K) for a mixture of
        K (what `output_distribution.from_projected`, `mean_from_projected` and `drawn_component` read).

        The unembedding and the distribution's projections, both linear, run as one linear map composed once
        (`fused_head`): P * 4K outputs per patch instead of P * embed_dim.
        """
        weight, bias = self.fused_head()
        per_position = weight.shape[0] // self.patch_size
        if num_positions is not None:
            weight, bias = weight[: num_positions * per_position], bias[: num_positions * per_position]
        return rearrange(F.linear(hidden, weight, bias), "b v n (p j) -> b v (n p) j", j=per_position)

    @torch.no_grad()
    def fused_head(self) -> tuple[Tensor, Tensor]:
        """The composition projections . unembedding: weight (P * J, embed), bias (P * J,), J = outputs per position.

        Composed in float64 once, and again only when a weight it reads has changed (`_weights_version`): every
        decoding step reads it, and composing costs far more than a step for the larger configurations.
        """
        projections = self.output_distribution.projections()
        tensors = [self.unembed.weight, self.unembed.bias] + [t for p in projections for t in (p.weight, p.bias)]
        key = tuple(_weights_version(t) for t in tensors)
        if self._fused_head is None or self._fused_head[0] != key:
            out_weight = torch.cat([p.weight for p in projections]).double()  # (J, embed)
            out_bias = torch.cat([p.bias for p in projections]).double()
            dtype, embed = self.unembed.weight.dtype, self.embed_dim
            # One position at a time, so that no float64 copy of the whole unembedding is ever held.
            weight = torch.cat([(out_weight @ self.unembed.weight[p * embed : (p + 1) * embed].double()).to(dtype)
                                for p in range(self.patch_size)])
            unembed_bias = rearrange(self.unembed.bias.double(), "(p d) -> p d", d=embed)
            bias = rearrange(unembed_bias @ out_weight.T + out_bias, "p j -> (p j)").to(dtype)
            self._fused_head = (key, weight, bias)
        return self._fused_head[1], self._fused_head[2]

    def train(self, mode: bool = True) -> TotoBackbone:
        # Training code may also write weights through `.data`, which no version counter sees.
        self._fused_head = None
        return super().train(mode)

    def backbone(self, inputs: Tensor, input_padding_mask: Tensor, id_mask: Tensor, kv_cache: KVCache | None = None,
                 scaling_prefix_length: int | None = None, num_exogenous_variables: int = 0
                 ) -> tuple[Tensor, Tensor, Tensor]:
        """Toto 1.0's backbone: hidden states per time step (batch, variate, time, embed), loc and scale.

        With a KV cache, only the patches after the cached ones are run through the model.
        """
        padding_mask = input_padding_mask.bool()
        scaled, loc, scale, _ = self.scale(inputs, padding_mask, scaling_prefix_length)
        id_mask = id_mask.expand_as(inputs)
        if kv_cache is not None and len(kv_cache):
            start = (len(kv_cache) - self.num_prepended_tokens) * self.patch_size
            scaled, padding_mask, id_mask = scaled[..., start:], padding_mask[..., start:], id_mask[..., start:]
        hidden = self.encode(scaled, padding_mask, id_mask, kv_cache, num_exogenous_variables)
        flat = rearrange(self.unembed(hidden), "b v n (p d) -> b v (n p) d", d=self.embed_dim)
        return flat, loc, scale

    def forward(self, inputs: Tensor, input_padding_mask: Tensor, id_mask: Tensor, kv_cache: KVCache | None = None,
                scaling_prefix_length: int | None = None, num_exogenous_variables: int = 0) -> TotoOutput:
        """Toto 1.0's forward. With a KV cache, only the patches after the cached ones are run through the model."""
        flat, loc, scale = self.backbone(inputs, input_padding_mask, id_mask, kv_cache, scaling_prefix_length,
                                         num_exogenous_variables)
        return TotoOutput(self.output_distribution(flat), loc, scale)

    def build_variate_label_embeds(self, num_exogenous_variables: int, embeddings: Tensor) -> Tensor | None:
        """Toto 1.0's per-variate labels (batch, variate, 1, embed): the last `num_exogenous_variables` variates get
        the exogenous label, the others the target label; None without variate labels."""
        if self.fusion is None:
            return None
        batch, variates = embeddings.shape[:2]
        # enable_variate_labels sets the fusion and both labels together
        assert self.exogenous_variate_label is not None and self.target_variate_label is not None
        is_exogenous = torch.arange(variates, device=embeddings.device) >= variates - num_exogenous_variables
        labels = torch.where(is_exogenous[:, None], self.exogenous_variate_label, self.target_variate_label)
        return repeat(labels.to(embeddings.dtype), "v d -> b v 1 d", b=batch)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def _config_from(args: tuple[Any, ...], config: TotoConfig | None, kwargs: dict[str, Any]) -> TotoConfig:
    """A TotoConfig from `config`, a TotoConfig as the only positional argument, or Toto 1.0's arguments."""
    if config is None and len(args) == 1 and isinstance(args[0], TotoConfig):
        config, args = args[0], ()
    if config is None:
        return TotoConfig.from_arguments(args, kwargs)
    if args or kwargs:
        raise TypeError("pass either a TotoConfig or Toto 1.0's config.json arguments, not both")
    return config


def _weights_version(tensor: Tensor) -> WeightsVersion:
    """What tells whether a tensor's values may have changed since last seen, without reading them.

    Its storage, dtype and device change when the module is moved, cast or given new parameters; its version
    counter is bumped by every in-place write: `load_state_dict`'s copy_, optimizer steps, `weight.mul_(2)` under
    `no_grad`. Writes through `.data` bypass the counter, and inference tensors (made under `torch.inference_mode`)
    have none: for those the storage alone is compared.
    """
    version = -1 if tensor.is_inference() else tensor._version
    return tensor.data_ptr(), tensor.dtype, tensor.device, version
