"""Toto 1.0's fine-tuning benchmark helpers (`toto.scripts.benchmark_finetuning`) that its tutorial imports: configs,
task fields and datasets in the layout `finetune_toto.get_datamodule` reads."""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np

from .finetune_toto import load_config

__all__ = ["drop_nan_fn", "encode_categorical_fn", "get_config", "load_config", "parse_field", "prepare_dataset"]


def get_config(base_config: dict[str, Any], model_name: str, dataset_name: str, add_exogenous_features: bool,
               horizon: int | None) -> dict[str, Any]:
    """The run's config: `base_config` with the exogenous switch, the horizon, and log/checkpoint folders named
    after the dataset and the model variant."""
    config = deepcopy(base_config)
    config.setdefault("data", {}).update(add_exogenous_features=add_exogenous_features, prediction_horizon=horizon)
    config.setdefault("logging", {})["name"] = str(Path(dataset_name) / model_name)
    config.setdefault("checkpoint", {})["dirpath"] = str(Path("checkpoints") / dataset_name / model_name)
    return config


def drop_nan_fn(x: np.ndarray, encode_categorical: bool = True) -> np.ndarray:
    """Missing values as 0 (object arrays: None as a category), categories as integer codes."""
    if x.dtype == np.dtype("O"):
        x = np.array(["none" if v is None else v for v in x])
        return encode_categorical_fn(x) if encode_categorical else x
    return np.nan_to_num(x.astype(float), nan=0.0)


def encode_categorical_fn(x: np.ndarray) -> np.ndarray:
    return np.unique(x, return_inverse=True)[1]


def prepare_dataset(dataset_name: str, target_fields: list[str], ev_fields: list[str]) -> dict[str, Any]:
    """A dataset of `autogluon/fev_datasets` (Hugging Face Hub), or a `save_to_disk` folder, with one transform per
    field, as `finetune_toto.get_datamodule` expects."""
    import datasets

    if Path(dataset_name).is_dir():
        dataset = datasets.load_from_disk(dataset_name)
    else:
        dataset = datasets.load_dataset("autogluon/fev_datasets", dataset_name, split="train")
    dataset.set_format("numpy")
    return {
        "dataset_name": dataset_name,
        "dataset": dataset,
        "target_fields": target_fields,
        "target_transform_fns": [drop_nan_fn] * len(target_fields),
        "ev_fields": ev_fields,
        "ev_transform_fns": [drop_nan_fn] * len(ev_fields),
    }


def parse_field(task: dict[str, Any], field_name: str, default_value: Any = None) -> list | Any:
    """A task field as a list (a scalar becomes a one-element list); `default_value` when absent."""
    if field_name not in task:
        return default_value
    value = task[field_name]
    return value if isinstance(value, list) else [value]
