"""The Toto 2.0 configuration: the fields of the published `config.json` (`Datadog/Toto-2.0-*`), as a dataclass.

Field names and derived defaults are those of the official `toto2.configuration.Toto2ModelConfig`, so a folder
saved here loads in the official package and the other way round. Unlike the official class, values are checked
with errors that name the field (a broken `config.json` should say what is wrong, not fail deep inside a layer),
by the same rules as Toto 1.0's (`toto.model.config.check_fields`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from toto.model.config import FieldRule, check_fields
from toto.options import DECILES

# The quantile levels of the output head ("knots"); every Toto 2.0 checkpoint predicts the nine deciles.
QUANTILE_KNOTS: tuple[float, ...] = DECILES

_POSITIVE = FieldRule((int,), minimum=1)
_OPTIONAL_POSITIVE = FieldRule((int,), minimum=1, nullable=True)
_FLAG = FieldRule((bool,))
_FIELD_RULES: dict[str, FieldRule] = {
    "patch_size": _POSITIVE, "d_model": _POSITIVE, "num_heads": _POSITIVE, "num_layers": _POSITIVE,
    "layer_group_size": _POSITIVE, "num_variate_layers_per_group": FieldRule((int,), minimum=0),
    "variate_layer_first": _FLAG, "dropout_p": FieldRule((int, float), minimum=0, maximum=1),
    "norm_eps": FieldRule((int, float), minimum=0), "attn_bias": _FLAG, "mlp_bias": _FLAG,
    "num_output_patches": _POSITIVE, "pre_norm": _FLAG, "d_ff": _OPTIONAL_POSITIVE, "qk_dim": _OPTIONAL_POSITIVE,
    "v_dim": _OPTIONAL_POSITIVE, "num_groups": _OPTIONAL_POSITIVE, "heads_per_group": _OPTIONAL_POSITIVE,
    "residual_mult": FieldRule((int, float)), "residual_attn_ratio": FieldRule((int, float), minimum=0, nullable=True),
    "qk_norm": _FLAG, "norm_include_weight": _FLAG, "qk_norm_include_weight": FieldRule((bool,), nullable=True),
    "per_dim_scale": _FLAG, "use_xpos": _FLAG,
}


@dataclass
class Toto2Config:
    """Hyper-parameters of a Toto 2.0 model. Field names are the published `config.json` keys."""

    patch_size: int
    d_model: int
    num_heads: int
    num_layers: int
    # Layers come in groups of `layer_group_size`; `num_variate_layers_per_group` of each group attend across
    # variates (at the start of the group if `variate_layer_first`, else at its end), the others across time.
    layer_group_size: int
    num_variate_layers_per_group: int
    variate_layer_first: bool
    dropout_p: float = 0.0
    norm_eps: float = 5e-5
    attn_bias: bool = False
    mlp_bias: bool = False
    num_output_patches: int = 1
    pre_norm: bool = True
    d_ff: int | None = None
    qk_dim: int | None = None
    v_dim: int | None = None
    num_groups: int | None = None  # key/value heads (grouped-query attention); defaults to num_heads
    heads_per_group: int | None = None  # derived: num_heads // num_groups
    residual_mult: float = 1.0
    # u-muP ratio of attention to MLP residual contributions; see `residual_attn_ratio_for`.
    residual_attn_ratio: float | None = None
    qk_norm: bool = True
    norm_include_weight: bool = False
    qk_norm_include_weight: bool | None = None
    per_dim_scale: bool = False
    use_xpos: bool = False

    def __post_init__(self) -> None:
        check_fields(dataclasses.asdict(self), _FIELD_RULES, "Toto2Config")
        if self.dropout_p != 0.0:
            raise ValueError("dropout_p must be 0.0: Toto 2.0 is trained without dropout (it destabilises training)")
        if self.residual_attn_ratio is None:
            raise ValueError(
                "residual_attn_ratio must be set; compute it with "
                "Toto2Config.residual_attn_ratio_for(context_length, patch_size)"
            )
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.num_layers % self.layer_group_size:
            raise ValueError(
                f"num_layers ({self.num_layers}) must be divisible by layer_group_size ({self.layer_group_size})"
            )
        if self.num_variate_layers_per_group > self.layer_group_size:
            raise ValueError("num_variate_layers_per_group must be at most layer_group_size")
        if self.d_ff is None:
            self.d_ff = (int(4 * self.d_model * 2 / 3) + 7) // 8 * 8
        if self.qk_norm_include_weight is None:
            self.qk_norm_include_weight = self.norm_include_weight
        self.num_groups = self.num_groups or self.num_heads
        self.qk_dim = self.qk_dim or self.d_model // self.num_heads
        self.v_dim = self.v_dim or self.qk_dim
        if self.num_heads % self.num_groups:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_groups ({self.num_groups})")
        self.heads_per_group = self.num_heads // self.num_groups
        if self.qk_dim % 4:
            raise ValueError(f"qk_dim ({self.qk_dim}) must be a multiple of 4: rotary positions use half of it")

    @staticmethod
    def residual_attn_ratio_for(context_length: int, patch_size: int) -> float:
        """sqrt(S / log S), S = context_length / patch_size: the official rule for `residual_attn_ratio`."""
        s = context_length / patch_size
        return math.sqrt(s / math.log(s))

    # The official name of the same rule.
    compute_residual_attn_ratio = residual_attn_ratio_for

    @classmethod
    def from_dict(cls, values: Any, source: str = "config") -> Toto2Config:
        """Build from a `config.json` dict. Unknown keys are an error so that typos do not go unnoticed."""
        if not isinstance(values, dict):
            raise ValueError(f"{source} must be a JSON object of Toto 2.0 config fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown Toto 2.0 config keys {unknown}; known keys are {sorted(known)}")
        missing = sorted(
            f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in values
        )
        if missing:
            raise ValueError(f"{source}: missing Toto 2.0 config keys {missing}")
        check_fields(values, _FIELD_RULES, source)
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{source}: {str(error).removeprefix('Toto2Config: ')}") from error

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def num_time_layers(self) -> int:
        return self.num_layers - self.num_variate_layers

    @property
    def num_variate_layers(self) -> int:
        return (self.num_layers // self.layer_group_size) * self.num_variate_layers_per_group

    def is_variate_layer(self, index: int) -> bool:
        position = index % self.layer_group_size
        if self.variate_layer_first:
            return position < self.num_variate_layers_per_group
        return position >= self.layer_group_size - self.num_variate_layers_per_group

    @classmethod
    def tiny(cls, **overrides: Any) -> Toto2Config:
        """A small configuration for tests and CPU experiments."""
        values: dict[str, Any] = {
            "patch_size": 16, "d_model": 64, "num_heads": 4, "num_layers": 4, "layer_group_size": 2,
            "num_variate_layers_per_group": 1, "variate_layer_first": False,
            "residual_attn_ratio": cls.residual_attn_ratio_for(512, 16),
        }
        return cls(**{**values, **overrides})
