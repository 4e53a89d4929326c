"""Fine-tune Toto 1.0 through the CLI, fully from a `save_pretrained` folder or with LoRA from the embedded model,
export, and forecast from the export."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

import json

import numpy as np
import torch
from safetensors.torch import load_file
from train_fixtures import (  # noqa: F401
    CONFIGS,
    TINY_MODEL,
    assert_only_adapters_moved,
    co2_frame,
    table_source,
    tiny_fit_args,
    write_co2_csv,
)

from toto.checkpoint_io import EMBEDDED_DIR
from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.model.config import TotoConfig
from toto.model.toto import Toto
from toto.validation import InputError
from train.cli import main, run_cli
from train.lora import LoraSettings, adapter_layers


def _mae(model: Toto, values: np.ndarray, context: int, horizon: int) -> float:
    """Mean absolute error of the mean forecast over several held-out windows at the end of the series."""
    errors = []
    for end in range(len(values) - horizon, len(values) - 6 * horizon, -horizon):
        inputs = MaskedTimeseries.from_series(values[None, end - context : end])
        forecast = TotoForecaster(model.model).forecast(inputs, horizon)
        errors.append(np.nanmean(np.abs(forecast.mean[0, 0].numpy() - values[end : end + horizon])))
    return float(np.mean(errors))


@pytest.mark.integration
def test_finetune_from_pretrained_folder_then_export_and_forecast(tmp_path):
    torch.manual_seed(0)
    base = Toto(TotoConfig(**TINY_MODEL)).save_pretrained(tmp_path / "base")
    sources = [table_source(write_co2_csv(tmp_path / "co2.csv"))]
    args = tiny_fit_args(tmp_path / "run", sources, steps=40, extra=["--model.pretrained", str(base)])
    cli = run_cli(args)
    assert cli.trainer.global_step == 40

    export = tmp_path / "run" / "export"
    assert json.loads((export / "config.json").read_text())["embed_dim"] == TINY_MODEL["embed_dim"]
    tuned = Toto.from_pretrained(export)
    original = Toto.from_pretrained(base)
    values = co2_frame()["co2"].to_numpy(np.float32)
    assert _mae(tuned, values, context=64, horizon=16) < _mae(original, values, context=64, horizon=16)

    # The `export` command gives the same weights as the automatic export of the best checkpoint.
    main(["export", str(tmp_path / "run"), "--output_dir", str(tmp_path / "again")])
    automatic, manual = load_file(export / "model.safetensors"), load_file(tmp_path / "again" / "model.safetensors")
    assert automatic.keys() == manual.keys()
    assert all(torch.equal(automatic[k], manual[k]) for k in automatic)
    changed = load_file(base / "model.safetensors")
    assert any(not torch.equal(changed[k], automatic[k]) for k in automatic), "fine-tuning changed the weights"


@pytest.mark.integration
def test_lora_finetune_of_toto_tiny_trains_only_adapters_and_its_merged_export_loads(tmp_path):
    """`--model.lora.r 8` on Toto 1.0 (the embedded toto-tiny, offline): only the adapters train, the base weights
    stay the checkpoint's, and the export is a plain checkpoint, adapters merged, that `Toto.from_pretrained` loads
    and that forecasts what the adapted model forecasts, not what the base model does."""
    base_folder = EMBEDDED_DIR / "toto-tiny"
    csv_path = write_co2_csv(tmp_path / "co2.csv")
    cli = run_cli([
        "fit", "--config", str(CONFIGS / "finetune.yaml"), "--model.pretrained", "toto-tiny", "--model.lora.r", "8",
        "--model.lr", "5e-3", "--model.warmup_steps", "1", "--model.stable_steps", "6", "--model.decay_steps", "1",
        "--data.sources.init_args.path", str(csv_path), "--data.context_length", "128", "--data.val_length", "32",
        "--data.batch_size", "8", "--data.num_workers", "0", "--data.train_windows_per_epoch", "512",
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "6",
        "--trainer.val_check_interval", "6", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ])
    assert cli.trainer.global_step == 6 and cli.model.lora == LoraSettings(r=8)
    adapted = cli.model.model.eval()
    layers = adapter_layers(adapted)
    assert len(layers) == 4 * adapted.config.num_layers  # wQKV, wO, mlp.0, mlp.2 of every layer

    # Only the adapters are trainable, and only they moved: the base weights are still the checkpoint's.
    trainable = [name for name, p in cli.model.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * len(layers) and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert_only_adapters_moved(adapted, base_folder / "model.safetensors")
    original = load_file(base_folder / "model.safetensors")

    # The export is a plain toto-tiny checkpoint (no adapter names), adapters merged.
    export = tmp_path / "run" / "export"
    assert load_file(export / "model.safetensors").keys() == original.keys()
    assert json.loads((export / "config.json").read_text()) == json.loads((base_folder / "config.json").read_text())
    merged = Toto.from_pretrained(export)
    values = co2_frame()["co2"].interpolate().to_numpy(np.float32)[-256:]
    inputs = MaskedTimeseries.from_series(values[None])

    def mean_forecast(model: torch.nn.Module) -> torch.Tensor:
        return TotoForecaster(model).forecast(inputs, 32).mean

    expected = mean_forecast(adapted.model)
    assert float((mean_forecast(merged.model) - expected).abs().max()) < 1e-5 * float(expected.abs().max())
    # ... and the adapters changed the forecast (by a third of the series' spread here), so the
    # comparison above could have failed.
    base = Toto.from_pretrained("toto-tiny")
    assert float((mean_forecast(base.model) - expected).abs().max()) > 0.05 * float(values.std())


def test_lora_settings_that_cannot_work_on_toto_1_are_refused():
    from train.module import TotoModule

    with pytest.raises(InputError, match="model.lora adapts pretrained weights.*set model.pretrained"):
        TotoModule(model_config=TINY_MODEL, lora=LoraSettings())
    with pytest.raises(InputError, match=r"unembed cannot take an adapter: Toto 1\.0's head reads its weight"):
        TotoModule(pretrained="toto-tiny", lora=LoraSettings(target_modules=["wO", "unembed"]))
    with pytest.raises(InputError, match=r"lora.target_modules \['in_proj'\] did not match .* 'wO', 'wQKV'"):
        TotoModule(pretrained="toto-tiny", lora=LoraSettings(target_modules=["in_proj"]))
