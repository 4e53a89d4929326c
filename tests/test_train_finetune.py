"""Fine-tune from a `save_pretrained` folder through the CLI, export, and forecast from the export."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

import json

import numpy as np
import torch
from safetensors.torch import load_file
from train_fixtures import (  # noqa: F401
    TINY_MODEL,
    co2_frame,
    table_source,
    tiny_fit_args,
    write_co2_csv,
)

from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.model.config import TotoConfig
from toto.model.toto import Toto
from train.cli import main, run_cli


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
