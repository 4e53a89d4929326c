"""Fine-tuning Toto 2.0 (`train.module_v2`): full and LoRA runs through the real CLI on a CSV, the exports, the
objective's agreement with `Toto2Model.forecast`, and known-future covariates."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

import json

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from train_fixtures import (
    CONFIGS,
    REPO,
    assert_only_adapters_moved,
    co2_frame,
    exogenous_frame,
    table_source,
    write_co2_csv,
)

from toto.v2 import Toto2Model
from train.cli import main, run_cli
from train.datamodule import TotoDataModule
from train.export import export_state
from train.lora import LoraSettings, adapter_layers
from train.module_v2 import Toto2Module
from train.sources import TableSource

BASE = REPO / "tests" / "fixtures" / "toto2" / "gqa"  # random weights: patch 8, d_model 32, grouped-query heads
CONTEXT, HORIZON = 64, 16
STEPS_TO_LEARN_COVARIATE = 200


def v2_fit_args(run_dir, sources: list[dict], *, steps: int, extra: list[str] = ()) -> list[str]:
    """`fit` arguments for the shipped finetune-v2 config, shrunk to a few CPU seconds on the gqa fixture."""
    return [
        "fit", "--config", str(CONFIGS / "finetune-v2.yaml"),
        "--model.pretrained", str(BASE), "--model.horizon_length", str(HORIZON),
        "--model.lr", "3e-3", "--model.warmup_steps", "2", "--model.stable_steps", str(steps),
        "--model.decay_steps", "2",
        "--data.sources", json.dumps(sources), "--data.context_length", str(CONTEXT),
        "--data.val_length", str(HORIZON), "--data.batch_size", "8", "--data.num_workers", "0",
        "--trainer.default_root_dir", str(run_dir), "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", str(steps), "--trainer.enable_model_summary", "false",
        "--trainer.enable_progress_bar", "false", "--history.every_n_steps", "10",
        *extra,
    ]


def forecast_inputs(values: np.ndarray, covariates: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """`Toto2Model.forecast` inputs for one univariate series; covariates (k, context + horizon) are known_dynamic."""
    target = torch.as_tensor(values, dtype=torch.float32).reshape(1, 1, -1)
    inputs = {"target": target, "target_mask": torch.ones_like(target, dtype=torch.bool),
              "series_ids": torch.zeros(1, 1, dtype=torch.long)}
    if covariates is not None:
        known = torch.as_tensor(covariates, dtype=torch.float32)[None]
        inputs |= {"known_dynamic": known, "known_dynamic_mask": torch.ones_like(known, dtype=torch.bool),
                   "known_dynamic_series_ids": torch.zeros(known.shape[:2], dtype=torch.long)}
    return inputs


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.integration
def test_full_finetune_through_the_cli_lowers_the_loss_and_exports(tmp_path):
    sources = [table_source(write_co2_csv(tmp_path / "co2.csv"))]
    cli = run_cli(v2_fit_args(tmp_path / "run", sources, steps=20))
    assert isinstance(cli.model, Toto2Module) and cli.model.lora is None
    assert cli.trainer.global_step == 20
    # The data follows the model: windows of context + horizon, covariates aligned.
    assert (cli.datamodule.horizon_length, cli.datamodule.shift_exogenous) == (HORIZON, False)

    # The tuned weights score the held-back ends better than the starting ones.
    batch = next(iter(cli.datamodule.val_dataloader()))
    with torch.no_grad():
        tuned = cli.model.batch_loss(batch).item()
        base = Toto2Module(pretrained=str(BASE), horizon_length=HORIZON).batch_loss(batch).item()
    assert np.isfinite(tuned) and tuned < base, (tuned, base)

    export = tmp_path / "run" / "export"
    assert json.loads((export / "config.json").read_text()) == json.loads((BASE / "config.json").read_text())
    exported, original = load_file(export / "model.safetensors"), load_file(BASE / "model.safetensors")
    assert exported.keys() == original.keys()
    assert sum(not torch.equal(exported[k], original[k]) for k in exported) > len(exported) // 2

    model = Toto2Model.from_pretrained(export)
    values = co2_frame()["co2"].interpolate().to_numpy(np.float32)[-CONTEXT:]
    quantiles = model.forecast(forecast_inputs(values), 24)
    assert quantiles.shape == (9, 1, 1, 24) and quantiles.isfinite().all()
    assert (quantiles.diff(dim=0) >= 0).all()
    assert abs(float(quantiles[4].mean()) - float(values[-8:].mean())) < 20  # near the series' level (~370)

    # `toto-train export` of the run writes the same weights as the automatic export.
    main(["export", str(tmp_path / "run"), "--output_dir", str(tmp_path / "again")])
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert all(torch.equal(again[k], exported[k]) for k in exported)


@pytest.mark.integration
def test_lora_trains_only_adapters_and_its_merged_export_forecasts_like_the_adapted_model(tmp_path):
    co2_frame().to_parquet(tmp_path / "co2.parquet")
    sources = [table_source(tmp_path / "co2.parquet")]
    cli = run_cli(v2_fit_args(tmp_path / "run", sources, steps=15, extra=["--model.lora.r", "4"]))
    assert cli.model.lora == LoraSettings(r=4)
    adapted = cli.model.model.eval()
    layers = adapter_layers(adapted)
    assert len(layers) == 4 * adapted.config.num_layers  # in_proj, out_proj, fc1, fc2 of every layer

    # Only the adapters moved: every base weight is still the checkpoint's, and every B left zero.
    assert_only_adapters_moved(adapted, BASE / "model.safetensors")
    original = load_file(BASE / "model.safetensors")

    # The export is a plain checkpoint (no adapter names) that forecasts what the adapted model forecasts.
    export = tmp_path / "run" / "export"
    assert load_file(export / "model.safetensors").keys() == original.keys()
    merged = Toto2Model.from_pretrained(export)
    values = co2_frame()["co2"].interpolate().to_numpy(np.float32)[-CONTEXT:]
    inputs = forecast_inputs(values)
    expected = adapted.forecast(inputs, 24)
    assert relative_difference(merged.forecast(inputs, 24), expected) < 1e-5
    # ... and the adapters changed the forecast, so the comparison above could have failed.
    assert relative_difference(Toto2Model.from_pretrained(BASE).forecast(inputs, 24), expected) > 1e-4


def test_lora_merge_keeps_the_function_of_unit_scaled_layers(tmp_path):
    """peft adds B A x outside ScaledLinear's output multiplier; merging must divide by it (peft's own merge would
    not), for every kind of layer: attention, feed-forward, patch embedding and quantile head. The export goes
    through the module's checkpoint contents, as the export callback does without a checkpoint file."""
    torch.manual_seed(0)
    targets = ["in_proj", "fc2", "patch_proj.linear1", "output_head.param_projection.proj.skip_proj"]
    module = Toto2Module(pretrained=str(BASE), lora=LoraSettings(r=2, target_modules=targets), horizon_length=HORIZON)
    assert {name.split(".")[-1] for name in adapter_layers(module.model)} == {"in_proj", "fc2", "linear1", "skip_proj"}
    for layer in adapter_layers(module.model).values():
        torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.3)
    inputs = forecast_inputs(np.sin(np.arange(CONTEXT) / 5).astype(np.float32))
    adapted = module.model.eval().forecast(inputs, HORIZON)
    assert relative_difference(Toto2Model.from_pretrained(BASE).forecast(inputs, HORIZON), adapted) > 1e-2

    state = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(state)
    merged = Toto2Model.from_pretrained(export_state(state, tmp_path / "export"))
    assert relative_difference(merged.forecast(inputs, HORIZON), adapted) < 1e-5


