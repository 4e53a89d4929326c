"""One forecasting interface over both families: `ForecastPipeline` behind predict_df, the CLI, the GluonTS
predictor and `boom eval`, with a real Toto 2.0 checkpoint (random weights, safetensors files). The service with
that checkpoint: tests/test_serve_api.py."""

import pytest
from partial_install import missing

pytest.importorskip("pandas", reason=missing("cli"))
pytest.importorskip("gluonts.torch", reason=missing("boom"))

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from gluonts.model.forecast import QuantileForecast, SampleForecast

from toto.api import InputError, predict_df
from toto.cli import main as toto_main
from toto.data.util.dataset import MaskedTimeseries
from toto.inference.gluonts_predictor import TotoPredictor
from toto.pipeline import ForecastPipeline, Toto1Pipeline, Toto2Pipeline
from toto.v2 import QUANTILE_KNOTS

V2 = Path(__file__).parent / "fixtures" / "toto2" / "gqa"
pytest_plugins = ["boom_fixtures"]


@pytest.fixture(scope="module")
def v2() -> ForecastPipeline:
    return ForecastPipeline.from_pretrained(V2, device="cpu")


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    """Two hosts' CPU and latency, 5-minute steps, with a daily cycle and a gap."""
    index = pd.date_range("2026-01-01", periods=400, freq="5min")
    t = np.arange(400)
    frames = []
    for host, level in (("web-1", 40.0), ("web-2", 70.0)):
        cpu = level + 10 * np.sin(2 * np.pi * t / 288)
        cpu[100:105] = np.nan
        frames.append(pd.DataFrame({"timestamp": index, "host": host, "cpu": cpu, "latency": cpu / 4 + 3,
                                    "deploy": (t % 97 < 3).astype(float)}))
    return pd.concat(frames, ignore_index=True)


def future_of(table: pd.DataFrame, steps: int, deploy: float) -> pd.DataFrame:
    last = table["timestamp"].max()
    index = pd.date_range(last, periods=steps + 1, freq="5min")[1:]
    return pd.concat([pd.DataFrame({"timestamp": index, "host": h, "deploy": deploy}) for h in ("web-1", "web-2")])


def test_from_pretrained_picks_the_family_from_config_json(v2, toto_tiny):
    assert isinstance(v2, Toto2Pipeline) and not v2.samples
    assert isinstance(toto_tiny, Toto1Pipeline)  # ForecastPipeline.from_pretrained("toto-tiny")


def test_the_default_context_is_the_one_the_model_was_trained_with(table, tmp_path, toto_tiny):
    """A folder whose training_summary.json records context_length gets it as the default of every entry point
    (default_context_length, when it names one); without one the default is 2048, and an explicit context_length
    wins."""
    assert ForecastPipeline.from_pretrained(V2, device="cpu").context_length == 2048
    folder = tmp_path / "trained-on-96"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((V2 / name).read_bytes())
    (folder / "training_summary.json").write_text('{"status": "trained", "context_length": 96}')
    pipeline = ForecastPipeline.from_pretrained(folder, device="cpu")
    assert pipeline.context_length == 96
    default = predict_df(table, 24, model=pipeline, id_column="host", target_columns=["cpu"])
    cropped = predict_df(table, 24, model=V2, id_column="host", target_columns=["cpu"], context_length=96)
    whole = predict_df(table, 24, model=pipeline, id_column="host", target_columns=["cpu"], context_length=400)
    pd.testing.assert_frame_equal(default, cropped)
    assert not np.allclose(default["median"], whole["median"])
    assert TotoPredictor(folder, 24).context_length == 96 and TotoPredictor(V2, 24).context_length == 2048
    assert TotoPredictor(pipeline, 24, context_length=400).context_length == 400
    (folder / "training_summary.json").write_text('{"context_length": 96, "default_context_length": 64}')
    assert ForecastPipeline.from_pretrained(folder, device="cpu").context_length == 64  # chosen on validation
    assert toto_tiny.context_length == 2048 and toto_tiny.context_ensemble == (128, 512, 2048)


