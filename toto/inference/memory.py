"""Working memory of a forecast, from its shape alone: one cost plan per model family.

`ForecastPipeline.plan` answers with these plans, and every entry point that must bound memory (the service's
admission and its merged passes, the CLI's up-front refusal, the forecaster's chunking) asks it, so there is one
estimate per family.

A Toto 1.0 forecast (`plan_forecast`) holds, at its peak:
- a fixed part: the series and scaler statistics, the context's activations while it is encoded once, and the
  context's keys/values, stored once per series and shared by every sample path;
- a part per sample path decoded at the same time: the keys/values of the patches the path generated itself, the
  activations of one decoding step, the output head's parameters and the random numbers of one patch;
- the result: the samples (and their chunks before they are joined).

`plan_forecast` derives from a budget how many sample paths are decoded together, or raises `MemoryBudgetExceeded`
when even one path does not fit. A Toto 2.0 forecast (`plan_quantile_pass`) is one forward pass over the context and
the horizon's placeholder patches, with no sample paths. The figures are upper estimates of the tensors the
forecasts allocate; `benchmarks/bench_memory.py` measures the real peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..model.config import TotoConfig
from ..model.distribution import UNIFORMS_PER_VALUE
from ..v2.config import QUANTILE_KNOTS, Toto2Config

# The forecaster's default working-memory budget (the model's weights are not counted).
DEFAULT_MEMORY_BUDGET_BYTES = 2 * 1024**3
FLOAT32 = 4
# Bytes per time step of each input row before the network: the float32 values, their mask, the normalised copy,
# loc and scale (17 B), the scaler's float64 running statistics (count, mean, sum of squares: 24 B) and the
# left-padded copies of values and mask, rounded up.
INPUT_BYTES_PER_STEP = 64


class MemoryBudgetExceeded(ValueError):
    """A forecast that cannot fit the memory budget even with one sample path at a time."""

    def __init__(self, needed_bytes: int, budget_bytes: int) -> None:
        self.needed_bytes, self.budget_bytes = needed_bytes, budget_bytes
        super().__init__(
            f"this forecast needs at least {needed_bytes / 2**20:,.0f} MiB of working memory but the memory budget "
            f"is {budget_bytes / 2**20:,.0f} MiB: shorten the context, the horizon or the number of series, "
            "variates or samples, or raise memory_budget_bytes"
        )

    def __reduce__(self) -> tuple[type, tuple[int, int]]:  # pickled across processes (the service's model process)
        return type(self), (self.needed_bytes, self.budget_bytes)


@dataclass(frozen=True)
class ForecastPlan:
    paths_per_chunk: int
    """Sample paths decoded together (all series of the batch at once)."""
    fixed_bytes: int
    per_path_bytes: int
    output_bytes: int

    @property
    def peak_bytes(self) -> int:
        return self.fixed_bytes + self.paths_per_chunk * self.per_path_bytes + self.output_bytes


def plan_forecast(
    config: TotoConfig,
    batch: int,
    variates: int,
    context_length: int,
    prediction_length: int,
    num_samples: int | None,
    budget_bytes: int,
    samples_per_batch: int | None = None,
    use_kv_cache: bool = True,
    element_size: int = FLOAT32,
) -> ForecastPlan:
    """The chunking of a forecast of this shape that fits `budget_bytes`; `element_size` is the weights' (2 for bf16).

    `samples_per_batch` caps the paths per chunk further. Raises MemoryBudgetExceeded if one path does not fit.
    """
    patch, embed, heads = config.patch_size, config.embed_dim, config.num_heads
    rows = batch * variates
    labels = int(config.use_variate_labels)
    context_patches = math.ceil(context_length / patch) + labels
    steps = math.ceil(prediction_length / patch)
    time_layers = _time_layers(config)
    samples = num_samples or 1
    token = (6 * embed + 3 * config.mlp_hidden_dim) * element_size  # one token's activations inside a layer

    series = rows * (math.ceil(context_length / patch) * patch + steps * patch) * INPUT_BYTES_PER_STEP
    context_cache = 2 * time_layers * rows * context_patches * embed * element_size
    encode = rows * context_patches * token + 2 * rows * heads * context_patches**2 * FLOAT32
    fixed = series + context_cache + encode

    head = rows * patch * (embed * element_size + 16 * config.k_components * FLOAT32)
    sampling = rows * patch * (UNIFORMS_PER_VALUE + 6) * FLOAT32
    history = rows * steps * patch * 3 * FLOAT32
    if use_kv_cache:
        own_cache = 2 * time_layers * rows * max(steps - 1, 0) * embed * element_size
        step = rows * token + 3 * rows * heads * context_patches * FLOAT32
    else:
        # Every step runs the whole series of every path again.
        total_patches = context_patches + steps
        own_cache = rows * total_patches * patch * 4 * FLOAT32
        step = rows * total_patches * token + 2 * rows * heads * total_patches**2 * FLOAT32
    per_path = own_cache + step + head + sampling + history
    # Samples, their chunks before they are joined, and the statistics computed from them.
    output = 3 * rows * prediction_length * samples * FLOAT32

    minimum = fixed + per_path + output
    if minimum > budget_bytes:
        raise MemoryBudgetExceeded(minimum, budget_bytes)
    paths = min(samples, (budget_bytes - fixed - output) // per_path)
    if samples_per_batch is not None:
        paths = min(paths, samples_per_batch)
    return ForecastPlan(int(paths), int(fixed), int(per_path), int(output))


def plan_quantile_pass(config: Toto2Config, batch: int, variates: int, context_length: int,
                       prediction_length: int, num_levels: int, budget_bytes: int) -> ForecastPlan:
    """An upper estimate of a Toto 2.0 forecast, one pass over the context and horizon patches through every
    layer: the inputs, one layer's activations of every token, one layer's attention scores, and the nine knots
    with the requested levels and the median. Raises MemoryBudgetExceeded when it exceeds `budget_bytes`."""
    assert config.d_ff is not None  # Toto2Config.__post_init__ derives it from d_model when left out
    rows = batch * variates
    tokens = math.ceil(context_length / config.patch_size) + math.ceil(prediction_length / config.patch_size)
    inputs = rows * (context_length + prediction_length) * INPUT_BYTES_PER_STEP
    activations = rows * tokens * (6 * config.d_model + 3 * config.d_ff) * FLOAT32
    attention = 2 * rows * config.num_heads * tokens**2 * FLOAT32
    output = 3 * rows * prediction_length * (len(QUANTILE_KNOTS) + num_levels + 1) * FLOAT32
    fixed = inputs + activations + attention
    if fixed + output > budget_bytes:
        raise MemoryBudgetExceeded(fixed + output, budget_bytes)
    return ForecastPlan(paths_per_chunk=1, fixed_bytes=fixed, per_path_bytes=0, output_bytes=output)


def _time_layers(config: TotoConfig) -> int:
    if config.spacewise_every_n_layers == -1:
        return config.num_layers
    return config.num_layers - config.num_layers // config.spacewise_every_n_layers