def _covariate_data(tmp_path, frame) -> TotoDataModule:
    frame.to_csv(tmp_path / "events.csv", index=False)
    source = TableSource(str(tmp_path / "events.csv"), target_columns=["requests"], exogenous_columns=["event"])
    data = TotoDataModule([source], context_length=CONTEXT, patch_size=8, val_length=HORIZON, batch_size=16,
                          horizon_length=HORIZON, shift_exogenous=False)
    data.setup()
    return data


def test_objective_scores_what_forecast_predicts_with_covariates(tmp_path):
    data = _covariate_data(tmp_path, exogenous_frame())
    batch = next(iter(data.train_dataloader()))
    assert batch.series.shape[1:] == (2, CONTEXT + HORIZON) and batch.num_exogenous_variables == 1
    assert not batch.loss_mask[:, 1].any()  # covariates are never scored
    # Aligned, not shifted: requests (= 10 + 5 * event) follow the event at the same step.
    both = batch.padding_mask.all(1)
    assert torch.corrcoef(torch.stack([batch.series[:, 0][both], batch.series[:, 1][both]]))[0, 1] > 0.95

    module = Toto2Module(pretrained=str(BASE), horizon_length=HORIZON)
    pred = module.predict_batch(batch)
    assert pred.knots.shape == (9, *batch.loss_mask.shape) and int(pred.in_horizon.sum()) == HORIZON

    # The horizon's knots, mapped back and sorted, are the forecast from the context with the known covariates.
    rows = torch.nonzero(batch.padding_mask.all(-1).all(-1)).flatten()  # windows without left padding
    assert len(rows) > 0
    for row in rows[:4].tolist():
        real = pred.knots[:, row, 0, pred.in_horizon].sinh() * pred.scale[row, 0, pred.in_horizon]
        real = (real + pred.loc[row, 0, pred.in_horizon]).sort(dim=0).values
        inputs = forecast_inputs(batch.series[row, 0, :CONTEXT].numpy(), batch.series[row, 1:].numpy())
        forecast = module.model.forecast(inputs, HORIZON)[:, 0, 0]
        assert relative_difference(real, forecast) < 1e-5

    # The horizon's targets are hidden from the model; the covariates over the horizon are not.
    hidden = batch._replace(series=batch.series.clone())
    hidden.series[:, 0, -HORIZON:] += 1000.0
    assert torch.equal(module.predict_batch(hidden).knots, pred.knots)
    future = batch._replace(series=batch.series.clone())
    future.series[:, 1, -HORIZON:] = 1.0 - future.series[:, 1, -HORIZON:]
    changed = module.predict_batch(future).knots
    assert not torch.allclose(changed[..., pred.in_horizon], pred.knots[..., pred.in_horizon])
    assert torch.equal(changed[..., : CONTEXT - 8], pred.knots[..., : CONTEXT - 8])  # causal: the context is not


