"""Toto as a GluonTS `Predictor`, so any GluonTS evaluation (BOOM, GIFT-Eval, `evaluate_model`) can run it.

    predictor = TotoPredictor("Datadog/Toto-Open-Base-1.0", prediction_length=48)
    forecasts = list(predictor.predict(test_data.input))   # one SampleForecast per test entry

Entries are GluonTS data entries: `target` is 1-D (time) or 2-D (variates x time) with NaN for missing values,
`start` a `pd.Period`. Each entry's last `context_length` steps are forecast together with the other entries of
its batch (shorter histories are left-padded with NaN, which Toto treats as unobserved). Forecasts are GluonTS
`SampleForecast`s (`TotoSampleForecast`, which also carries the exact mean) with samples shaped (samples, time) or
(samples, time, variates), like the target.

Toto 1.0's API works too: `TotoPredictor.create_for_eval(model, prediction_length, context_length,
mode=Multivariate(batch_size=...), samples_per_batch=...)`, `predict(dataset, num_samples=..., use_kv_cache=...)` and
the `custom_stack_fn` of its data loader (see docs/architecture.md for the differences).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import numpy as np
import pandas as pd
import torch

try:
    import gluonts  # noqa: F401  (only to say which extra is missing)
except ImportError as error:
    from toto.extras import DISTRIBUTION, MissingExtraError

    raise MissingExtraError(
        f"toto.inference.gluonts_predictor (TotoPredictor) needs gluonts, from the 'boom' extra: "
        f"pip install '{DISTRIBUTION}[boom]' -c constraints.txt"
    ) from error
from gluonts.dataset import DataEntry
from gluonts.dataset.util import forecast_start
from gluonts.itertools import batcher
from gluonts.model.forecast import QuantileForecast, SampleForecast
from gluonts.model.predictor import Predictor
from gluonts.torch.batchify import batchify

from toto.data.util.dataset import MaskedTimeseries, stack_ragged
from toto.inference.streams import row_seeds
from toto.options import DEFAULT_QUANTILE_LEVELS
from toto.pipeline import ForecastPipeline, ModelLike
from toto.validation import check_batch_size, check_context_length, check_num_samples

FAMILY_DEFAULT: Final = "default"
"""`num_samples` left to the model family: DEFAULT_NUM_SAMPLES paths for Toto 1.0, none for Toto 2.0."""
SampleCount = int | Literal["default"] | None


def _interval_seconds(period: pd.Period) -> int:
    """Length of one step of `period`'s frequency; calendar frequencies (months) use the actual step."""
    return int(((period + 1).start_time - period.start_time).total_seconds())


@dataclass(frozen=True)
class Multivariate:
    """Toto 1.0's prediction mode: entries keep their variates together, `batch_size` entries per model batch."""

    code: ClassVar[str] = "M"
    batch_size: int = 16


class TotoSampleForecast(SampleForecast):
    """A SampleForecast whose mean is the model's (the samples' mean, or the decoded mean without samples)."""

    def __init__(self, samples: np.ndarray, mean: np.ndarray, start_date: pd.Period, item_id: str | None = None,
                 info: dict | None = None) -> None:
        super().__init__(samples, start_date, item_id, info)
        self._mean = mean


_NOT_GIVEN: Any = object()


