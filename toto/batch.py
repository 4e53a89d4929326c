"""Forecast a panel too large for one process: series streamed from disk, sharded over Lightning Fabric ranks.

    toto forecast metrics.parquet -p 48 --output-dir forecasts/ --devices 2        # or forecast_files(...)

The input is a long table (an id column, a timestamp column and value columns) in Parquet or CSV, with each
series' rows together (as exports and `df.sort_values(id)` give; a series that reappears later is refused).
Every rank streams the whole file once, keeps the series whose position i in the file has i % world_size == rank,
and forecasts them `series_per_part` at a time: each part goes to its own file `part-r{rank}-{k}.parquet` in the
output folder, written atomically. So memory is bounded by a part, not by the panel, and an interrupted run,
started again with the same arguments, skips the parts it already wrote. A series samples from the stream of its
position in the whole file (`row_seeds(seed, ...)[i]`), so results do not depend on the number of processes.
Ranks are started by Fabric (`strategy="ddp_spawn"` for several CPU processes, one process per device on GPU);
each logs its progress. `read_parts` gathers the parts into one table.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from toto.options import DEFAULT_MODEL, Feedback
from toto.tables import to_panel
from toto.validation import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")
PART_PATTERN = "part-r{rank:03d}-{index:06d}.parquet"
# Rows read from the file at a time; a series longer than this simply spans several reads.
READ_ROWS = 65_536


@dataclass  # not frozen: Lightning's launcher walks (and rebuilds) the dataclasses it sends to processes
class BatchJob:
    """Everything a rank needs; plain data, so that spawned processes receive it."""

    input_path: Path
    output_dir: Path
    prediction_length: int
    checkpoint: str = DEFAULT_MODEL
    feedback: Feedback | None = None  # `toto.api.load_model`'s: what sample paths are decoded from
    id_column: str = "id"
    timestamp_column: str | None = None
    target_columns: Sequence[str] | None = None
    freq: str | None = None
    series_per_part: int = 256
    forecast_options: dict = field(default_factory=dict)  # passed to `ForecastPipeline.predict_panel`


def launch(function: Callable[..., T], *args: object, devices: int = 1, accelerator: str = "cpu") -> T:
    """Run `function(fabric, *args)` on `devices` processes through Lightning Fabric.

    On CPU the processes are spawned (`ddp_spawn`): they start from `function` and its pickled arguments, and the
    caller gets rank 0's result. Elsewhere Fabric's default applies, one process per device started by running
    the command line again, and each process gets its own rank's result.
    """
    from lightning.fabric import Fabric

    strategy = "ddp_spawn" if devices > 1 and accelerator == "cpu" else "auto"
    fabric = Fabric(accelerator=accelerator, devices=devices, strategy=strategy)
    return fabric.launch(functools.partial(_leaving_the_group, function), *args)


def _leaving_the_group(function: Callable[..., T], fabric, *args: object) -> T:
    """`function(fabric, *args)`, then this rank leaves the process group. A rank that exits with the group still
    up can abort in gloo's threads ("terminate called without an active exception", SIGABRT: one run in six of
    tests/test_boom_shards.py), failing a run whose work was done."""
    import torch.distributed

    try:
        return function(fabric, *args)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def forecast_files(job: BatchJob, devices: int = 1, accelerator: str = "cpu") -> list[Path]:
    """Run `job` over `devices` processes; returns the part files, all ranks' together, in order."""
    if not job.input_path.is_file():
        raise InputError(f"{job.input_path}: no such file")
    check_series_together(job.input_path, job.id_column)
    job.output_dir.mkdir(parents=True, exist_ok=True)
    launch(_run_rank, job, devices=devices, accelerator=accelerator)
    return sorted(job.output_dir.glob("part-r*.parquet"))


def read_parts(output_dir: str | Path) -> pd.DataFrame:
    """All parts of a finished run as one table, in the input's series order."""
    parts = sorted(Path(output_dir).glob("part-r*.parquet"))
    if not parts:
        raise InputError(f"{output_dir}: no forecast parts (part-r*.parquet) found")
    table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    return table.sort_values("series_index", kind="stable").reset_index(drop=True)


