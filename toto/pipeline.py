"""One typed forecasting interface over both model families, in the shape of Chronos' pipelines: the one way any
entry point runs a model.

    from toto.pipeline import ForecastPipeline
    pipeline = ForecastPipeline.from_pretrained("toto-tiny")         # or "Datadog/Toto-2.0-22m", a folder
    prediction = pipeline.predict(inputs, prediction_length=48)    # inputs: a MaskedTimeseries
    prediction.quantiles  # (levels, batch, variates, horizon);  prediction.mean: (batch, variates, horizon)
    prediction.samples    # (batch, variates, horizon, samples), None for a quantile model
    table = pipeline.predict_df(df, prediction_length=48)

`from_pretrained` reads the checkpoint's config.json and picks the family: Toto 1.0 (`embed_dim`; a Student-T
mixture, forecast by sampling paths) or Toto 2.0 (`d_model`; nine quantile knots in one forward pass). The pandas
API, `toto forecast`, batch forecasting, the GluonTS predictor, the service and `boom eval` all forecast through
`predict`, so both families behave the same wherever they are used, and nothing outside this module asks which
family it holds: what differs (sampling, the cost of a forecast, which options apply) is a method here.

Quantile levels. Toto 1.0 takes any level from its samples. Toto 2.0 predicts the knots 0.1, 0.2, ..., 0.9; a
level between two knots is interpolated linearly between them, and a level below 0.1 or above 0.9 gets the edge
knot (with a warning: the model says nothing beyond it). Toto 2.0 has no sample paths: asking for them is an
InputError, and its "mean" is the median knot.

Inputs. Values are a `MaskedTimeseries` (NaN or padding_mask=False = missing). Its last `num_exogenous_variables`
variates are known-future covariates aligned with the targets; their values over the horizon come in
`future_exogenous` (batch, covariates, horizon). Each family lays them out as it was trained: Toto 1.0 through
its forecaster, Toto 2.0 as `known_dynamic` rows spanning context and horizon. Only the targets are returned.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor

from toto.checkpoint_io import read_config, read_training_summary, resolve
from toto.data.util.dataset import MaskedTimeseries
from toto.inference.cancel import Cancellation, raise_if_cancelled
from toto.inference.constant_context import held_values
from toto.inference.forecaster import Forecast, TotoForecaster
from toto.inference.memory import DEFAULT_MEMORY_BUDGET_BYTES, ForecastPlan, plan_forecast, plan_quantile_pass
from toto.inference.streams import row_seeds
from toto.model.toto import Toto
from toto.options import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_MODEL,
    DEFAULT_NUM_SAMPLES,
    DEFAULT_QUANTILE_LEVELS,
    FEEDBACK,
    Feedback,
)
from toto.v2 import QUANTILE_KNOTS, Toto2Model
from toto.validation import (
    InputError,
    check_batch_size,
    check_context_length,
    check_num_samples,
    check_prediction_length,
    check_quantile_levels,
)

if TYPE_CHECKING:
    import pandas as pd

    from toto.anomaly.detector import Detection, DetectionSettings
    from toto.anomaly.distributions import ValueDistributions
    from toto.anomaly.passes import PassPlan, Windows
    from toto.inference.next_value import ValueStream
    from toto.tables import Panel, PlacedSeries, Placement

ModelLike = str | Path | torch.nn.Module
"""What the entry points accept as a model: a checkpoint name, folder or Hub id, a loaded model of either family
(or a pipeline, `ForecastPipeline.of`)."""


class Prediction(NamedTuple):
    """Forecasts of the target variates only, float32."""

    levels: tuple[float, ...]  # the quantile levels, ascending
    quantiles: Tensor  # (levels, batch, variates, horizon)
    mean: Tensor  # (batch, variates, horizon); the median for quantile models
    samples: Tensor | None = None  # (batch, variates, horizon, samples) of a sampling model; None for quantile models

    def quantile(self, level: float) -> Tensor:
        """(batch, variates, horizon): the forecast at one of `levels`."""
        return self.quantiles[self.levels.index(float(level))]


class ForecastPipeline(abc.ABC):
    """A loaded model and how to forecast with it. Build one with `ForecastPipeline.from_pretrained`."""

    family: ClassVar[str]
    samples: ClassVar[bool]  # whether the model forecasts by sampling paths
    model: Toto | Toto2Model

    def __init__(self, model: Toto | Toto2Model, context_length: int = DEFAULT_CONTEXT_LENGTH,
                 context_ensemble: Sequence[int] | None = None) -> None:
        """`context_length`: the history the entry points feed the model unless told otherwise.
        `context_ensemble`: context lengths whose windows a sampling model's forecast from that default history
        pools (`toto.inference.context_ensemble`), or None for one window."""
        self.model = model.eval()
        self.context_length = context_length
        self.context_ensemble = None if context_ensemble is None else tuple(int(c) for c in context_ensemble)
        self._feedback: Feedback = "sample"

    @property
    def feedback(self) -> Feedback:
        """What a sample path's next patch is decoded from (`toto.options.Feedback`): "sample" unless set. Setting
        it checks the value, and that the model samples at all."""
        return self._feedback

    @feedback.setter
    def feedback(self, value: Feedback) -> None:
        self.check_options(feedback=value)
        self._feedback = value

    def ensemble_for(self, context_length: int | None) -> tuple[int, ...] | None:
        """The context ensemble a forecast from the last `context_length` steps pools: the model's own at its
        default context (`context_length` None or equal to it); one window at any other context the caller
        chose, so that `--context-length 512` reads exactly 512 steps."""
        return self.context_ensemble if context_length in (None, self.context_length) else None

    @staticmethod
    def from_pretrained(
        name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None,
        dtype: torch.dtype | None = None, decode_block_size: int | None = None, feedback: Feedback | None = None,
        context_ensemble: Sequence[int] | None = None, **hub_kwargs: object,
    ) -> ForecastPipeline:
        """Load an embedded model name, a local folder or a Hub repo id of either family.

        `device` defaults to the GPU when there is one. `dtype=torch.bfloat16` runs the weights and matmuls in
        bf16; scaling and outputs stay float32. The pipeline's `context_length` is the default its folder records
        (`default_context_length`: the context the model was trained with, or the one its validation chose, as
        the embedded models record; a model trained on 512 steps forecasts worse from 2048, whose later positions
        it never saw), else 2048. A Toto 1.0 folder may also record a `context_ensemble` (the embedded
        toto-tiny does): forecasts from the default context then pool sample paths drawn from windows of those
        lengths. `context_ensemble` replaces the folder's (Toto 1.0 only); the default context is then its longest
        window.
        `decode_block_size` (Toto 2.0 only, a multiple of its patch size) decodes the horizon that many steps at a
        time, feeding each block's median back as data; by default the whole horizon is one pass, as in the
        official wrapper. `feedback` (Toto 1.0 only) is what a sample path's next patch is decoded from: its own
        draws ("sample", the default, as Toto 1.0) or the mean forecast ("mean", `toto.options.Feedback`).
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        folder = resolve(name_or_path, **hub_kwargs)  # type: ignore[arg-type]
        config = read_config(folder)
        context_length = default_context_length(folder)
        pipeline: ForecastPipeline
        if "d_model" in config:
            if context_ensemble is not None:
                raise InputError(f"context_ensemble applies to sampling (Toto 1.0) models; {name_or_path} is a "
                                 "Toto 2.0 quantile model: leave it out", "context_ensemble")
            quantile_model = Toto2Model.from_pretrained(folder, map_location=device)
            pipeline = Toto2Pipeline(quantile_model, decode_block_size, context_length=context_length)
        else:
            if decode_block_size is not None:
                raise InputError(f"decode_block_size applies to Toto 2.0 checkpoints; {name_or_path} is a Toto 1.0 "
                                 "model, which decodes patch by patch already: leave decode_block_size out",
                                 "decode_block_size")
            sampling_model = Toto.from_pretrained(folder, map_location=device)
            ensemble = read_training_summary(folder).get("context_ensemble")
            if context_ensemble is not None:
                ensemble, context_length = tuple(context_ensemble), max(context_ensemble)
            pipeline = Toto1Pipeline(sampling_model, context_length=context_length, context_ensemble=ensemble)
        pipeline.model.name_or_path = str(name_or_path)
        if feedback is not None:
            pipeline.feedback = feedback
        if dtype is not None:
            pipeline.model.to(dtype)
        return pipeline

    @classmethod
    def of(cls, model: ModelLike | ForecastPipeline) -> ForecastPipeline:
        """A pipeline for a name or path, a loaded model of either family, or a pipeline (returned as is).

        Any other module is taken for a Toto 1.0 model (a `torch.compile`d `Toto`, say): its `.model` is the
        backbone the forecaster drives."""
        if isinstance(model, ForecastPipeline):
            return model
        if isinstance(model, Toto2Model):
            return Toto2Pipeline(model)
        if isinstance(model, torch.nn.Module):
            return Toto1Pipeline(cast(Toto, model))  # a Toto, or a module standing for one
        return cls.from_pretrained(model)

    @property
    def patch_size(self) -> int:
        return self.model.config.patch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def name(self) -> str:
        return self.model.name_or_path or self.family

    # ----- the one forecasting call -----

    def predict(
        self,
        inputs: MaskedTimeseries,
        prediction_length: int,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        *,
        future_exogenous: Tensor | None = None,
        num_samples: int | None = None,
        seed: int | Sequence[int] | None = 0,
        ensemble: bool = True,
        sample: bool = True,
        feedback: Feedback | None = None,
        cancel: Cancellation | None = None,
        memory_budget_bytes: int | None = None,
        paths_per_batch: int | None = None,
        use_kv_cache: bool = True,
    ) -> Prediction:
        """Quantiles, mean and (for a sampling model) sample paths of the next `prediction_length` steps of every
        target variate.

        `num_samples` and `seed` (one, or one per series) apply to sampling models: None uses the family's default
        (`sample_count`), and a quantile model refuses a number. `sample=False` decodes the distribution's mean
        instead of drawing paths (Toto 1.0's mean forecasts: `samples` is that one path and every quantile equals
        it). `ensemble=False` reads `inputs` as one window even when the model has a `context_ensemble`.
        `feedback` replaces the pipeline's for this forecast (a quantile model takes only "sample").
        `cancel` is checked between decoding steps (ForecastCancelled). `memory_budget_bytes` bounds the
        forecast's working memory (weights not counted; `plan`): sample paths are decoded in chunks that fit it,
        at most `paths_per_batch` at a time, and a forecast that cannot fit raises MemoryBudgetExceeded.
        `use_kv_cache=False` re-runs each path's whole series at every step (Toto 1.0's option; slower, same
        distribution); a quantile model decodes in one pass either way.
        """
        prediction_length = check_prediction_length(prediction_length)
        levels = check_quantile_levels(quantile_levels)
        inputs = _batched(inputs)
        _check_future_exogenous(inputs, future_exogenous, prediction_length)
        feedback = self.feedback if feedback is None else feedback
        self.check_options(feedback=feedback)
        count = self.sample_count(num_samples)
        raise_if_cancelled(cancel)
        prediction = self._predict(inputs, prediction_length, levels, future_exogenous, count, seed, ensemble, sample,
                                   feedback, cancel, memory_budget_bytes or DEFAULT_MEMORY_BUDGET_BYTES,
                                   paths_per_batch, use_kv_cache)
        return _hold_constant_targets(prediction, inputs)

    def predict_quantiles(self, inputs: MaskedTimeseries, prediction_length: int,
                          quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
                          future_exogenous: Tensor | None = None, num_samples: int | None = None,
                          seed: int | Sequence[int] | None = 0, ensemble: bool = True) -> Prediction:
        """`predict`, in the name Chronos' pipelines give it."""
        return self.predict(inputs, prediction_length, quantile_levels, future_exogenous=future_exogenous,
                            num_samples=num_samples, seed=seed, ensemble=ensemble)

    def predict_samples(
        self, inputs: MaskedTimeseries, prediction_length: int, num_samples: int = DEFAULT_NUM_SAMPLES,
        future_exogenous: Tensor | None = None, seed: int | Sequence[int] | None = 0, ensemble: bool = True,
    ) -> Tensor:
        """(batch, variates, horizon, samples) sample paths; only for sampling models."""
        if not self.samples:
            raise InputError(
                f"{self.name} is a {self.family} quantile model: it forecasts quantiles in one pass and has no sample "
                "paths. Ask for quantiles (predict, or leave out num_samples / return_samples).", "return_samples"
            )
        prediction = self.predict(inputs, prediction_length, future_exogenous=future_exogenous,
                                  num_samples=num_samples, seed=seed, ensemble=ensemble)
        assert prediction.samples is not None  # a sampling model's prediction holds them
        return prediction.samples

    @abc.abstractmethod
    def _predict(self, inputs: MaskedTimeseries, prediction_length: int, levels: tuple[float, ...],
                 future_exogenous: Tensor | None, num_samples: int | None, seed: int | Sequence[int] | None,
                 ensemble: bool, sample: bool, feedback: Feedback, cancel: Cancellation | None,
                 memory_budget_bytes: int, paths_per_batch: int | None, use_kv_cache: bool) -> Prediction:
        """`predict` once its settings are checked."""

    # ----- what differs between the families -----

    @abc.abstractmethod
    def sample_count(self, num_samples: int | None) -> int | None:
        """The sample paths a forecast asked for `num_samples` draws: the default (DEFAULT_NUM_SAMPLES) for None
        with a sampling model; None for a quantile model, which refuses a number."""

    @abc.abstractmethod
    def plan(self, batch: int, variates: int, context_length: int, prediction_length: int,
             num_samples: int | None = None, num_levels: int = len(DEFAULT_QUANTILE_LEVELS),
             memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES, paths_per_batch: int | None = None,
             use_kv_cache: bool = True) -> ForecastPlan:
        """The working memory of a forecast of this shape under `memory_budget_bytes` (`toto.inference.memory`):
        its peak and how many sample paths are decoded together. Raises MemoryBudgetExceeded when it can never fit.
        `num_samples` as `predict` takes it (None: the family's default)."""

    def check_options(self, *, return_samples: bool = False, feedback: Feedback = "sample",
                      num_samples: int | None = None) -> None:
        """Refuse options this model cannot honour, with an InputError naming the field: sample paths back or a
        feedback other than "sample" from a quantile model, a number of samples it would not draw."""
        if feedback not in FEEDBACK:
            raise InputError(f"feedback must be one of {', '.join(map(repr, FEEDBACK))}, got {feedback!r}", "feedback")
        if return_samples and not self.samples:
            raise InputError(f"{self.family} is a quantile model: it forecasts quantiles in one pass and has no "
                             "sample paths to return; set return_samples to false", "return_samples")
        if feedback != "sample" and not self.samples:
            raise InputError(f"feedback applies to Toto 1.0 checkpoints, which sample; {self.name} is a {self.family} "
                             "quantile model: it forecasts quantiles in one pass and feeds back no samples; leave "
                             "feedback out (decode_block_size feeds back its median)", "feedback")
        self.sample_count(num_samples)

    @abc.abstractmethod
    def describe(self, num_samples: int | None, context_length: int | None) -> str:
        """How a forecast with these settings is made, in a few words for a summary line."""

    # ----- anomaly detection -----

    def detect(self, values: np.ndarray, interval_seconds: np.ndarray | float = 1.0,
               settings: DetectionSettings | None = None) -> Detection:
        """Score every observed value of (batch, variates, time) `values` (NaN = missing) by how surprising it was
        under the distribution this model predicted for it from its past (`toto.anomaly.detector`; `settings`
        default to `DetectionSettings()`). Series b is sampled every `interval_seconds[b]` (an alert budget per day
        needs it)."""
        from toto.anomaly.detector import DetectionSettings, detect  # scipy: imported on first detection

        settings = settings or DetectionSettings()
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 3 or values.shape[-1] == 0:
            raise InputError(f"values must be (batch, variates, time) with some time steps, got {values.shape}")
        distributions = self.value_distributions(values, settings.steps_ahead)
        intervals = np.broadcast_to(np.asarray(interval_seconds, dtype=np.float64), values.shape[:1])
        return detect(values, distributions, intervals, settings)[0]

    def detect_df(self, df: pd.DataFrame, **options: Any) -> pd.DataFrame:
        """`detect_table`'s table: every row of `df` scored, in the same order (`options`: detect_table's)."""
        return self.detect_table(df, **options)[0]

    def detect_table(
        self,
        df: pd.DataFrame,
        timestamp_column: str | None = None,
        id_column: str | None = None,
        target_columns: Sequence[str] | None = None,
        freq: str | None = None,
        settings: DetectionSettings | None = None,
        progress: bool = False,
    ) -> tuple[pd.DataFrame, Placement]:
        """Score every row of a wide or long table by how surprising its values were (`detect`), and say how its
        rows were placed on a grid (`toto.tables.place_rows`: irregular timestamps, gaps, repeated or off-grid rows
        and a clock that moves back are all scored; each row gets its own score under the distribution the model
        predicted for its grid step).

        Returns `df`'s rows in their order and columns, plus, for a single target column: `anomaly_score` (in
        [0, 1], higher is more anomalous; NaN where the value is missing or the series' first patch), `is_anomaly`
        (at the alert budget), and the band `lower`, `upper` and `median` of the predictive distribution. With
        several target columns, `anomaly_score` and `is_anomaly` combine them (one per row), and each target gets
        `<column>_anomaly_score`, `<column>_is_anomaly`, `<column>_lower`, `<column>_upper` and `<column>_median`.
        """
        import pandas as pd
        from tqdm.auto import tqdm

        from toto import tables
        from toto.anomaly.detector import DetectionSettings, detect

        settings = settings or DetectionSettings()
        placement = tables.place_rows(df, timestamp_column, id_column, target_columns, freq)
        values = placement.columns.values
        rows, variates = values.shape
        per_variate = {name: np.full((rows, variates), np.nan) for name in ("anomaly_score", "lower", "upper",
                                                                             "median")}
        flagged = np.zeros((rows, variates), dtype=bool)
        combined, combined_flag = np.full(rows, np.nan), np.zeros(rows, dtype=bool)
        # Series of one grid length run their passes as one batch (the passes depend on the length only).
        by_length: dict[int, list[PlacedSeries]] = {}
        for placed in placement.series:
            by_length.setdefault(placed.grid.values.shape[1], []).append(placed)
        with tqdm(total=len(placement.series), desc="scoring", unit="series", disable=not progress) as bar:
            for group in by_length.values():
                grids = np.stack([placed.grid.values for placed in group])
                distributions = self.value_distributions(grids, settings.steps_ahead)
                for b, placed in enumerate(group):
                    row_values = values.to_numpy()[placed.rows].T[None]  # (1, variates, rows), by time
                    detection, _ = detect(row_values, distributions.take_series(b).take(placed.slot_of_row),
                                          np.array([placed.grid.interval_seconds]), settings, steps=placed.slot_of_row)
                    for name in per_variate:
                        per_variate[name][placed.rows] = getattr(detection, name)[0].T
                    flagged[placed.rows] = detection.is_anomaly[0].T
                    combined[placed.rows] = detection.combined_score[0]
                    combined_flag[placed.rows] = detection.is_anomaly_combined[0]
                    bar.update()
        out = placement.columns.frame.copy()
        if variates == 1:
            out["anomaly_score"], out["is_anomaly"] = per_variate["anomaly_score"][:, 0], flagged[:, 0]
            for name in ("lower", "upper", "median"):
                out[name] = per_variate[name][:, 0]
            return out, placement
        out["anomaly_score"], out["is_anomaly"] = combined, combined_flag
        columns = {f"{variate}_{name}": per_variate[name][:, v] for v, variate in enumerate(values.columns)
                   for name in ("anomaly_score", "lower", "upper", "median")}
        columns |= {f"{variate}_is_anomaly": flagged[:, v] for v, variate in enumerate(values.columns)}
        return pd.concat([out, pd.DataFrame(columns, index=out.index)], axis=1), placement

    def value_distributions(self, values: np.ndarray, steps_ahead: int | None = None) -> ValueDistributions:
        """The distribution the model predicted for each of (batch, variates, time) `values` (NaN = missing) from
        the values before it: causal passes over windows of the model's context (`scoring_windows`)."""
        from toto.anomaly.passes import plan_passes

        return self.value_distributions_of(values, plan_passes(values.shape[-1], self.scoring_windows(steps_ahead)))

    def detection_cost_bytes(self, values: int, variates: int, steps_ahead: int | None = None) -> int:
        """An upper estimate of the working memory that scoring `values` steps of `variates` variates takes: every
        pass's outputs at each step (passes overlap by a quarter of the window), and the distributions and scores
        kept per value (float64)."""
        windows = self.scoring_windows(steps_ahead)
        passes = len(windows.offsets) * windows.window / windows.stride
        per_value = passes * (self.outputs_per_step + 2) * 4 + 3 * (self.outputs_per_step + 16) * 8
        return int(values * variates * per_value)

    @property
    @abc.abstractmethod
    def outputs_per_step(self) -> int:
        """The numbers the model's head gives per predicted value (what a scoring pass keeps)."""

    def scoring_windows(self, steps_ahead: int | None = None) -> Windows:
        """The passes that score values (`toto.anomaly.passes.Windows`): windows of the model's context, each value
        after at least a quarter of it where the series has it, and at most `steps_ahead` steps past its context
        (None: half the patch size; `toto.anomaly.detector.DetectionSettings.steps_ahead` says why)."""
        from toto.anomaly.passes import Windows

        patch = self.patch_size
        window = max(self.context_length // patch, 4) * patch
        ahead = max(1, patch // 2) if steps_ahead is None else steps_ahead
        return Windows(patch, window, window // 4 // patch * patch, ahead)

    @abc.abstractmethod
    def _value_distributions(self, values: np.ndarray, plan: PassPlan) -> ValueDistributions:
        """The family's causal passes (`toto.inference.next_value`)."""

    def open_value_stream(self, variates: int, steps_ahead: int | None = None) -> ValueStream:
        """A series of `variates` variates scored as its values arrive (`toto.inference.next_value.ValueStream`):
        the distributions `value_distributions` gives, one push at a time, at a cost bounded by the window."""
        from toto.inference.next_value import RecomputedStream

        windows = self.scoring_windows(steps_ahead)
        return RecomputedStream(lambda values, plan: self.value_distributions_of(values, plan), windows, variates)

    def value_distributions_of(self, values: np.ndarray, plan: PassPlan) -> ValueDistributions:
        """`value_distributions` along a given plan of passes."""
        with torch.inference_mode():
            return self._value_distributions(values, plan)

    # ----- tables -----

    def predict_df(
        self,
        df: pd.DataFrame,
        prediction_length: int,
        quantiles: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        num_samples: int | None = None,
        timestamp_column: str | None = None,
        id_column: str | None = None,
        target_columns: Sequence[str] | None = None,
        freq: str | None = None,
        context_length: int | None = None,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = False,
        exogenous_columns: Sequence[str] = (),
        future_df: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Forecast the next `prediction_length` steps of every series in a wide or long DataFrame.

        The input may be wide (a timestamp column and one numeric column per variate) or long (an id column as
        well, one series per id, each numeric column a variate of that series); `toto.tables` reads it (the same
        rules as training and evaluation): it finds the timestamp and id columns unless named, and puts each series
        on a regular time grid, missing values and gaps becoming NaN, which the model treats as unobserved.

        Returns one row per (series, target variate, future timestamp) with columns: the id column (long input
        only), "variate" (the target column's name), the timestamp column, "mean", "median" and one column per
        quantile level named like "0.1". A sampling model (Toto 1.0) uses `num_samples` paths (default
        DEFAULT_NUM_SAMPLES) and a fixed `seed`, so results are reproducible; a quantile model (Toto 2.0) forecasts
        its knots in one pass, interpolates other levels, takes no `num_samples`, and its "mean" is the median.

        Known-future covariates: name them in `exogenous_columns` (columns of `df`) and give their values over the
        horizon in `future_df`, a table of the same layout (timestamp and id columns) holding those columns at the
        next `prediction_length` timestamps of every series.
        """
        from toto import tables  # pandas is an extra (cli, boom, serve): imported when a table is read

        exogenous = list(exogenous_columns)
        if exogenous and future_df is None:
            raise InputError(f"exogenous_columns {exogenous} need future_df: their values at the forecast timestamps")
        panel = tables.to_panel(df, timestamp_column, id_column, tables.columns_to_read(target_columns, exogenous),
                                freq)
        future = None
        if exogenous:
            assert future_df is not None  # checked above
            future = tables.to_panel(future_df, panel.timestamp_column, panel.id_column, exogenous,
                                     freq or panel.series[0].index.freqstr)
        return self.predict_panel(panel, prediction_length, quantiles, num_samples, context_length, batch_size, seed,
                                  progress, exogenous, future)

    def predict_panel(
        self,
        panel: Panel,
        prediction_length: int,
        quantiles: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        num_samples: int | None = None,
        context_length: int | None = None,
        batch_size: int = 16,
        seed: int = 0,
        progress: bool = False,
        exogenous_columns: Sequence[str] = (),
        future: Panel | None = None,
        series_index: Sequence[int] | None = None,
    ) -> pd.DataFrame:
        """`predict_df` on a table already read (`toto.tables.to_panel`); returns the same tidy table.

        Series are forecast `batch_size` at a time; with a sampling model, series i samples from its own stream
        `row_seeds(seed, ...)[series_index[i]]` (see `toto.inference.streams.row_seeds`; `series_index` defaults
        to 0, 1, ...: a shard of a larger panel passes its series' positions in the whole), whatever the batching.
        `context_length` (most recent steps read per series) defaults to the model's.
        """
        import pandas as pd
        from tqdm.auto import tqdm

        from toto import tables

        ensemble = self.ensemble_for(context_length) is not None
        context_length = check_context_length(self.context_length if context_length is None else context_length)
        batch_size = check_batch_size(batch_size)
        names = [str(float(q)) for q in check_quantile_levels(quantiles)]  # column names as the user wrote them
        levels = sorted({float(q) for q in names} | {0.5})  # the median column is always there
        exogenous = list(exogenous_columns)
        futures = tables.future_covariates(panel, future, exogenous, prediction_length)
        positions = list(range(len(panel.series))) if series_index is None else list(series_index)
        starts = range(0, len(panel.series), batch_size)
        frames = []
        for start in tqdm(starts, desc="forecasting", unit="batch", disable=not progress or len(starts) < 2):
            batch = panel.series[start : start + batch_size]
            prediction = self.predict(
                tables.panel_inputs(batch, context_length, exogenous), prediction_length, levels,
                future_exogenous=torch.tensor(np.stack(futures[start : start + batch_size])) if exogenous else None,
                num_samples=num_samples,
                seed=[row_seeds(seed, 1, first=i)[0] for i in positions[start : start + len(batch)]],
                ensemble=ensemble,
            )
            columns = {"mean": prediction.mean, "median": prediction.quantile(0.5)}
            columns |= {name: prediction.quantile(float(name)) for name in names}
            arrays = {name: value.cpu().numpy() for name, value in columns.items()}
            frames += tables.forecast_rows(panel, batch, arrays, prediction_length, exogenous)
        return pd.concat(frames, ignore_index=True)


class Toto1Pipeline(ForecastPipeline):
    family = "Toto 1.0"
    samples = True
    model: Toto

    def __init__(self, model: Toto, context_length: int = DEFAULT_CONTEXT_LENGTH,
                 context_ensemble: Sequence[int] | None = None, feedback: Feedback = "sample") -> None:
        """`model`: a `Toto` (or a module standing for one, whose `.model` is the backbone). `feedback`: what each
        sample path's next patch is decoded from (`toto.options.Feedback`)."""
        super().__init__(model, context_length, context_ensemble)
        self.feedback = feedback

    def sample_count(self, num_samples: int | None) -> int | None:
        return DEFAULT_NUM_SAMPLES if num_samples is None else check_num_samples(num_samples)

    def plan(self, batch: int, variates: int, context_length: int, prediction_length: int,
             num_samples: int | None = None, num_levels: int = len(DEFAULT_QUANTILE_LEVELS),
             memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES, paths_per_batch: int | None = None,
             use_kv_cache: bool = True) -> ForecastPlan:
        element_size = next(self.model.parameters()).element_size()
        return plan_forecast(self.model.config, batch, variates, context_length, prediction_length,
                             self.sample_count(num_samples), memory_budget_bytes, paths_per_batch, use_kv_cache,
                             element_size)

    def describe(self, num_samples: int | None, context_length: int | None) -> str:
        paths = f"{self.sample_count(num_samples)} sample paths"
        if self.feedback == "mean":
            paths += " (mean feedback)"
        if ensemble := self.ensemble_for(context_length):
            windows = [str(c) for c in ensemble]
            return f"{paths} pooled from windows of {', '.join(windows[:-1])} and {windows[-1]} steps"
        return paths

    def _value_distributions(self, values: np.ndarray, plan: PassPlan) -> ValueDistributions:
        from toto.inference.next_value import student_t_mixtures

        return student_t_mixtures(self.model.model, values, plan)

    @property
    def outputs_per_step(self) -> int:
        return sum(linear.out_features for linear in self.model.model.output_distribution.projections())

    def open_value_stream(self, variates: int, steps_ahead: int | None = None) -> ValueStream:
        """Toto 1.0 keeps each pass as a KV cache that every new patch extends by one token."""
        from toto.inference.next_value import CachedStudentTStream

        return CachedStudentTStream(self.model.model, self.scoring_windows(steps_ahead), variates)

    def _predict(self, inputs: MaskedTimeseries, prediction_length: int, levels: tuple[float, ...],
                 future_exogenous: Tensor | None, num_samples: int | None, seed: int | Sequence[int] | None,
                 ensemble: bool, sample: bool, feedback: Feedback, cancel: Cancellation | None,
                 memory_budget_bytes: int, paths_per_batch: int | None, use_kv_cache: bool) -> Prediction:
        forecaster = TotoForecaster(self.model.model, memory_budget_bytes)
        device = self.device
        with torch.inference_mode():
            forecast = forecaster.forecast(
                inputs.to(device), prediction_length, num_samples=num_samples if sample else None,
                samples_per_batch=paths_per_batch, use_kv_cache=use_kv_cache,
                future_exogenous_variables=None if future_exogenous is None else future_exogenous.to(device),
                seed=seed, exogenous_layout="aligned", cancel=cancel,
                context_ensemble=self.context_ensemble if ensemble else None, feedback=feedback,
            )
            targets = inputs.series.shape[-2] - inputs.num_exogenous_variables
            mean = forecast.mean.float()[:, :targets]
            paths = mean[..., None] if forecast.samples is None else forecast.samples.float()[:, :targets]
            quantiles = Forecast(mean=mean, samples=paths).quantile(list(levels))  # one sort for every level
        # Clones outside inference mode are ordinary tensors, usable in autograd by callers.
        return Prediction(levels, quantiles.clone(), mean.clone(), paths.clone())


class Toto2Pipeline(ForecastPipeline):
    family = "Toto 2.0"
    samples = False
    model: Toto2Model

    def __init__(
        self, model: Toto2Model, decode_block_size: int | None = None, scaler_fallback_min_obs: int = 8,
        quantile_real_cap_k: float = 1e4, context_length: int = DEFAULT_CONTEXT_LENGTH,
    ) -> None:
        """The defaults are those of the official GluonTS wrapper (`Toto2GluonTSModelConfig`), which produced
        the published BOOM results: the whole horizon in one pass, leading patches with fewer than 8 observations
        scaled by the first 8, and quantiles clipped to the context's range widened by 10,000 scales."""
        super().__init__(model, context_length)
        patch = model.config.patch_size
        if decode_block_size is not None and (decode_block_size <= 0 or decode_block_size % patch):
            raise InputError(f"decode_block_size must be a positive multiple of the patch size ({patch}), not "
                             f"{decode_block_size}: e.g. {patch} feeds back the median of every patch",
                             "decode_block_size")
        self.decode_block_size = decode_block_size  # None: the whole horizon in one forward pass
        self.scaler_fallback_min_obs = scaler_fallback_min_obs
        self.quantile_real_cap_k = quantile_real_cap_k

    def sample_count(self, num_samples: int | None) -> int | None:
        if num_samples is not None:
            raise InputError(f"{self.name} is a {self.family} quantile model and does not sample: leave num_samples "
                             "out (--num-samples)", "num_samples")
        return None

    def plan(self, batch: int, variates: int, context_length: int, prediction_length: int,
             num_samples: int | None = None, num_levels: int = len(DEFAULT_QUANTILE_LEVELS),
             memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES, paths_per_batch: int | None = None,
             use_kv_cache: bool = True) -> ForecastPlan:
        self.sample_count(num_samples)
        return plan_quantile_pass(self.model.config, batch, variates, context_length, prediction_length, num_levels,
                                  memory_budget_bytes)

    def describe(self, num_samples: int | None, context_length: int | None) -> str:
        return "quantiles in one pass"

    @property
    def outputs_per_step(self) -> int:
        return len(QUANTILE_KNOTS)

    def _value_distributions(self, values: np.ndarray, plan: PassPlan) -> ValueDistributions:
        from toto.inference.next_value import quantile_knots

        return quantile_knots(self.model, values, plan)

    def _predict(self, inputs: MaskedTimeseries, prediction_length: int, levels: tuple[float, ...],
                 future_exogenous: Tensor | None, num_samples: int | None, seed: int | Sequence[int] | None,
                 ensemble: bool, sample: bool, feedback: Feedback, cancel: Cancellation | None,
                 memory_budget_bytes: int, paths_per_batch: int | None, use_kv_cache: bool) -> Prediction:
        batch, variates, context = inputs.series.shape  # batched by predict
        self.plan(batch, variates, context, prediction_length, num_levels=len(levels),
                  memory_budget_bytes=memory_budget_bytes)
        with torch.inference_mode():
            knots = self.model.forecast(
                self.model_inputs(inputs, future_exogenous), prediction_length,
                decode_block_size=self.decode_block_size, scaler_fallback_min_obs=self.scaler_fallback_min_obs,
                quantile_real_cap_k=self.quantile_real_cap_k,
            )
        knots = knots.clone()  # an ordinary tensor again, outside inference mode
        return Prediction(levels, interpolate_quantiles(knots, levels), knots[QUANTILE_KNOTS.index(0.5)])

    def model_inputs(self, inputs: MaskedTimeseries, future_exogenous: Tensor | None) -> dict[str, Tensor]:
        """`Toto2Model.forecast`'s dict: NaN becomes unobserved, covariates become `known_dynamic` rows.

        Unobserved values are forward-filled (0 before the first observation), as the official GluonTS wrapper
        does: the model ignores them, except in the context's last patch, which it always reads as observed.
        A single series (variates, time) is read as a batch of one.
        """
        device = self.device
        inputs = inputs.batched()
        series = torch.as_tensor(inputs.series).to(device)
        padding_mask = torch.as_tensor(inputs.padding_mask).to(device)
        id_mask = torch.as_tensor(inputs.id_mask).to(device)
        observed = padding_mask.bool() & series.isfinite()
        values = forward_fill(series.float(), observed)
        series_ids = id_mask.expand(series.shape)[..., -1].long()
        targets = values.shape[-2] - inputs.num_exogenous_variables
        model_inputs = {
            "target": values[:, :targets],
            "target_mask": observed[:, :targets],
            "series_ids": series_ids[:, :targets],
        }
        if inputs.num_exogenous_variables:
            assert future_exogenous is not None  # predict checked it
            future = future_exogenous.to(device).float()
            future = future if future.ndim == 3 else future[None]
            known = torch.cat([values[:, targets:], future], dim=-1)
            known_mask = torch.cat([observed[:, targets:], future.isfinite()], dim=-1)
            model_inputs |= {
                "known_dynamic": forward_fill(known, known_mask),
                "known_dynamic_mask": known_mask,
                "known_dynamic_series_ids": series_ids[:, targets:],
            }
        return model_inputs


def default_context_length(folder: Path) -> int:
    """The history every entry point feeds a checkpoint's model unless told otherwise, from its
    `training_summary.json`: `default_context_length` when the folder names one (the context its validation scores
    were best at, which `tools/ship_embedded_model.py --contexts` chooses), else `context_length` (the longest
    context it was trained with: positions beyond it were never seen), else 2048."""
    summary = read_training_summary(folder)
    return int(summary.get("default_context_length", summary.get("context_length", DEFAULT_CONTEXT_LENGTH)))


def forward_fill(values: Tensor, observed: Tensor) -> Tensor:
    """(..., time): each unobserved value replaced by the last observed one before it, 0 before the first."""
    steps = torch.arange(values.shape[-1], device=values.device).expand_as(values)
    last = torch.where(observed, steps, -1).cummax(dim=-1).values
    filled = values.gather(-1, last.clamp_min(0))
    return torch.where(last >= 0, filled, 0.0)


def _hold_constant_targets(prediction: Prediction, inputs: MaskedTimeseries) -> Prediction:
    """`prediction` with each target whose context holds one value forecast as that value
    (`toto.inference.constant_context`: why, and what counts as one value)."""
    targets = inputs.series.shape[-2] - inputs.num_exogenous_variables
    holds, last = held_values(inputs.series[..., :targets, :], inputs.padding_mask[..., :targets, :])
    if not bool(holds.any()):
        return prediction
    shape = prediction.mean.shape[:-1] + (1,)  # (batch, targets, 1)
    holds, last = holds.to(prediction.mean.device).reshape(shape), last.to(prediction.mean.device).reshape(shape)
    held = last.to(prediction.mean.dtype)
    samples = prediction.samples
    if samples is not None:  # (batch, targets, horizon, samples)
        samples = torch.where(holds.unsqueeze(-1), held.unsqueeze(-1), samples)
    return prediction._replace(quantiles=torch.where(holds, held, prediction.quantiles),
                               mean=torch.where(holds, held, prediction.mean), samples=samples)


def interpolate_quantiles(knots: Tensor, levels: Sequence[float]) -> Tensor:
    """(9, ...) knot quantiles -> (len(levels), ...): linear between knots, the edge knot outside [0.1, 0.9]."""
    outside = [q for q in levels if not QUANTILE_KNOTS[0] <= q <= QUANTILE_KNOTS[-1]]
    if outside:
        warnings.warn(
            f"quantile levels {outside} lie outside the model's knots {QUANTILE_KNOTS[0]}..{QUANTILE_KNOTS[-1]}; "
            "they get the nearest edge knot", stacklevel=4,
        )
    grid = torch.tensor(QUANTILE_KNOTS, dtype=torch.float64)
    wanted = torch.tensor(levels, dtype=torch.float64).clamp(grid[0], grid[-1])
    upper = torch.searchsorted(grid, wanted).clamp(1, len(grid) - 1)
    lower = upper - 1
    weight = ((wanted - grid[lower]) / (grid[upper] - grid[lower])).to(knots.dtype).to(knots.device)
    shape = (-1,) + (1,) * (knots.dim() - 1)
    return knots[lower] + (knots[upper] - knots[lower]) * weight.view(shape)


def _batched(inputs: MaskedTimeseries) -> MaskedTimeseries:
    """`inputs` with a batch dimension, its shape checked here so that both families take the same shapes (one series
    (variates, time) or a batch of them) and refuse any other with the same message, before either model reads it."""
    inputs = inputs.batched()
    shape = tuple(torch.as_tensor(inputs.series).shape)
    if len(shape) != 3:
        raise InputError(f"series must be (variates, time) or (batch, variates, time); got {shape}")
    if 0 in shape:
        raise InputError(f"series is empty (shape {shape}): give at least one series, one variate and one step")
    return inputs


def _check_future_exogenous(inputs: MaskedTimeseries, future_exogenous: Tensor | None, prediction_length: int) -> None:
    k = inputs.num_exogenous_variables
    if (future_exogenous is None) != (k == 0):
        raise InputError(
            f"the inputs have {k} exogenous variate(s) but future_exogenous is "
            f"{'missing' if future_exogenous is None else 'given'}: pass their values over the horizon, "
            "(batch, covariates, prediction_length), exactly when there are exogenous variates"
        )
    if future_exogenous is not None and tuple(future_exogenous.shape[-2:]) != (k, prediction_length):
        raise InputError(
            f"future_exogenous must have shape (batch, {k}, {prediction_length}), got {tuple(future_exogenous.shape)}"
        )