def test_a_context_ensemble_applies_at_the_default_context_only(table, tmp_path):
    """A Toto 1.0 folder recording a context_ensemble pools its windows whenever the default context is read
    (predict_df, the GluonTS predictor); a context the caller chose reads exactly that many steps."""
    from toto.checkpoint_io import EMBEDDED_DIR

    folder = tmp_path / "ensemble"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((EMBEDDED_DIR / "toto-tiny" / name).read_bytes())
    (folder / "training_summary.json").write_text('{"context_length": 400, "default_context_length": 192, '
                                                  '"context_ensemble": [64, 192]}')
    pipeline = ForecastPipeline.from_pretrained(folder, device="cpu")
    assert pipeline.context_ensemble == (64, 192) and pipeline.context_length == 192
    single = Toto1Pipeline(pipeline.model, context_length=192)
    options = {"id_column": "host", "target_columns": ["cpu"], "num_samples": 32}
    pooled = predict_df(table, 24, model=pipeline, **options)
    pd.testing.assert_frame_equal(pooled, predict_df(table, 24, model=pipeline, context_length=192, **options))
    assert not np.allclose(pooled["median"], predict_df(table, 24, model=single, **options)["median"])
    pd.testing.assert_frame_equal(predict_df(table, 24, model=pipeline, context_length=64, **options),
                                  predict_df(table, 24, model=single, context_length=64, **options))
    assert TotoPredictor(pipeline, 24).context_ensemble == (64, 192)
    assert TotoPredictor(pipeline, 24, context_length=64).context_ensemble is None


def test_levels_between_knots_are_linear_and_outside_ones_take_the_edge_knot(v2):
    inputs = MaskedTimeseries.from_series(torch.randn(2, 3, 70).cumsum(-1))
    knots = v2.predict_quantiles(inputs, 12).quantiles
    with pytest.warns(UserWarning, match=r"\[0.05\] lie outside"):
        other = v2.predict_quantiles(inputs, 12, [0.05, 0.25, 0.5]).quantiles
    torch.testing.assert_close(other[0], knots[0])
    torch.testing.assert_close(other[1], (knots[1] + knots[2]) / 2)
    torch.testing.assert_close(other[2], knots[QUANTILE_KNOTS.index(0.5)])


def test_quantile_model_refuses_sample_paths(v2):
    inputs = MaskedTimeseries.from_series(torch.randn(1, 1, 40))
    with pytest.raises(ValueError, match="no sample paths"):
        v2.predict_samples(inputs, 8)
    with pytest.raises(ValueError, match="does not sample"):
        v2.predict_quantiles(inputs, 8, num_samples=16)


def test_predict_df_with_toto2_matches_the_model(v2, table):
    forecast = predict_df(table, 10, model=v2, quantiles=[0.1, 0.5, 0.9], target_columns=["cpu", "latency"])
    assert set(forecast["variate"]) == {"cpu", "latency"} and len(forecast) == 2 * 2 * 10
    np.testing.assert_allclose(forecast["mean"], forecast["median"])  # a quantile model's mean is its median
    rows = forecast[(forecast["host"] == "web-2") & (forecast["variate"] == "cpu")]
    series = table[table["host"] == "web-2"][["cpu", "latency"]].to_numpy().T
    direct = v2.model.forecast(
        {"target": torch.tensor(np.nan_to_num(series), dtype=torch.float32)[None],
         "target_mask": torch.tensor(~np.isnan(series))[None], "series_ids": torch.zeros(1, 2, dtype=torch.long)}, 10)
    np.testing.assert_allclose(rows["0.9"], direct[8, 0, 0].numpy(), rtol=1e-5)
    with pytest.raises(InputError, match="does not sample"):
        predict_df(table, 10, model=v2, num_samples=64)


