"""Serving configuration, read once from `TOTO_SERVE_*` environment variables.

BentoML fixes the traffic timeout when the service is made, so the settings must be known then: `get_settings`
reads them from the environment, validated by pydantic (a bad value stops the server with a clear message), and
`serve.service.create_service` makes the service from them; the service, the request limits and the request guard
share that one object. Tests make services from settings of their own (`ServeSettings(...)`, tests/serve_fixtures.py).
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from toto.inference.memory import DEFAULT_MEMORY_BUDGET_BYTES
from toto.options import DEFAULT_MODEL


class ServeSettings(BaseSettings):
    """Every knob of the forecasting service; set `TOTO_SERVE_<NAME>` (e.g. `TOTO_SERVE_CHECKPOINT`)."""

    model_config = SettingsConfigDict(env_prefix="TOTO_SERVE_", frozen=True)

    checkpoint: str = Field(
        DEFAULT_MODEL, description="Hub id, local folder or embedded model name of either family (Toto 1.0 or 2.0)."
    )
    device: str = Field("auto", description="torch device; 'auto' picks cuda when available, else cpu.")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="The weights' and matmuls' dtype; the series, the scaler and the sampling stay float32. bfloat16 "
        "makes large merged passes faster on a CPU with AVX512-BF16 (docs/benchmarks.md, docs/serving.md).",
    )

    # Request limits: a request over one is answered 422 naming the field and the limit.
    max_context_length: int = Field(4096, ge=1, description="Most time steps per series.")
    max_prediction_length: int = Field(1024, ge=1, description="Largest horizon.")
    max_variates: int = Field(64, ge=1, description="Most variates (targets + exogenous) per series.")
    max_series: int = Field(64, ge=1, description="Most series per request.")
    max_num_samples: int = Field(1024, ge=1, description="Most sample paths per series.")
    max_quantile_levels: int = Field(99, ge=1, description="Most quantile levels per request.")
    max_body_bytes: int = Field(8 * 2**20, ge=1024, description="Largest request body; larger ones get 413.")
    max_detect_length: int = Field(105_120, ge=1, description="Most values per series scored by /detect (a year of "
                                   "five-minute values).")

    # Continuous batching (serve.batching): concurrent requests share forward passes of at most this many series.
    batching: bool = Field(True, description="Merge concurrent requests into shared forward passes.")
    max_batch_size: int = Field(64, ge=2, description="Most series in one forward pass.")
    max_latency_ms: int = Field(30_000, ge=10, description="Longest wait in the batching queue; past it, 503.")
    samples_per_batch: int = Field(256, ge=1, description="Sample paths decoded together per series.")
    timeout_s: int = Field(120, ge=1, description="Per-request timeout; past it the forecast is cancelled.")
    tokens_per_second: float | None = Field(
        None, gt=0, description="The model's throughput, in tokens (a patch of one variate) forwarded per second: a "
        "request whose estimated time (its tokens over this) passes timeout_s gets 413 before any work. Left out, "
        "it is measured once at start-up on this machine (docs/serving.md, 'Time budget').",
    )
    client_check_after_s: float = Field(
        5.0, ge=0, description="A request running longer is checked for a departed client (then cancelled)."
    )

    model_process: bool = Field(
        True,
        description="Run forward passes in a child process (serve.model_process), so that they never wait for the "
        "event loop's Python (docs/serving.md). False runs them in the service's own process, in a worker thread: "
        "what the in-process tests do (no child to spawn, a service per test module), and handy under a debugger.",
    )

    # Memory: requests are admitted on their cost in bytes (docs/serving.md, "Memory budget").
    memory_budget_bytes: int = Field(
        DEFAULT_MEMORY_BUDGET_BYTES, ge=2**20,
        description="Working memory of the admitted requests together (answers and forward passes), weights not "
        "counted; a request that can never fit gets 413, others wait their turn.",
    )


@functools.cache
def get_settings() -> ServeSettings:
    """The process-wide settings, read from the environment on first use."""
    return ServeSettings()
