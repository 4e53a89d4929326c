"""LoRA adapters (through `peft`) for Toto 2.0, and merging them back into plain weights for export.

Toto 2.0's linear layers are u-muP `ScaledLinear`s: y = (x W^T + b) * output_scale, a fixed multiplier
(1/sqrt(fan_in), or 1/fan_in for readouts). peft wraps such a layer as any `nn.Linear` and adds its low-rank term
outside the multiplier: y = base(x) + scaling * B A x. Its own `merge_and_unload` would add B A to W, which puts
the update *inside* the multiplier and shrinks it by output_scale, changing the function. `merge_adapters` adds
scaling * B A / output_scale instead, so the merged model computes what the adapted one did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TypeVar

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

ADAPTER_NAME = "default"
# The transformer's attention projections and GLU feed-forward, the layers LoRA usually adapts.
DEFAULT_TARGET_MODULES = ["in_proj", "out_proj", "fc1", "fc2"]

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


@dataclass
class LoraSettings:
    """LoRA hyper-parameters, the YAML `model.lora` section (null = full fine-tuning).

    Args:
        r: rank of the low-rank update of each adapted layer.
        alpha: the update is multiplied by alpha / r.
        dropout: dropout on the adapters' input, during training only.
        target_modules: names (or name suffixes) of the linear layers to adapt, e.g. "in_proj", "out_proj",
            "fc1", "fc2" in the transformer layers, "patch_proj.linear1" in the patch embedding or
            "output_head.param_projection.proj.linear2" in the quantile head.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGET_MODULES))

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if not self.target_modules:
            raise ValueError("lora.target_modules is empty: name the linear layers to adapt, e.g. [in_proj, fc1]")

    def to_dict(self) -> dict:
        return asdict(self)


def add_adapters(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Wrap the target layers of `model` with LoRA adapters, in place; only the adapters stay trainable."""
    # peft annotates lora_alpha as int, but only divides it by r (or sqrt(r)): a float scales as given.
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,  # type: ignore[arg-type]
                        target_modules=list(settings.target_modules), bias="none")
    try:
        model = inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    except ValueError as error:  # peft's message when no layer matches
        names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(f"lora.target_modules {settings.target_modules} did not match the model's linear layers "
                         f"(their names end with {names}): {error}") from error
    return model


def adapter_layers(model: torch.nn.Module) -> dict[str, LoraLayer]:
    """The LoRA-wrapped layers of `model`, by module name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


@torch.no_grad()
def merge_adapters(model: ModuleT) -> ModuleT:
    """Fold every adapter into its base layer's weight and put the plain base layer back, in place.

    Returns `model`, now with the module tree (and state-dict names) of the model before `add_adapters`.
    """
    for name, layer in adapter_layers(model).items():
        base = layer.get_base_layer()
        output_scale = getattr(base, "output_scale", 1.0)  # plain nn.Linear layers have no multiplier
        weight = base.get_parameter("weight")
        for adapter in layer.active_adapters:
            # Every concrete LoraLayer (Linear, Embedding, Conv, ...) defines get_delta_weight; peft's base class
            # does not declare it.
            delta = layer.get_delta_weight(adapter).to(torch.float64) / output_scale  # type: ignore[attr-defined]
            weight.copy_((weight.to(torch.float64) + delta).to(weight.dtype))
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, base)
    return model