class TotoPredictor(Predictor):
    """Forecast GluonTS entries with Toto (a loaded model, a checkpoint folder, an embedded name or a hub id).

    Args:
        model_or_checkpoint: a `Toto` or `Toto2Model`, a `ForecastPipeline`, or a checkpoint of either family.
        prediction_length: steps to forecast after each entry's target.
        context_length: most recent steps of history fed to the model (Toto 1.0 used 2048 on BOOM). None: the
            pipeline's (`ForecastPipeline.context_length`: the default context its folder's training_summary.json
            records), 2048 for a loaded model.
        num_samples: samples drawn per forecast; quantiles and sample-based metrics come from them. "default": the
            family's (DEFAULT_NUM_SAMPLES paths for Toto 1.0; a quantile model draws none). None makes mean
            forecasts (one "sample", the decoded mean), as Toto 1.0's `predict()` without num_samples.
        samples_per_batch: sample paths decoded together; lower it to save memory (None: the forecaster's
            default memory bound).
        batch_size: entries forecast together; entries with different variate counts never share a batch.
        seed: makes every entry's samples reproducible and independent of what else is in its batch;
            None draws fresh randomness.
        device: where to load a checkpoint (a given model stays where it is).
        quantile_levels: the levels of a quantile model's forecasts (default: its nine knots; others are
            interpolated, see `toto.pipeline`).

    A Toto 2.0 model, checkpoint or `ForecastPipeline` gives `QuantileForecast`s (its quantile levels and "mean",
    its median) instead of samples.
    """

    def __init__(
        self,
        model_or_checkpoint: ModelLike | ForecastPipeline,
        prediction_length: int,
        context_length: int | None = None,
        num_samples: SampleCount = FAMILY_DEFAULT,
        samples_per_batch: int | None = None,
        batch_size: int = 16,
        seed: int | None = 0,
        use_kv_cache: bool = True,
        device: str | torch.device = "cpu",
        quantile_levels: Sequence[float] | None = None,
    ) -> None:
        super().__init__(prediction_length=prediction_length)
        if isinstance(model_or_checkpoint, str | Path):
            self.pipeline = ForecastPipeline.from_pretrained(model_or_checkpoint, device=device)
        else:
            self.pipeline = ForecastPipeline.of(model_or_checkpoint)
        self.model = self.pipeline.model
        # The pipeline's context ensemble applies at its default context (ForecastPipeline.ensemble_for).
        self.context_ensemble = self.pipeline.ensemble_for(context_length)
        self.context_length = check_context_length(self.pipeline.context_length if context_length is None
                                                   else context_length)
        self.num_samples = _checked_count(num_samples)
        self.samples_per_batch = samples_per_batch
        self.batch_size = check_batch_size(batch_size)
        self.seed = seed
        self.use_kv_cache = use_kv_cache
        self.quantile_levels = tuple(quantile_levels or DEFAULT_QUANTILE_LEVELS)  # a quantile model's forecast keys
        self.mode = Multivariate(batch_size=batch_size)

    @property
    def device(self) -> torch.device:
        return self.pipeline.device

    @classmethod
    def create_for_eval(cls, model: torch.nn.Module, prediction_length: int, context_length: int,
                        mode: Multivariate = Multivariate(batch_size=1), samples_per_batch: int = 10) -> TotoPredictor:
        """Toto 1.0's constructor: mean forecasts unless `predict` is given num_samples."""
        return cls(model, prediction_length, context_length=context_length, num_samples=None,
                   samples_per_batch=samples_per_batch, batch_size=mode.batch_size)

    def predict(self, dataset: Iterable[DataEntry], num_samples: SampleCount = _NOT_GIVEN,
                use_kv_cache: bool | None = None, eval: bool = True, **kwargs: Any
                ) -> Iterator[TotoSampleForecast | QuantileForecast]:
        """One forecast per entry, in the order of `dataset`.

        `num_samples` and `use_kv_cache` override the predictor's settings for this call (Toto 1.0's signature);
        eval=False leaves the model's train/eval mode alone.
        """
        num_samples = self.num_samples if num_samples is _NOT_GIVEN else _checked_count(num_samples)
        use_kv_cache = self.use_kv_cache if use_kv_cache is None else use_kv_cache
        if eval:
            self.model.eval()
        index = 0  # position of the next entry in `dataset`: it selects the entry's random stream
        for batch in batcher(dataset, self.batch_size):
            # Consecutive entries with equal variate counts form one model batch.
            for _, group in itertools.groupby(batch, key=lambda entry: np.shape(entry["target"])[:-1]):
                entries = list(group)
                yield from self._predict_batch(entries, index, num_samples, use_kv_cache)
                index += len(entries)

    def custom_stack_fn(self, data: list[dict[str, Any]], device: torch.types.Device = None) -> dict[str, Any]:
        """Toto 1.0's stack function for a GluonTS InferenceDataLoader: GluonTS's `batchify`, and for entries of
        different lengths each array field right-padded with zeros to the longest (tensors stay lists)."""
        device = device or self.device
        ragged = any(len({np.shape(item[key]) for item in data}) > 1
                     for key in data[0] if isinstance(data[0][key], np.ndarray))
        if not ragged:
            return batchify(data, device=device)
        batch: dict[str, Any] = {}
        for key in data[0]:
            values = [item[key] for item in data]
            if isinstance(values[0], np.ndarray) and values[0].dtype in (np.float64, np.float32, np.float16):
                longest = np.max([v.shape for v in values], axis=0)
                padded = [np.pad(v, [(0, m - n) for n, m in zip(v.shape, longest)]) for v in values]
                batch[key] = torch.tensor(np.stack(padded), device=device)
            elif isinstance(values[0], (int, float, np.number)):
                batch[key] = torch.tensor(values, device=device)
            else:
                batch[key] = values
        return batch

    def _inputs(self, entries: list[DataEntry], starts: list[pd.Period]) -> MaskedTimeseries:
        """Stack the entries' recent history into (batch, variates, time), left-padding shorter ones with NaN."""
        return stack_ragged(
            [entry["target"] for entry in entries],
            context_length=self.context_length,
            time_interval_seconds=[_interval_seconds(start) for start in starts],
            end_timestamp_seconds=[int((start - 1).start_time.timestamp()) for start in starts],
        )

    def _predict_batch(self, entries: list[DataEntry], first_index: int, num_samples: SampleCount,
                       use_kv_cache: bool) -> Iterator[TotoSampleForecast | QuantileForecast]:
        starts = [forecast_start(entry) for entry in entries]
        seeds = None if self.seed is None else row_seeds(self.seed, len(entries), first=first_index)
        prediction = self.pipeline.predict(
            self._inputs(entries, starts), self.prediction_length, self.quantile_levels,
            num_samples=None if num_samples is None or num_samples == FAMILY_DEFAULT else num_samples,
            sample=num_samples is not None,
            seed=seeds, ensemble=self.context_ensemble is not None, paths_per_batch=self.samples_per_batch,
            use_kv_cache=use_kv_cache,
        )
        mean = prediction.mean.cpu().numpy()  # (batch, variates, time)
        if prediction.samples is None:  # a quantile model: its levels and "mean" (its median)
            arrays = np.concatenate([prediction.quantiles.cpu().numpy(), mean[None]])  # (keys, batch, var, time)
            keys = [str(level) for level in prediction.levels] + ["mean"]
            for row, (entry, start) in enumerate(zip(entries, starts)):
                row_arrays = arrays[:, row].transpose(0, 2, 1)  # (keys, time, variates)
                if np.ndim(entry["target"]) == 1:
                    row_arrays = row_arrays[..., 0]
                yield QuantileForecast(row_arrays, start_date=start, forecast_keys=keys, item_id=entry.get("item_id"))
            return
        samples = prediction.samples.cpu().numpy()  # (batch, variates, time, samples)
        for row, (entry, start) in enumerate(zip(entries, starts)):
            row_samples, row_mean = samples[row].transpose(2, 1, 0), mean[row].T  # (samples, time, variates)
            if np.ndim(entry["target"]) == 1:
                row_samples, row_mean = row_samples[..., 0], row_mean[..., 0]
            yield TotoSampleForecast(row_samples, row_mean, start_date=start, item_id=entry.get("item_id"))


def _checked_count(num_samples: SampleCount) -> SampleCount:
    return num_samples if num_samples in (FAMILY_DEFAULT, None) else check_num_samples(num_samples)
