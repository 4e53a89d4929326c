"""The forecasting options every entry point shares, and their defaults: one definition of each.

The pandas API, the CLI, batch forecasting, the GluonTS predictor, BOOM and the service all forecast through
`toto.pipeline.ForecastPipeline`; what they do when the user does not say comes from here, and the rules a value
must follow from `toto.validation`. This module imports nothing from the package, so every layer may use it.
"""

from __future__ import annotations

from typing import Literal

# The embedded model that every entry point (CLI, pandas API, service, batch forecasting) uses by default.
DEFAULT_MODEL = "toto-tiny"

# History fed to the model when neither the caller nor the checkpoint's training_summary.json says otherwise:
# Toto 1.0 was evaluated on BOOM with 2048 steps.
DEFAULT_CONTEXT_LENGTH = 2048

# Sample paths per series of a sampling model (Toto 1.0) when the caller does not say.
DEFAULT_NUM_SAMPLES = 256

# The nine deciles: the quantile knots Toto 2.0 predicts, the levels BOOM scores, and the quantiles every entry
# point returns unless asked for others.
DECILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_QUANTILE_LEVELS = DECILES

# Series one Prometheus read may return (`toto.prometheus`): a query over every host of a fleet is fine, a forgotten
# label matcher is refused before its points are fetched.
DEFAULT_MAX_SERIES = 10_000

Feedback = Literal["sample", "mean"]
"""What a sample path's next patch is decoded from (Toto 1.0).

- "sample" (Toto 1.0): the path's own draws, so each path is a trajectory of the model's joint distribution, and
  every path runs through the transformer.
- "mean": the mean forecast, decoded once per series; each step's values are drawn from the distribution the model
  predicts given that mean. The samples are then the forecast's marginals, not trajectories (consecutive patches
  of a path are independent), and decoding costs one path per series. Over long horizons of smooth seasonal series
  the mean keeps the cycle that sampled paths, each fed its own noise, lose (weekly CO2 over two years,
  docs/embedded-model.md); on the embedded model's validation windows it scores slightly worse.
"""
FEEDBACK: tuple[Feedback, ...] = ("sample", "mean")