def test_covariates_reach_toto2_forecasts_and_only_targets_come_back(v2, table):
    common = dict(model=v2, target_columns=["cpu"], exogenous_columns=["deploy"])
    quiet = predict_df(table, 12, future_df=future_of(table, 12, 0.0), **common)
    deploying = predict_df(table, 12, future_df=future_of(table, 12, 1.0), **common)
    assert set(quiet["variate"]) == {"cpu"}
    assert not np.allclose(quiet["median"], deploying["median"])
    with pytest.raises(InputError, match="lacks covariate values"):
        predict_df(table, 12, future_df=future_of(table, 6, 0.0), **common)


def test_toto_forecast_cli_with_a_toto2_checkpoint(table, tmp_path, capsys):
    table.to_csv(tmp_path / "metrics.csv", index=False)
    future_of(table, 8, 1.0).to_csv(tmp_path / "future.csv", index=False)
    out = tmp_path / "forecast.csv"
    code = toto_main(["forecast", str(tmp_path / "metrics.csv"), "-p", "8", "--checkpoint", str(V2), "-o", str(out),
                      "--target-columns", "cpu", "--exogenous-columns", "deploy", "--future",
                      str(tmp_path / "future.csv")])
    assert code == 0
    err = capsys.readouterr().err
    assert "Toto 2.0" in err and "quantiles in one pass" in err
    assert len(pd.read_csv(out)) == 2 * 8
    with pytest.raises(SystemExit) as stop:
        toto_main(["forecast", str(tmp_path / "metrics.csv"), "-p", "8", "--checkpoint", str(V2), "-n", "10"])
    assert stop.value.code == 2 and "does not sample" in capsys.readouterr().err


def test_gluonts_predictor_gives_quantile_forecasts_for_toto2(v2, table, toto_tiny):
    entries = [{"item_id": h, "start": pd.Period(rows["timestamp"].iloc[0], freq="5min"),
                "target": rows[["cpu", "latency"]].to_numpy().T} for h, rows in table.groupby("host", sort=False)]
    forecasts = list(TotoPredictor(V2, prediction_length=10).predict(entries))
    assert all(isinstance(f, QuantileForecast) for f in forecasts)
    ours = predict_df(table, 10, model=v2, target_columns=["cpu", "latency"])
    rows = ours[(ours["host"] == "web-1") & (ours["variate"] == "latency")]
    np.testing.assert_allclose(forecasts[0].quantile(0.5)[:, 1], rows["median"], rtol=1e-5)
    sampled = next(TotoPredictor(toto_tiny, prediction_length=4, num_samples=8).predict(entries[:1]))
    assert isinstance(sampled, SampleForecast)


