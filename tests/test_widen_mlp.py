"""tools/widen_mlp.py: a Toto 1.0 checkpoint with wider SwiGLU MLPs forecasts exactly what the trained one does,
and its new units can learn; narrower widths and existing folders are refused."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from toto import MaskedTimeseries, Toto, TotoConfig, TotoForecaster

TOOL = Path(__file__).resolve().parents[1] / "tools" / "widen_mlp.py"


def _widen(source: Path, target: Path, width: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), str(source), str(target), "--mlp-hidden-dim", str(width)],
                          capture_output=True, text=True)


@pytest.mark.integration
def test_the_wider_model_computes_the_same_forecast_and_its_new_units_get_gradients(tmp_path):
    torch.manual_seed(0)
    config = TotoConfig.tiny()
    small = Toto(config)
    small.save_pretrained(tmp_path / "small")
    done = _widen(tmp_path / "small", tmp_path / "wide", 3 * config.mlp_hidden_dim)
    assert done.returncode == 0, done.stderr
    wide = Toto.from_pretrained(tmp_path / "wide")
    assert wide.model.config.mlp_hidden_dim == 3 * config.mlp_hidden_dim
    grown = load_file(tmp_path / "wide" / "model.safetensors")
    assert grown["model.transformer.layers.0.mlp.0.weight"].shape == (6 * config.mlp_hidden_dim, config.embed_dim)

    values = torch.sin(torch.arange(192.0) / 5).repeat(2, 2, 1) + torch.randn(2, 2, 192)  # (batch, variates, time)
    series = MaskedTimeseries.from_series(values)
    before = TotoForecaster(small.model).forecast(series, 40, num_samples=8, seed=3)
    after = TotoForecaster(wide.model).forecast(series, 40, num_samples=8, seed=3)
    torch.testing.assert_close(after.samples, before.samples, rtol=1e-4, atol=1e-4)

    # The new units add nothing yet, but a loss reaches them: their output columns get a gradient.
    wide.model.train()
    output = wide.model(values, torch.ones_like(values, dtype=torch.bool), torch.zeros_like(values, dtype=torch.int))
    output.distribution.mean.square().mean().backward()
    out = wide.model.transformer.layers[0].mlp[2].weight
    assert float(out.grad[:, config.mlp_hidden_dim:].abs().sum()) > 0


@pytest.mark.integration
def test_narrower_widths_and_existing_folders_are_refused(tmp_path):
    Toto(TotoConfig.tiny()).save_pretrained(tmp_path / "small")
    narrower = _widen(tmp_path / "small", tmp_path / "narrow", TotoConfig.tiny().mlp_hidden_dim)
    assert narrower.returncode != 0 and "must exceed" in narrower.stderr and not (tmp_path / "narrow").exists()
    (tmp_path / "taken").mkdir()
    taken = _widen(tmp_path / "small", tmp_path / "taken", 1024)
    assert taken.returncode != 0 and "exists" in taken.stderr
