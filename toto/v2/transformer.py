"""The variate-time decoder of Toto 2.0: groups of time-wise and variate-wise pre-norm transformer layers.

Shapes: state (batch, variates, patches, d_model); group ids (batch, variates, patches) hold each variate's series
id, or -1 for a patch without any observed value. Time layers attend causally along the patches of each variate;
variate layers attend across the variates of one patch that belong to the same series (`series_ids`).

Masking follows the official decoder: along time, a query sees the earlier keys whose group id equals its own (so
patches with data never see empty ones), and when decoding from a cache, every cached key with data. When nothing
is masked, no mask tensor is built and the kernel's causal path runs.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from .attention import SelfAttention
from .config import Toto2Config
from .kv_cache import KVCache
from .scaled import GatedFeedForward, RMSNorm, residual_add, transformer_residual_taus


class TransformerLayer(torch.nn.Module):
    attn_tau: Tensor  # () buffer: the attention residual's scale (see __init__)
    mlp_tau: Tensor  # () buffer: the MLP residual's scale

    def __init__(self, config: Toto2Config, is_variate_layer: bool, taus: tuple[float, float]) -> None:
        super().__init__()
        self.is_variate_layer = is_variate_layer
        self.attn = SelfAttention(config, is_variate_layer)
        assert config.d_ff is not None  # Toto2Config.__post_init__ derives it from d_model when left out
        self.ffn = GatedFeedForward(config.d_model, config.d_ff, config.mlp_bias)
        self.norm1 = RMSNorm(config.d_model, config.norm_eps, config.norm_include_weight)
        self.norm2 = RMSNorm(config.d_model, config.norm_eps, config.norm_include_weight)
        # Stored in the published checkpoints, so kept as (persistent) buffers; the forward pass reads them as
        # Python floats, refreshed whenever weights are loaded (no tensor maths on scalars, no device sync).
        self.register_buffer("attn_tau", torch.tensor(taus[0]))
        self.register_buffer("mlp_tau", torch.tensor(taus[1]))
        self.taus = taus
        self.register_load_state_dict_post_hook(lambda module, _: module._read_taus())

    def _read_taus(self) -> None:
        self.taus = (float(self.attn_tau), float(self.mlp_tau))

    def forward(self, x: Tensor, **attention: object) -> Tensor:
        attn_tau, mlp_tau = self.taus
        x = residual_add(self.attn(self.norm1(x), **attention), x, attn_tau)
        return residual_add(self.ffn(self.norm2(x)), x, mlp_tau)


class VariateTimeDecoder(torch.nn.Module):
    def __init__(self, config: Toto2Config) -> None:
        super().__init__()
        self.config = config
        assert config.residual_attn_ratio is not None  # Toto2Config.__post_init__ refuses a config without it
        taus = transformer_residual_taus(config.num_layers, config.residual_mult, config.residual_attn_ratio)
        self.layers = torch.nn.ModuleList(
            TransformerLayer(config, config.is_variate_layer(i), taus[i]) for i in range(config.num_layers)
        )
        self.out_norm = RMSNorm(config.d_model, config.norm_eps, config.norm_include_weight)

    def forward(
        self,
        state: Tensor,
        group_ids: Tensor,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        has_missing_values: bool = True,
    ) -> Tensor:
        """state (batch, variates, patches, d) -> (batch, variates, patches, d).

        `positions` (patches,) are the patches' time positions (default 0, 1, ...). With a `cache`, the first call
        fills it (prefill) and later calls attend to it; `cache.set_keep` says how many new positions stay cached.
        """
        batch, num_variates, seq_len, _ = state.shape
        if positions is None:
            positions = torch.arange(seq_len, device=state.device)
        time_mask = self._time_mask(group_ids, cache, has_missing_values)
        variate_mask = _variate_mask(group_ids)

        x = rearrange(state, "b n s d -> (b n) s d")
        time_layer = 0
        for layer in self.layers:
            if layer.is_variate_layer:
                x = rearrange(x, "(b n) s d -> (b s) n d", n=num_variates)
                x = layer(x, mask=variate_mask)
                x = rearrange(x, "(b s) n d -> (b n) s d", s=seq_len)
            else:
                layer_cache = cache.layers[time_layer] if cache is not None else None
                x = layer(x, mask=time_mask, is_causal=True, positions=positions, cache=layer_cache)
                time_layer += 1
        return self.out_norm(rearrange(x, "(b n) s d -> b n s d", b=batch))

    @staticmethod
    def _time_mask(group_ids: Tensor, cache: KVCache | None, has_missing_values: bool) -> Tensor | None:
        """(rows, 1, seq, keys) bool mask of the time layers, or None for plain causal attention."""
        valid = rearrange(group_ids != -1, "b n s -> (b n) s")
        seq_len = valid.shape[-1]
        key_valid = cache.extend_valid(valid) if cache is not None else None
        if key_valid is not None:  # decoding after a prefill: every cached key with data, causally
            offset = key_valid.shape[-1] - seq_len
            causal = torch.ones(seq_len, key_valid.shape[-1], dtype=torch.bool, device=valid.device).tril(offset)
            return (causal & key_valid[:, None, :])[:, None]
        if not has_missing_values or bool(valid.all()):
            return None
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=valid.device).tril()
        return (causal & (valid[:, :, None] == valid[:, None, :]))[:, None]


def _variate_mask(group_ids: Tensor) -> Tensor | None:
    """(batch*patches, 1, variates, variates): variates of the same series at each patch; None if all are one."""
    if group_ids.shape[1] == 1 or bool((group_ids == group_ids[:, :1]).all()):
        return None
    ids = rearrange(group_ids, "b n s -> (b s) n")
    return (ids[:, :, None] == ids[:, None, :])[:, None]
