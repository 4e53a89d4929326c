"""tools/upscale_depth.py: a deeper Toto 1.0 checkpoint whose layer groups repeat the trained ones, space-wise layers
in their places, loadable and forecasting; an existing folder is never overwritten."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from toto import MaskedTimeseries, Toto, TotoConfig, TotoForecaster
from toto.model.transformer import layer_axes

TOOL = Path(__file__).resolve().parents[1] / "tools" / "upscale_depth.py"


@pytest.mark.integration
def test_each_layer_group_is_repeated_in_place(tmp_path):
    torch.manual_seed(0)
    config = TotoConfig.tiny(num_layers=6, spacewise_every_n_layers=3)
    Toto(config).save_pretrained(tmp_path / "small")
    done = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "small"), str(tmp_path / "deep")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    deep = Toto.from_pretrained(tmp_path / "deep")
    assert deep.model.config.num_layers == 12
    small = load_file(tmp_path / "small" / "model.safetensors")
    grown = load_file(tmp_path / "deep" / "model.safetensors")
    key = "model.transformer.layers.{}.attention.wQKV.weight"
    small_axes, deep_axes = layer_axes(6, 3, config.spacewise_first), layer_axes(12, 3, config.spacewise_first)
    for old, new in ((0, 0), (0, 3), (2, 5), (3, 6), (4, 10)):  # group 0 -> groups 0 and 1, group 1 -> groups 2, 3
        assert torch.equal(small[key.format(old)], grown[key.format(new)])
        assert small_axes[old] == deep_axes[new]  # a space-wise layer lands where the deep model attends space-wise
    assert not torch.equal(small[key.format(0)], small[key.format(1)])
    forecast = TotoForecaster(deep.model).forecast(MaskedTimeseries.from_series(torch.randn(2, 64)), 16,
                                                   num_samples=4, seed=0)
    assert bool(torch.isfinite(forecast.samples).all())
    again = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "small"), str(tmp_path / "deep")],
                           capture_output=True, text=True)
    assert again.returncode != 0 and "exists" in again.stderr
