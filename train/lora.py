"""LoRA adapters (through `peft`) for Toto 1.0 and 2.0, and merging them back into plain weights for export.

Toto 1.0's linear layers are plain `nn.Linear`s, so the merge is W += scaling * B A. Toto 2.0's are u-muP
`ScaledLinear`s: y = (x W^T + b) * output_scale, a fixed multiplier (1/sqrt(fan_in), or 1/fan_in for readouts).
peft wraps such a layer as any `nn.Linear` and adds its low-rank term outside the multiplier: y = base(x) +
scaling * B A x. Its own `merge_and_unload` would add B A to W, which puts the update *inside* the multiplier and
shrinks it by output_scale, changing the function. `merge_adapters` adds scaling * B A / output_scale instead, so
the merged model computes what the adapted one did, in both families.

peft is imported on first use, so that training without LoRA does not import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from toto.validation import InputError

if TYPE_CHECKING:
    from peft.tuners.lora import LoraLayer

ADAPTER_NAME = "default"
# The layers LoRA adapts unless `target_modules` names others: the transformer layers' attention projections and
# feed-forward, as each family names them.
TOTO1_TARGET_MODULES = ["wQKV", "wO", "mlp.0", "mlp.2"]
TOTO2_TARGET_MODULES = ["in_proj", "out_proj", "fc1", "fc2"]

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


@dataclass
class LoraSettings:
    """LoRA hyper-parameters, the YAML `model.lora` section (null = full fine-tuning).

    Args:
        r: rank of the low-rank update of each adapted layer.
        alpha: the update is multiplied by alpha / r.
        dropout: dropout on the adapters' input, during training only.
        target_modules: names (or name suffixes) of the linear layers to adapt; null (the default) adapts the
            transformer layers' attention and feed-forward: Toto 1.0's "wQKV", "wO", "mlp.0", "mlp.2", Toto 2.0's
            "in_proj", "out_proj", "fc1", "fc2". Others can be named too, e.g. "projection" (Toto 1.0's patch
            embedding), "patch_proj.linear1" or "output_head.param_projection.proj.linear2" (Toto 2.0's).
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise InputError(f"lora.r must be at least 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.target_modules is not None and not self.target_modules:
            raise InputError("lora.target_modules is empty: name the linear layers to adapt (e.g. [wQKV, wO] for"
                             " Toto 1.0, [in_proj, fc1] for Toto 2.0), or leave it null for the family's default")

    def to_dict(self) -> dict:
        return asdict(self)


def add_adapters(model: torch.nn.Module, settings: LoraSettings, default_targets: list[str]) -> torch.nn.Module:
    """Wrap the target layers of `model` (`default_targets` when the settings name none) with LoRA adapters, in
    place; only the adapters stay trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = list(default_targets if settings.target_modules is None else settings.target_modules)
    # peft annotates lora_alpha as int, but only divides it by r (or sqrt(r)): a float scales as given.
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,  # type: ignore[arg-type]
                        target_modules=targets, bias="none")
    try:
        model = inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    except ValueError as error:  # peft's message when no layer matches
        names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise InputError(f"lora.target_modules {targets} did not match the model's linear layers (their names end "
                         f"with {names}): {' '.join(str(error).split())}") from error
    return model


def adapter_layers(model: torch.nn.Module) -> dict[str, LoraLayer]:
    """The LoRA-wrapped layers of `model`, by module name."""
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}


def load_merged(model: ModuleT, state_dict: Mapping[str, torch.Tensor], settings: dict[str, Any] | None,
                default_targets: list[str]) -> ModuleT:
    """`model` (plain, as built from its config) with the weights of a training checkpoint: its `state_dict`, saved
    with the LoRA adapters that `settings` (`LoraSettings.to_dict`, None for none) describe, merged into plain
    weights. Returns `model`, with the module tree and state-dict names of a model trained without LoRA."""
    if settings is None:
        model.load_state_dict(state_dict)
        return model
    add_adapters(model, LoraSettings(**settings), default_targets)
    model.load_state_dict(state_dict)
    return merge_adapters(model)


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
