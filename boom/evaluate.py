"""Evaluate a forecaster on BOOM configurations, writing `<out>/<model>/all_results.csv` as it goes.

Each finished configuration is appended to the CSV at once, so an interrupted run resumes where it stopped:
configurations already in the file are skipped. The file has the columns of the published Toto results
(`dataset, model, checkpoint, context_length, num_samples`, the metric columns, `domain, num_variates`).

`run_sharded` deals the configurations to several processes (Lightning Fabric, `toto.batch.launch`). Each rank
appends its rows to its own part, `<out>/<model>/all_results.parts/rank-NNN.csv`; at the end rank 0 merges the
parts into `all_results.csv` (rows in the configurations' order, after those the file already held) and removes
them. An interrupted sharded run resumes, with any number of processes, from the file and the parts it left.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pandas as pd
from tqdm.auto import tqdm

from boom.data import Configuration, TablePanel, series_dataset
from boom.forecasters import Forecaster
from boom.metrics import COLUMNS, evaluate
from toto.validation import NonFiniteForecastWarning

log = logging.getLogger(__name__)

SETTINGS = ["checkpoint", "context_length", "num_samples"]
RESULT_COLUMNS = ["dataset", "model", *SETTINGS, *COLUMNS, "domain", "num_variates"]
RESULTS_FILE = "all_results.csv"
PARTS_FOLDER = "all_results.parts"  # next to RESULTS_FILE while a sharded run is unfinished


def evaluate_configuration(forecaster: Forecaster, data_dir: Path | TablePanel,
                           config: Configuration) -> dict[str, object]:
    """One published results row: the forecaster's metrics over all windows and variates of `config`.

    A model that produces NaN or infinite values fails the configuration: Toto 1.0's forecaster replaces them by 0
    (its contract) and warns (`NonFiniteForecastWarning`), which is raised here as an error, so that a broken model
    is not scored on zeros."""
    dataset = series_dataset(data_dir, config, to_univariate=not forecaster.multivariate)
    predictor = forecaster.build(dataset.prediction_length, dataset.freq)
    test_data = dataset.test_data
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteForecastWarning)
        metrics = evaluate(predictor.predict(test_data.input), test_data, dataset.seasonality)
    return {"dataset": config.key, "model": forecaster.name, "checkpoint": forecaster.checkpoint,
            "context_length": forecaster.context_length, "num_samples": forecaster.num_samples, **metrics,
            "domain": str(config.properties.get("domain", "")), "num_variates": dataset.target_dim}


def _settings_text(values: Iterable[str | float | None]) -> list[str]:
    return ["" if pd.isna(v) else str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
            for v in values]


def part_files(results_file: Path) -> list[Path]:
    """The parts an unfinished sharded run left next to `results_file`, in rank order."""
    return sorted((results_file.parent / PARTS_FOLDER).glob("rank-*.csv"))


def finished_configurations(results_file: Path, forecaster: Forecaster) -> set[str]:
    """Configurations already in `results_file` or its parts; refuses to mix results from different model settings."""
    ours = _settings_text([forecaster.checkpoint, forecaster.context_length, forecaster.num_samples])
    finished: set[str] = set()
    for path in [results_file, *part_files(results_file)]:
        if not path.exists():
            continue
        done = pd.read_csv(path, dtype={"checkpoint": str})
        for theirs in done[SETTINGS].drop_duplicates().itertuples(index=False):
            if _settings_text(theirs) != ours:
                raise ValueError(
                    f"{path} holds results of {forecaster.name} with checkpoint/context/samples "
                    f"{_settings_text(theirs)}, not {ours}. Use another --out folder or --name to keep both.")
        finished |= set(done["dataset"])
    return finished


def _append(results_file: Path, row: dict[str, object]) -> None:
    """Append one row (and the header for a new file), flushed so an interruption keeps it."""
    new = not results_file.exists()
    with open(results_file, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def merge_parts(results_file: Path, configs: list[Configuration]) -> None:
    """Fold the parts into `results_file`, each configuration once, in the order of `configs` (the file one
    uninterrupted process writes), rows of other configurations after them as found; then remove the parts.

    Rows are copied as text, so the merge changes no number. The file is replaced whole, atomically, before the
    parts go: an interruption leaves either the parts or the merged file, and a rerun finishes the merge.
    """
    folder, parts = results_file.parent / PARTS_FOLDER, part_files(results_file)
    if not parts:
        if folder.is_dir():  # left empty by ranks that had nothing to do, or whose configurations all failed
            shutil.rmtree(folder)
        return
    rows: dict[str, dict[str, str]] = {}
    for path in [results_file, *parts] if results_file.exists() else parts:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["dataset"], row)
    position = {config.key: i for i, config in enumerate(configs)}
    order = sorted(rows, key=lambda key: position.get(key, len(position)))  # stable: the others as found
    temporary = results_file.with_name(results_file.name + ".merging")
    with open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerows(rows[key] for key in order)
    os.replace(temporary, results_file)
    shutil.rmtree(folder)


@dataclass
class RunSummary:
    results_file: Path
    evaluated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def run(forecaster: Forecaster, data_dir: Path | TablePanel, configs: list[Configuration], out_dir: Path,
        progress: bool = True) -> RunSummary:
    """Evaluate every configuration not yet in `<out_dir>/<forecaster.name>/all_results.csv` (nor in the parts of
    an unfinished sharded run, which are merged in at the end).

    A configuration that raises is logged and left out (a rerun retries it); the others go on.
    """
    results_file = Path(out_dir) / forecaster.name / RESULTS_FILE
    results_file.parent.mkdir(parents=True, exist_ok=True)
    done = finished_configurations(results_file, forecaster)
    summary = RunSummary(results_file, skipped=[c.key for c in configs if c.key in done])
    todo = [c for c in configs if c.key not in done]
    _evaluate_into(results_file, forecaster, data_dir, todo, summary, progress, f"boom eval {forecaster.name}",
                   done=len(configs) - len(todo), total=len(configs))
    merge_parts(results_file, configs)
    return summary


def _evaluate_into(target: Path, forecaster: Forecaster, data_dir: Path | TablePanel, todo: list[Configuration],
                   summary: RunSummary, progress: bool, label: str, done: int, total: int,
                   position: int = 0) -> None:
    """Evaluate `todo`, appending each row to `target` as it is done and noting it in `summary`."""
    with tqdm(total=total, initial=done, desc=label, unit="config", disable=not progress,
              position=position) as bar:
        for config in todo:
            bar.set_postfix_str(config.key)
            try:
                row = evaluate_configuration(forecaster, data_dir, config)
            except Exception as err:  # one bad series must not stop a benchmark of thousands
                log.warning("%s failed: %s: %s", config.key, type(err).__name__, err)
                summary.failed[config.key] = f"{type(err).__name__}: {err}"
                continue
            _append(target, row)
            summary.evaluated.append(config.key)
            bar.update()


def run_sharded(make_forecaster: Callable[[str], Forecaster], data_dir: Path | TablePanel,
                configs: list[Configuration], out_dir: Path, devices: int, accelerator: str = "cpu",
                progress: bool = True) -> RunSummary:
    """`run` over `devices` processes: the configurations not yet done are dealt to the ranks in turn.

    `make_forecaster(device)` builds the forecaster in each process, on that rank's device; it must pickle (a
    module-level function, or a `functools.partial` of one), as do `data_dir` and `configs`. Results do not
    depend on the number of processes: each configuration is evaluated alone, from its own seed.
    """
    from toto.batch import launch

    if devices == 1:
        return run(make_forecaster(accelerator), data_dir, configs, out_dir, progress)
    # Bound to the function rather than passed as launch arguments, which Lightning walks and rebuilds (a frozen
    # Configuration cannot be).
    shard = functools.partial(_run_shard, make_forecaster=make_forecaster, data_dir=data_dir, configs=configs,
                              out_dir=Path(out_dir), progress=progress)
    outcome = launch(shard, devices=devices, accelerator=accelerator)
    if isinstance(outcome, Exception):  # raised here, so that the caller sees the error itself
        raise outcome
    return outcome


def _run_shard(fabric, make_forecaster: Callable[[str], Forecaster], data_dir: Path | TablePanel,
               configs: list[Configuration], out_dir: Path, progress: bool) -> RunSummary | Exception:
    """One rank of `run_sharded`; rank 0 merges and returns the summary of all ranks."""
    import torch.distributed

    rank, world = fabric.global_rank, fabric.world_size
    # A checkpoint that does not load, or results of other settings, fail alike on every rank: each returns the
    # error (no rank is left waiting for the others) for the caller to raise.
    try:
        forecaster = make_forecaster(str(fabric.device))
        results_file = out_dir / forecaster.name / RESULTS_FILE
        done = finished_configurations(results_file, forecaster)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        return err
    fabric.barrier()  # all ranks have read what is done before any writes
    todo = [c for c in configs if c.key not in done]
    part = results_file.parent / PARTS_FOLDER / f"rank-{rank:03d}.csv"
    part.parent.mkdir(parents=True, exist_ok=True)  # results_file's folder too
    summary = RunSummary(results_file, skipped=[c.key for c in configs if c.key in done])
    mine = todo[rank::world]
    _evaluate_into(part, forecaster, data_dir, mine, summary, progress,
                   f"boom eval {forecaster.name} rank {rank}/{world}", done=0, total=len(mine), position=rank)
    summaries: list[RunSummary | None] = [None] * world
    torch.distributed.all_gather_object(summaries, summary)  # also waits for every rank's part
    if rank != 0:
        return summary
    merge_parts(results_file, configs)
    gathered = cast(list[RunSummary], summaries)  # all_gather_object has filled every rank's slot
    return RunSummary(results_file, [key for s in gathered for key in s.evaluated], summary.skipped,
                      {key: error for s in gathered for key, error in s.failed.items()})