def test_block_decoding_feeds_medians_back_and_is_refused_where_it_does_not_apply(v2):
    patch = v2.model.config.patch_size
    blocks = ForecastPipeline.from_pretrained(V2, device="cpu", decode_block_size=patch)
    series = torch.sin(torch.arange(300.0) / 7)[None, None]
    inputs = MaskedTimeseries.from_series(series.numpy())
    horizon = 3 * patch
    one_pass = v2.predict_quantiles(inputs, horizon, [0.5]).quantiles
    blocked = blocks.predict_quantiles(inputs, horizon, [0.5]).quantiles
    direct = v2.model.forecast(v2.model_inputs(inputs, None), horizon, decode_block_size=patch,
                               scaler_fallback_min_obs=v2.scaler_fallback_min_obs,
                               quantile_real_cap_k=v2.quantile_real_cap_k)
    np.testing.assert_allclose(blocked[0], direct[QUANTILE_KNOTS.index(0.5)], rtol=1e-5, atol=1e-6)
    first = (..., slice(0, patch))  # the first block is the single pass's first patch
    np.testing.assert_allclose(blocked[0][first], one_pass[0][first], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(blocked[0, ..., patch:], one_pass[0, ..., patch:])  # later ones read the medians
    with pytest.raises(ValueError, match=f"positive multiple of the patch size \\({patch}\\)"):
        ForecastPipeline.from_pretrained(V2, device="cpu", decode_block_size=patch + 1)
    with pytest.raises(ValueError, match="applies to Toto 2.0 checkpoints"):
        ForecastPipeline.from_pretrained("toto-tiny", device="cpu", decode_block_size=16)


def test_mean_feedback_reaches_every_entry_point_and_is_refused_for_toto2(table, tmp_path, capsys, toto_tiny):
    """`feedback="mean"` set on a Toto 1.0 pipeline (or `toto forecast --feedback mean`) applies to predict_df, the
    GluonTS predictor and the CLI alike; a Toto 2.0 model, which does not sample, refuses it."""
    sampled = toto_tiny
    given_mean = copy.copy(sampled)  # the same loaded model, its own options
    given_mean.feedback = "mean"
    assert (given_mean.feedback, sampled.feedback) == ("mean", "sample")
    options = {"id_column": "host", "target_columns": ["cpu"], "num_samples": 32, "context_length": 256}
    ours = predict_df(table, 40, model=given_mean, **options)
    theirs = predict_df(table, 40, model=sampled, **options)
    first_patch = ours.groupby("host").head(16).index
    np.testing.assert_allclose(ours.loc[first_patch, "median"], theirs.loc[first_patch, "median"], rtol=1e-5)
    assert not np.allclose(ours["median"], theirs["median"], rtol=1e-3)  # later patches read the mean

    entries = [{"item_id": h, "start": pd.Period(rows["timestamp"].iloc[0], freq="5min"),
                "target": rows["cpu"].to_numpy()} for h, rows in table.groupby("host", sort=False)]
    forecasts = [next(TotoPredictor(p, 40, context_length=256, num_samples=32).predict(entries)).samples
                 for p in (given_mean, sampled)]
    np.testing.assert_allclose(forecasts[0][:, :16], forecasts[1][:, :16], rtol=1e-5)
    assert not np.allclose(forecasts[0][:, 16:], forecasts[1][:, 16:], rtol=1e-3)

    table.to_csv(tmp_path / "metrics.csv", index=False)
    out = tmp_path / "forecast.csv"
    assert toto_main(["forecast", str(tmp_path / "metrics.csv"), "-p", "40", "--target-columns", "cpu", "-n", "32",
                      "--context-length", "256", "--feedback", "mean", "-o", str(out)]) == 0
    assert "32 sample paths (mean feedback)" in capsys.readouterr().err
    np.testing.assert_allclose(pd.read_csv(out)["median"], ours["median"], rtol=1e-5)

    with pytest.raises(ValueError, match="feedback applies to Toto 1.0 checkpoints"):
        ForecastPipeline.from_pretrained(V2, device="cpu", feedback="mean")
    with pytest.raises(SystemExit) as stop:
        toto_main(["forecast", str(tmp_path / "metrics.csv"), "-p", "8", "--checkpoint", str(V2), "--feedback", "mean"])
    assert stop.value.code == 2 and "--feedback mean: feedback applies to Toto 1.0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="feedback must be one of"):
        Toto1Pipeline(sampled.model, feedback="paths")
    with pytest.raises(ValueError, match="feedback applies to Toto 1.0 checkpoints"):
        Toto2Pipeline(ForecastPipeline.from_pretrained(V2, device="cpu").model).feedback = "mean"


def test_boom_eval_runs_a_toto2_checkpoint(boom_data, tmp_path, capsys):
    from boom.cli import main as boom_main

    out = tmp_path / "results"
    assert boom_main(["eval", "--model", "toto", "--checkpoint", str(V2), "--name", "toto2",
                      "--context-length", "256", "--data", str(boom_data), "--out", str(out)]) == 0
    results = pd.read_csv(out / "toto2" / "all_results.csv")
    assert results.filter(like="eval_metrics/").map(math.isfinite).all().all()


@pytest.mark.parametrize("family", ["toto-tiny", "toto2"])
def test_a_context_that_holds_one_value_is_forecast_as_that_value(family, v2, toto_tiny):
    """Both families, through predict_df: a constant target (to float32 precision, with a gap) gets a zero-width band
    at its value; a target that moves, however little, is the model's to forecast."""
    pipeline = toto_tiny if family == "toto-tiny" else v2
    index = pd.date_range("2026-01-01", periods=64, freq="5min")
    replicas = np.full(64, 7.0)
    replicas[10:14] = np.nan
    replicas[40] = 7.0000001  # a text round trip: the same value to float32
    wave = 50 + 10 * np.sin(np.arange(64) / 5)
    stepped = np.where(np.arange(64) < 60, 3.0, 3.5)
    table = pd.DataFrame({"timestamp": index, "zeros": 0.0, "replicas": replicas, "wave": wave, "stepped": stepped})
    forecast = predict_df(table, 8, model=pipeline, quantiles=[0.1, 0.5, 0.9])
    by = {name: rows for name, rows in forecast.groupby("variate")}
    for name, value in (("zeros", 0.0), ("replicas", 7.0)):
        for column in ("0.1", "0.5", "0.9", "mean"):
            np.testing.assert_array_equal(by[name][column], value)
    for name in ("wave", "stepped"):
        assert (by[name]["0.9"] - by[name]["0.1"] > 0).all(), f"{name} moved, so it is the model's to forecast"


def test_a_constant_context_samples_its_value_in_every_path(toto_tiny):
    series = torch.full((2, 1, 48), 5.0)
    series[1, 0, -1] = 5.5  # the second series moved at its last step
    inputs = MaskedTimeseries(series=series, padding_mask=torch.ones_like(series, dtype=torch.bool),
                              id_mask=torch.zeros_like(series), timestamp_seconds=torch.zeros_like(series),
                              time_interval_seconds=torch.ones(2, 1))
    prediction = toto_tiny.predict(inputs, 4, num_samples=16)
    assert prediction.samples is not None
    assert (prediction.samples[0] == 5.0).all() and (prediction.mean[0] == 5.0).all()
    assert prediction.samples[1].std() > 0


@pytest.mark.parametrize("family", ["toto-tiny", "toto2"])
def test_both_families_take_one_series_or_a_batch_and_refuse_other_shapes_alike(family, v2, toto_tiny):
    """The README's pipeline example passes one series (variates, time): both families read it as a batch of one, with
    or without covariates (Toto 2.0 raised an IndexError), and refuse a 1-D or an empty series with the same message
    (Toto 2.0 raised IndexError or ZeroDivisionError)."""
    pipeline = toto_tiny if family == "toto-tiny" else v2
    values = torch.randn(3, 200, generator=torch.Generator().manual_seed(0)).cumsum(-1)
    future = torch.randn(1, 16)
    for exogenous in (0, 1):
        one, batch = (
            pipeline.predict(MaskedTimeseries.from_series(series, num_exogenous_variables=exogenous), 16,
                             future_exogenous=(future if series.ndim == 2 else future[None]) if exogenous else None)
            for series in (values, values[None])
        )
        assert one.quantiles.shape == batch.quantiles.shape == (9, 1, 3 - exogenous, 16)
        torch.testing.assert_close(one.quantiles, batch.quantiles, rtol=0, atol=0)
    single = MaskedTimeseries.from_series(values[:1])
    flat = MaskedTimeseries(*(torch.as_tensor(field)[0] for field in single[:5]))  # one variate's (time,) values
    shapes = r"series must be \(variates, time\) or \(batch, variates, time\); got \(200,\)"
    with pytest.raises(InputError, match=shapes):
        pipeline.predict(flat, 16)
    for empty in (values[:, :0], values[:0], values[None, :, :0]):
        with pytest.raises(InputError, match=r"series is empty \(shape \(1, \d, 0\)|series is empty \(shape \(1, 0,"):
            pipeline.predict(MaskedTimeseries.from_series(empty), 16)
