"""Forecasters for BOOM: Toto, seasonal naive and statsforecast's classical models, or any GluonTS Predictor.

A `Forecaster` is a name plus a recipe that builds a GluonTS `Predictor` for one configuration's prediction
length and frequency. Plug in any other model with

    Forecaster("my_model", build=lambda prediction_length, freq: MyPredictor(prediction_length))

`multivariate=False` (the default) feeds the model one variate at a time, as the published statistical
baselines were run; Toto forecasts all variates of a series jointly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gluonts.dataset import DataEntry
from gluonts.ext.statsforecast import (
    AutoARIMAPredictor,
    AutoETSPredictor,
    AutoThetaPredictor,
    SeasonalNaivePredictor,
    StatsForecastPredictor,
)
from gluonts.model.forecast import Forecast
from gluonts.model.predictor import Predictor
from gluonts.transform.feature import LastValueImputation

from boom.data import seasonality
from boom.metrics import QUANTILE_LEVELS
from toto.options import DEFAULT_CONTEXT_LENGTH, Feedback

DEFAULT_TOTO_CHECKPOINT = "Datadog/Toto-Open-Base-1.0"


@dataclass
class Forecaster:
    """A named model recipe plus the settings recorded next to its results in `all_results.csv`."""

    name: str
    build: Callable[[int, str], Predictor]  # (prediction_length, freq) -> Predictor
    multivariate: bool = False
    checkpoint: str = ""
    context_length: int | None = None
    num_samples: int | None = None


class ClassicalPredictor(Predictor):
    """A `gluonts.ext.statsforecast` predictor fed the last `context_length` steps with NaNs filled.

    statsforecast's models cannot take missing values, so gaps are filled with the last observed value.
    """

    def __init__(self, predictor: StatsForecastPredictor, context_length: int) -> None:
        super().__init__(prediction_length=predictor.prediction_length)
        self.predictor = predictor
        self.context_length = context_length

    def predict(self, dataset: Iterable[DataEntry], **kwargs) -> Iterator[Forecast]:
        for entry in dataset:
            target = np.asarray(entry["target"], dtype=np.float64)
            if target.ndim != 1:
                raise ValueError("Classical models forecast one variate at a time: evaluate them with "
                                 "to_univariate=True (Forecaster.multivariate=False).")
            recent = target[-self.context_length:]
            dropped = len(target) - len(recent)
            yield self.predictor.predict_item(
                {**entry, "target": LastValueImputation()(recent.copy()), "start": entry["start"] + dropped})


def classical(name: str, predictor_cls: type[StatsForecastPredictor],
              context_length: int = DEFAULT_CONTEXT_LENGTH) -> Forecaster:
    """A statsforecast model with the frequency's GluonTS seasonality and the published quantile levels."""

    def build(prediction_length: int, freq: str) -> Predictor:
        model = predictor_cls(prediction_length=prediction_length, quantile_levels=list(QUANTILE_LEVELS),
                              season_length=seasonality(freq))
        return ClassicalPredictor(model, context_length)

    return Forecaster(name, build, context_length=context_length)


def toto(checkpoint: str | Path = DEFAULT_TOTO_CHECKPOINT, context_length: int | None = None,
         num_samples: int | None = None, samples_per_batch: int | None = None, batch_size: int = 16,
         seed: int | None = 0, device: str = "cpu", name: str = "toto",
         decode_block_size: int | None = None, context_ensemble: Sequence[int] | None = None,
         feedback: Feedback | None = None) -> Forecaster:
    """Toto 1.0 or 2.0 from a checkpoint folder, an embedded name ("toto-tiny") or a hub id, loaded once for all
    configs (`ForecastPipeline.from_pretrained`, which also takes `decode_block_size`, `context_ensemble` and
    `feedback`). `num_samples` (sampling models) defaults to the family's: DEFAULT_NUM_SAMPLES paths for Toto 1.0,
    none for a quantile model (Toto 2.0), which refuses a number. `context_length` defaults to the checkpoint's
    (`ForecastPipeline.context_length`)."""
    from toto.inference.gluonts_predictor import FAMILY_DEFAULT, TotoPredictor
    from toto.pipeline import ForecastPipeline

    pipeline = ForecastPipeline.from_pretrained(checkpoint, device=device, decode_block_size=decode_block_size,
                                                feedback=feedback, context_ensemble=context_ensemble)
    context_length = pipeline.context_length if context_length is None else context_length
    count = pipeline.sample_count(num_samples)

    def build(prediction_length: int, freq: str) -> Predictor:
        return TotoPredictor(pipeline, prediction_length, context_length=context_length,
                             num_samples=FAMILY_DEFAULT if num_samples is None else num_samples,
                             samples_per_batch=samples_per_batch, batch_size=batch_size, seed=seed)

    return Forecaster(name, build, multivariate=True, checkpoint=str(checkpoint), context_length=context_length,
                      num_samples=count)


def default_name(model: str, checkpoint: str | Path | None = None) -> str:
    """The results folder a run writes without `--name`: the model's name, and for Toto from another checkpoint
    than the published one, that checkpoint's folder or repo name (`toto-tiny`, `toto-<fine-tune folder>`), so
    that a checkpoint's results never take the published Toto's name or another checkpoint's folder."""
    if model != "toto" or checkpoint is None or str(checkpoint) == DEFAULT_TOTO_CHECKPOINT:
        return model
    name = Path(checkpoint).name
    return name if name.lower().startswith("toto") else f"toto-{name}"


CLASSICAL = {
    "seasonalnaive": SeasonalNaivePredictor,
    "autoets": AutoETSPredictor,
    "autoarima": AutoARIMAPredictor,
    "autotheta": AutoThetaPredictor,
}
MODELS = ["toto", *CLASSICAL]
