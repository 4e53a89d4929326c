"""Evaluate a forecaster on BOOM configurations, writing `<out>/<model>/all_results.csv` as it goes.

Each finished configuration is appended to the CSV at once, so an interrupted run resumes where it stopped:
configurations already in the file are skipped. The file has the columns of the published Toto results
(`dataset, model, checkpoint, context_length, num_samples`, the metric columns, `domain, num_variates`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from boom.data import Configuration, series_dataset
from boom.forecasters import Forecaster
from boom.metrics import COLUMNS, evaluate

log = logging.getLogger(__name__)

SETTINGS = ["checkpoint", "context_length", "num_samples"]
RESULT_COLUMNS = ["dataset", "model", *SETTINGS, *COLUMNS, "domain", "num_variates"]
RESULTS_FILE = "all_results.csv"


def evaluate_configuration(forecaster: Forecaster, data_dir: Path, config: Configuration) -> dict[str, object]:
    """One published results row: the forecaster's metrics over all windows and variates of `config`."""
    dataset = series_dataset(data_dir, config, to_univariate=not forecaster.multivariate)
    predictor = forecaster.build(dataset.prediction_length, dataset.freq)
    test_data = dataset.test_data
    metrics = evaluate(predictor.predict(test_data.input), test_data, dataset.seasonality)
    return {"dataset": config.key, "model": forecaster.name, "checkpoint": forecaster.checkpoint,
            "context_length": forecaster.context_length, "num_samples": forecaster.num_samples, **metrics,
            "domain": str(config.properties.get("domain", "")), "num_variates": dataset.target_dim}


def _settings_text(values: Iterable[object]) -> list[str]:
    return ["" if pd.isna(v) else str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
            for v in values]


def finished_configurations(results_file: Path, forecaster: Forecaster) -> set[str]:
    """Configurations already in `results_file`; refuses to mix results from different model settings."""
    if not results_file.exists():
        return set()
    done = pd.read_csv(results_file, dtype={"checkpoint": str})
    ours = _settings_text([forecaster.checkpoint, forecaster.context_length, forecaster.num_samples])
    for theirs in done[SETTINGS].drop_duplicates().itertuples(index=False):
        if _settings_text(theirs) != ours:
            raise ValueError(
                f"{results_file} holds results of {forecaster.name} with checkpoint/context/samples "
                f"{_settings_text(theirs)}, not {ours}. Use another --out folder or --name to keep both.")
    return set(done["dataset"])


def _append(results_file: Path, row: dict[str, object]) -> None:
    """Append one row (and the header for a new file), flushed so an interruption keeps it."""
    new = not results_file.exists()
    with open(results_file, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


@dataclass
class RunSummary:
    results_file: Path
    evaluated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run(forecaster: Forecaster, data_dir: Path, configs: list[Configuration], out_dir: Path,
        progress: bool = True) -> RunSummary:
    """Evaluate every configuration not yet in `<out_dir>/<forecaster.name>/all_results.csv`.

    A configuration that raises is logged and left out (a rerun retries it); the others go on.
    """
    results_file = Path(out_dir) / forecaster.name / RESULTS_FILE
    results_file.parent.mkdir(parents=True, exist_ok=True)
    done = finished_configurations(results_file, forecaster)
    summary = RunSummary(results_file, skipped=[c.key for c in configs if c.key in done])
    todo = [c for c in configs if c.key not in done]
    with tqdm(total=len(configs), initial=len(configs) - len(todo), desc=f"boom eval {forecaster.name}",
              unit="config", disable=not progress) as bar:
        for config in todo:
            bar.set_postfix_str(config.key)
            try:
                row = evaluate_configuration(forecaster, data_dir, config)
            except Exception as err:  # one bad series must not stop a benchmark of thousands
                log.warning("%s failed: %s: %s", config.key, type(err).__name__, err)
                summary.failed[config.key] = f"{type(err).__name__}: {err}"
                continue
            _append(results_file, row)
            summary.evaluated.append(config.key)
            bar.update()
    return summary