def _run_rank(fabric, job: BatchJob) -> None:
    from toto.api import load_model

    rank, world = fabric.global_rank, fabric.world_size
    pipeline = load_model(job.checkpoint, device=str(fabric.device), feedback=job.feedback)
    done = skipped = series_done = 0
    started = time.perf_counter()
    for index, (positions, frame) in enumerate(_parts(job, rank, world)):
        path = job.output_dir / PART_PATTERN.format(rank=rank, index=index)
        if path.exists():
            skipped += 1
            continue
        panel = to_panel(frame, job.timestamp_column, job.id_column, job.target_columns, job.freq)
        table = pipeline.predict_panel(panel, job.prediction_length, series_index=positions, **job.forecast_options)
        position_of = dict(zip((s.id for s in panel.series), positions, strict=True))
        table.insert(0, "series_index", table[panel.id_column].map(position_of))
        temporary = path.with_suffix(".tmp")
        table.to_parquet(temporary, index=False)
        os.replace(temporary, path)  # a part exists only once it is complete
        done += 1
        series_done += len(positions)
        rate = series_done / (time.perf_counter() - started)
        log.warning("rank %d/%d: part %d written (%d series so far, %.1f series/s)", rank, world, index, series_done,
                    rate)
    log.warning("rank %d/%d: %d parts written, %d already there", rank, world, done, skipped)
    fabric.barrier()


def _parts(job: BatchJob, rank: int, world: int) -> Iterator[tuple[list[int], pd.DataFrame]]:
    """This rank's series, `series_per_part` at a time: (their positions in the file, their rows)."""
    positions: list[int] = []
    frames: list[pd.DataFrame] = []
    for position, rows in _series(job.input_path, job.id_column):
        if position % world != rank:
            continue
        positions.append(position)
        frames.append(rows)
        if len(positions) == job.series_per_part:
            yield positions, pd.concat(frames, ignore_index=True)
            positions, frames = [], []
    if positions:
        yield positions, pd.concat(frames, ignore_index=True)


def check_series_together(path: Path, id_column: str) -> int:
    """Stream the id column once and refuse a table whose series' rows are not together; returns the series count.

    Run before any forecasting, so that a badly ordered file fails at once instead of after hours of work.
    """
    last = -1
    for last, *_ in _id_runs(path, id_column, _chunks(path, [id_column])):  # noqa: B007  (only the last matters)
        pass
    return last + 1


def _series(path: Path, id_column: str) -> Iterator[tuple[int, pd.DataFrame]]:
    """(position, rows) of each series of a long table, streamed in file order."""
    current = -1
    pending: list[pd.DataFrame] = []
    for position, _key, chunk, begin, end in _id_runs(path, id_column, _chunks(path)):
        if position != current and pending:
            yield current, pd.concat(pending, ignore_index=True)
            pending = []
        current = position
        pending.append(chunk.iloc[begin:end])
    if pending:
        yield current, pd.concat(pending, ignore_index=True)


def _id_runs(
    path: Path, id_column: str, chunks: Iterator[pd.DataFrame]
) -> Iterator[tuple[int, object, pd.DataFrame, int, int]]:
    """(series position, id, chunk, first row, end row) for each run of equal ids, in file order."""
    seen: set[object] = set()
    current: object = None
    position = -1
    for chunk in chunks:
        if id_column not in chunk.columns:
            raise InputError(f"{path}: no id column {id_column!r}; its columns are {list(chunk.columns)}")
        ids = chunk[id_column].to_numpy()
        starts = [0, *(1 + np.flatnonzero(ids[1:] != ids[:-1])), len(ids)]
        for begin, end in zip(starts[:-1], starts[1:]):
            key = ids[begin]
            if key != current:
                if key in seen:
                    raise InputError(
                        f"{path}: the rows of series {key!r} are not together (it appears again after other"
                        f" series); sort the table by {id_column!r} first"
                    )
                seen.add(key)
                current, position = key, position + 1
            yield position, key, chunk, begin, end


def _chunks(path: Path, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=columns):
            yield batch.to_pandas()
    elif name.endswith((".csv", ".csv.gz")):
        yield from pd.read_csv(path, chunksize=READ_ROWS, usecols=columns)
    else:
        raise InputError(f"{path}: batch forecasting reads .parquet or .csv files")
