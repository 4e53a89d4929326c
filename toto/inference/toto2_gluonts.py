"""The official Toto 2.0 GluonTS entry points (`toto2.Toto2GluonTSModel`, `Toto2GluonTSModelConfig`), over ours.

    model = Toto2Model.from_pretrained("Datadog/Toto-2.0-22m")
    predictor = Toto2GluonTSModel(model, Toto2GluonTSModelConfig(prediction_length=48, context_length=2048,
                                                                 target_dim=1)).create_predictor(batch_size=32)
    forecasts = predictor.predict(test_data.input)   # QuantileForecasts of the configured levels

`create_predictor` returns our `TotoPredictor` over a `Toto2Pipeline` with the config's decoding options, so the
forecasts are the same as `predict_df`'s and the service's. Unlike the official wrapper it does not read GluonTS
covariate fields (`feat_dynamic_real`, `past_feat_dynamic_real`): a config that names them is refused, and
covariates go through `predict_df(..., exogenous_columns=, future_df=)` or the service instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from toto.inference.gluonts_predictor import TotoPredictor
from toto.options import DEFAULT_QUANTILE_LEVELS
from toto.pipeline import Toto2Pipeline

if TYPE_CHECKING:
    from toto.v2 import Toto2Model


@dataclass
class Toto2GluonTSModelConfig:
    """The official config's fields and defaults."""

    prediction_length: int
    context_length: int
    target_dim: int
    past_feat_dynamic_real_dim: int = 0
    feat_dynamic_real_dim: int = 0
    decode_block_size: int | None = None
    has_missing_values: bool = True
    quantiles: list[float] = field(default_factory=lambda: list(DEFAULT_QUANTILE_LEVELS))
    imputation_internal: Literal["none", "ffill", "linear"] = "ffill"
    scaler_fallback_min_obs: int = 8
    quantile_real_cap_k: float = 1e4

    def __post_init__(self) -> None:
        if self.past_feat_dynamic_real_dim or self.feat_dynamic_real_dim:
            raise ValueError(
                "GluonTS covariate fields are not read by this predictor: forecast with covariates through "
                "toto.api.predict_df(df, h, exogenous_columns=[...], future_df=...) or the service's exogenous fields"
            )
        if self.imputation_internal != "ffill":
            raise ValueError(
                f"imputation_internal={self.imputation_internal!r}: only 'ffill' is supported (unobserved values "
                "are masked; the fill matters only in the context's last patch)"
            )


class Toto2GluonTSModel:
    def __init__(self, model: Toto2Model, config: Toto2GluonTSModelConfig) -> None:
        self.model, self.config = model, config
        self.prediction_length = config.prediction_length

    def create_predictor(self, batch_size: int, device: str | torch.device = "auto") -> TotoPredictor:
        if device != "auto":
            self.model.to(device)
        c = self.config
        pipeline = Toto2Pipeline(self.model, decode_block_size=c.decode_block_size,
                                 scaler_fallback_min_obs=c.scaler_fallback_min_obs,
                                 quantile_real_cap_k=c.quantile_real_cap_k)
        return TotoPredictor(pipeline, c.prediction_length, context_length=self.history_length, batch_size=batch_size,
                             quantile_levels=c.quantiles)

    @property
    def history_length(self) -> int:
        """The official wrapper's rule: context and forecast patches together fit in `context_length`, so the
        history is `context_length` less all but one forecast patch, rounded down to whole patches."""
        patch = self.model.config.patch_size
        usable = self.config.context_length - (math.ceil(self.prediction_length / patch) - 1) * patch
        return max(patch, usable // patch * patch)
