"""Warmup-stable-decay (WSD) learning-rate schedule, as in Toto 1.0.

The learning rate rises linearly from `min_lr` to `lr` over `warmup_steps`, stays at `lr` for `stable_steps`,
falls to `min_lr` with a 1 - sqrt(progress) shape over `decay_steps`, then stays at `min_lr`. It is a pure
function of the step, wrapped in `LambdaLR`, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math

import torch


def wsd_learning_rate(step: int, lr: float, min_lr: float, warmup_steps: int, stable_steps: int,
                      decay_steps: int) -> float:
    if step < warmup_steps:
        return min_lr + (lr - min_lr) * step / warmup_steps
    step -= warmup_steps
    if step < stable_steps:
        return lr
    step -= stable_steps
    if step < decay_steps:
        return min_lr + (lr - min_lr) * (1 - math.sqrt(step / decay_steps))
    return min_lr


def wsd_scheduler(
    optimizer: torch.optim.Optimizer, lr: float, min_lr: float, warmup_steps: int, stable_steps: int, decay_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step scheduler; the optimizer's learning rate must be `lr` (LambdaLR scales it)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: wsd_learning_rate(step, lr, min_lr, warmup_steps, stable_steps, decay_steps) / lr
    )