def leading_indicator_frame(length: int = 1200, seed: int = 0) -> pd.DataFrame:
    """requests = 10 + 5 * (the event one patch earlier) + noise: a known-future covariate that leads its effect.

    Toto 2.0's output at patch i predicts patch i + 1 and sees every row up to patch i, so a covariate informs
    the forecast of the patch after it; here that is all the target needs.
    """
    frame = exogenous_frame(length, seed)
    lagged = np.concatenate([np.zeros(8), frame["event"].to_numpy()[:-8]])
    noise = np.random.default_rng(seed + 100).normal(0, 0.3, length)
    return frame.assign(requests=10 + 5 * lagged + noise)


@pytest.mark.integration
def test_covariates_learned_in_fine_tuning_steer_the_forecast(tmp_path):
    leading_indicator_frame().to_csv(tmp_path / "events.csv", index=False)
    sources = [table_source(tmp_path / "events.csv", target_columns=["requests"], exogenous_columns=["event"])]
    cli = run_cli(v2_fit_args(tmp_path / "run", sources, steps=STEPS_TO_LEARN_COVARIATE))
    assert cli.datamodule.num_exogenous_variables == 1
    model = Toto2Model.from_pretrained(tmp_path / "run" / "export")

    history = leading_indicator_frame(seed=1).iloc[-CONTEXT:]  # an unseen series
    medians = {}
    for level in (0.0, 1.0):
        covariate = np.concatenate([history["event"].to_numpy(), np.full(HORIZON, level)])[None]
        medians[level] = model.forecast(forecast_inputs(history["requests"].to_numpy(), covariate), HORIZON)[4, 0, 0]
    # The future event reaches the horizon from its second patch on, where its true effect is +5.
    effect = (medians[1.0] - medians[0.0])[8:]
    assert effect.mean() > 2.0, effect


def test_shipped_config_parses_with_lora_from_the_command_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "finetune-v2.yaml"), "--model.lora.r", "8", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    for text in ["class_path: train.module_v2.Toto2Module", "pretrained: Datadog/Toto-2.0-22m", "r: 8",
                 "target_modules: null", "horizon_length: 128", "exogenous_columns: []"]:
        assert text in printed, text


def test_bad_settings_get_clear_errors():
    with pytest.raises(ValueError, match="multiple of the model's patch_size"):
        Toto2Module(pretrained=str(BASE), horizon_length=12)
    with pytest.raises(ValueError, match="did not match the model's linear layers"):
        Toto2Module(pretrained=str(BASE), lora=LoraSettings(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="model.pretrained"):
        Toto2Module()
