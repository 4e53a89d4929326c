"""The model configuration: the keys of the published Toto 1.0 `config.json`, as a dataclass.

The official checkpoint stores class names as strings such as "<class 'model.scaler.CausalPatchStdMeanScaler'>";
they are accepted as they are and written back unchanged, so a folder saved here loads in the official package too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

CAUSAL_PATCH_SCALER = "<class 'model.scaler.CausalPatchStdMeanScaler'>"
STUDENT_T_MIXTURE = "<class 'model.distribution.MixtureOfStudentTsOutput'>"

# Toto 1.0's constructor order (`Toto(patch_size, stride, embed_dim, ...)`), for positional arguments.
OFFICIAL_ARGUMENT_ORDER = (
    "patch_size", "stride", "embed_dim", "num_layers", "num_heads", "mlp_hidden_dim", "dropout",
    "spacewise_every_n_layers", "scaler_cls", "output_distribution_classes", "spacewise_first",
    "output_distribution_kwargs", "use_memory_efficient_attention", "stabilize_with_global", "scale_factor_exponent",
)



@dataclass(frozen=True)
class FieldRule:
    """What one config field may hold: JSON types (a bool is not a number here) and an inclusive range."""

    types: tuple[type, ...]
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False

    def problem(self, value: Any) -> str | None:
        """Why `value` does not fit, or None."""
        if value is None:
            return None if self.nullable else "must not be null"
        is_bool = isinstance(value, bool)
        if (is_bool and bool not in self.types) or not isinstance(value, self.types):
            names = " or ".join("number" if t is float else t.__name__ for t in self.types)
            return f"must be {names}, got {value!r} ({type(value).__name__})"
        if self.minimum is not None and not is_bool and isinstance(value, (int, float)) and value < self.minimum:
            return f"must be at least {self.minimum:g}, got {value!r}"
        if self.maximum is not None and not is_bool and isinstance(value, (int, float)) and value > self.maximum:
            return f"must be at most {self.maximum:g}, got {value!r}"
        return None


def check_fields(values: Mapping[str, Any], rules: Mapping[str, FieldRule], source: str) -> None:
    """Refuse config values of the wrong JSON type or out of range, naming the source (file) and the key.

    Shared by the Toto 1.0 and 2.0 configs, so that a bad `config.json` fails with the same kind of message
    before any tensor is allocated.
    """
    for key, rule in rules.items():
        if key in values and (problem := rule.problem(values[key])) is not None:
            raise ValueError(f"{source}: {key!r} {problem}")


POSITIVE_INT = FieldRule((int,), minimum=1)
_FIELD_RULES: dict[str, FieldRule] = {
    "patch_size": POSITIVE_INT,
    "stride": POSITIVE_INT,
    "embed_dim": POSITIVE_INT,
    "num_layers": POSITIVE_INT,
    "num_heads": POSITIVE_INT,
    "mlp_hidden_dim": POSITIVE_INT,
    "dropout": FieldRule((int, float), minimum=0, maximum=1),
    "spacewise_every_n_layers": FieldRule((int,), minimum=-1),
    "scaler_cls": FieldRule((str,)),
    "output_distribution_classes": FieldRule((list,)),
    "output_distribution_kwargs": FieldRule((dict,), nullable=True),
    "spacewise_first": FieldRule((bool,)),
    "use_memory_efficient_attention": FieldRule((bool,)),
    "stabilize_with_global": FieldRule((bool,)),
    "scale_factor_exponent": FieldRule((int, float)),
    "use_variate_labels": FieldRule((bool,)),
}

# Keys our config adds to the published ones. They are written to config.json only when they differ from their
# default, so that folders of plain Toto 1.0 models stay loadable by the official package.
_EXTENSION_KEYS = ("use_variate_labels",)


@dataclass
class TotoConfig:
    """Hyper-parameters of a Toto model. Field names are the published `config.json` keys."""

    patch_size: int = 64
    stride: int = 64
    embed_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_hidden_dim: int = 3072
    dropout: float = 0.1
    spacewise_every_n_layers: int = 12
    scaler_cls: str = CAUSAL_PATCH_SCALER
    output_distribution_classes: list[str] = field(default_factory=lambda: [STUDENT_T_MIXTURE])
    output_distribution_kwargs: dict[str, Any] | None = field(default_factory=lambda: {"k_components": 24})
    spacewise_first: bool = True
    # In Toto 1.0 this selected xformers attention. Here it allows xformers when installed and on CUDA; PyTorch's
    # fused scaled_dot_product_attention is used otherwise. Both compute the same function.
    use_memory_efficient_attention: bool = True
    stabilize_with_global: bool = True
    scale_factor_exponent: float = 10.0
    # Extension: learned "target" / "exogenous" label tokens prepended to each variate (Toto 1.0 fine-tuning).
    use_variate_labels: bool = False

    def __post_init__(self) -> None:
        check_fields(dataclasses.asdict(self), _FIELD_RULES, "TotoConfig")
        if self.spacewise_every_n_layers == 0:
            raise ValueError("TotoConfig: 'spacewise_every_n_layers' must be positive, or -1 for no space-wise layers")
        k_components = (self.output_distribution_kwargs or {}).get("k_components", 1)
        if isinstance(k_components, bool) or not isinstance(k_components, int) or k_components < 1:
            raise ValueError(f"TotoConfig: 'output_distribution_kwargs.k_components' must be a positive integer, "
                             f"got {k_components!r}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        if (self.embed_dim // self.num_heads) % 2:
            raise ValueError("embed_dim / num_heads must be even for rotary position embeddings")
        if self.stride != self.patch_size:
            raise ValueError(f"only non-overlapping patches are supported: stride ({self.stride}) != patch_size")
        if self.spacewise_every_n_layers != -1 and self.num_layers % self.spacewise_every_n_layers:
            raise ValueError("num_layers must be a multiple of spacewise_every_n_layers (or set it to -1)")

    @classmethod
    def from_dict(cls, values: Any, source: str = "config") -> TotoConfig:
        """Build from a `config.json` dict; unknown keys, wrong types and impossible values are errors that name
        `source` (the file) and the key, so that typos and corrupt files do not go unnoticed."""
        if not isinstance(values, dict):
            raise ValueError(f"{source} must be a JSON object of Toto config fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        # Keys that older official checkpoints carry but that do not change the architecture.
        ignored = {"pre_xformers_checkpoint"}
        unknown = set(values) - known - ignored
        if unknown:
            raise ValueError(f"{source}: unknown Toto config keys: {sorted(unknown)}; known keys are {sorted(known)}")
        check_fields(values, _FIELD_RULES, source)
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except ValueError as error:
            raise ValueError(f"{source}: {str(error).removeprefix('TotoConfig: ')}") from error

    @classmethod
    def from_arguments(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TotoConfig:
        """Build from Toto 1.0 constructor arguments: positional ones in its order, then keywords."""
        if len(args) > len(OFFICIAL_ARGUMENT_ORDER):
            raise TypeError(f"Toto takes at most {len(OFFICIAL_ARGUMENT_ORDER)} positional arguments "
                            f"({', '.join(OFFICIAL_ARGUMENT_ORDER)}), got {len(args)}")
        named = dict(zip(OFFICIAL_ARGUMENT_ORDER, args))
        if twice := sorted(named.keys() & kwargs.keys()):
            raise TypeError(f"Toto got {twice} both by position and by keyword")
        return cls.from_dict({**named, **kwargs})

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        defaults = TotoConfig.__dataclass_fields__
        for key in _EXTENSION_KEYS:
            if values[key] == defaults[key].default:
                del values[key]
        return values

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def k_components(self) -> int:
        return int((self.output_distribution_kwargs or {}).get("k_components", 1))

    @classmethod
    def base(cls) -> TotoConfig:
        """The 151M-parameter Toto-Open-Base-1.0 configuration."""
        return cls()

    @classmethod
    def tiny(cls, **overrides: Any) -> TotoConfig:
        """A small configuration (about 0.3M parameters) for tests and CPU experiments."""
        values: dict[str, Any] = {
            "patch_size": 16, "stride": 16, "embed_dim": 64, "num_layers": 4, "num_heads": 4, "mlp_hidden_dim": 128,
            "dropout": 0.0, "spacewise_every_n_layers": 2, "output_distribution_kwargs": {"k_components": 4},
        }
        return cls(**{**values, **overrides})
