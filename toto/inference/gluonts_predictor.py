"""Toto as a GluonTS `Predictor`, so any GluonTS evaluation (BOOM, GIFT-Eval, `evaluate_model`) can run it.

    predictor = TotoPredictor("Datadog/Toto-Open-Base-1.0", prediction_length=48)
    forecasts = list(predictor.predict(test_data.input))   # one SampleForecast per test entry

Entries are GluonTS data entries: `target` is 1-D (time) or 2-D (variates x time) with NaN for missing values,
`start` a `pd.Period`. Each entry's last `context_length` steps are forecast together with the other entries of
its batch (shorter histories are left-padded with NaN, which Toto treats as unobserved). Forecasts are GluonTS
`SampleForecast`s with samples shaped (samples, time) or (samples, time, variates), like the target.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from gluonts.dataset import DataEntry
from gluonts.dataset.util import forecast_start
from gluonts.itertools import batcher
from gluonts.model.forecast import SampleForecast
from gluonts.model.predictor import Predictor

from toto.data.util.dataset import MaskedTimeseries, stack_ragged
from toto.inference.forecaster import DEFAULT_CONTEXT_LENGTH, TotoForecaster, row_seeds
from toto.model.toto import Toto


def _interval_seconds(period: pd.Period) -> int:
    """Length of one step of `period`'s frequency; calendar frequencies (months) use the actual step."""
    return int(((period + 1).start_time - period.start_time).total_seconds())


class TotoPredictor(Predictor):
    """Forecast GluonTS entries with Toto (a loaded model, a checkpoint folder, an embedded name or a hub id).

    Args:
        model_or_checkpoint: a `Toto` instance, or anything `Toto.from_pretrained` accepts.
        prediction_length: steps to forecast after each entry's target.
        context_length: most recent steps of history fed to the model (Toto 1.0 used 2048 on BOOM).
        num_samples: samples drawn per forecast; quantiles and sample-based metrics come from them.
        samples_per_batch: sample paths decoded together; lower it to save memory (None: the forecaster's
            default memory bound).
        batch_size: entries forecast together; entries with different variate counts never share a batch.
        seed: makes every entry's samples reproducible and independent of what else is in its batch;
            None draws fresh randomness.
        device: where to load a checkpoint (a given model stays where it is).
    """

    def __init__(
        self,
        model_or_checkpoint: Toto | str | Path,
        prediction_length: int,
        context_length: int = DEFAULT_CONTEXT_LENGTH,
        num_samples: int = 256,
        samples_per_batch: int | None = None,
        batch_size: int = 16,
        seed: int | None = 0,
        use_kv_cache: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(prediction_length=prediction_length)
        if context_length < 1 or num_samples < 1 or batch_size < 1:
            raise ValueError("context_length, num_samples and batch_size must be positive integers.")
        if isinstance(model_or_checkpoint, Toto):
            self.model = model_or_checkpoint
        else:
            self.model = Toto.from_pretrained(model_or_checkpoint, map_location=device)
        self.model.eval()
        self.forecaster = TotoForecaster(self.model.model)
        self.context_length = context_length
        self.num_samples = num_samples
        self.samples_per_batch = samples_per_batch
        self.batch_size = batch_size
        self.seed = seed
        self.use_kv_cache = use_kv_cache

    def predict(self, dataset: Iterable[DataEntry], **kwargs) -> Iterator[SampleForecast]:
        """One forecast per entry, in the order of `dataset`."""
        index = 0  # position of the next entry in `dataset`: it selects the entry's random stream
        for batch in batcher(dataset, self.batch_size):
            # Consecutive entries with equal variate counts form one model batch.
            for _, group in itertools.groupby(batch, key=lambda entry: np.shape(entry["target"])[:-1]):
                entries = list(group)
                yield from self._predict_batch(entries, index)
                index += len(entries)

    def _inputs(self, entries: list[DataEntry], starts: list[pd.Period]) -> MaskedTimeseries:
        """Stack the entries' recent history into (batch, variates, time), left-padding shorter ones with NaN."""
        return stack_ragged(
            [entry["target"] for entry in entries],
            context_length=self.context_length,
            time_interval_seconds=[_interval_seconds(start) for start in starts],
            end_timestamp_seconds=[int((start - 1).start_time.timestamp()) for start in starts],
        )

    def _predict_batch(self, entries: list[DataEntry], first_index: int) -> Iterator[SampleForecast]:
        starts = [forecast_start(entry) for entry in entries]
        inputs = self._inputs(entries, starts).to(self.model.device)
        seeds = None if self.seed is None else row_seeds(self.seed, len(entries), first=first_index)
        with torch.inference_mode():
            forecast = self.forecaster.forecast(
                inputs, prediction_length=self.prediction_length, num_samples=self.num_samples,
                samples_per_batch=self.samples_per_batch, use_kv_cache=self.use_kv_cache, seed=seeds)
        samples = forecast.samples.float().cpu().numpy()  # (batch, variates, time, samples)
        for row, (entry, start) in enumerate(zip(entries, starts)):
            row_samples = samples[row].transpose(2, 1, 0)  # (samples, time, variates)
            if np.ndim(entry["target"]) == 1:
                row_samples = row_samples[..., 0]
            yield SampleForecast(row_samples, start_date=start, item_id=entry.get("item_id"))
