"""Forecast a panel too large for one process: series streamed from disk, sharded over Lightning Fabric ranks.

    toto forecast metrics.parquet -p 48 --output-dir forecasts/ --devices 2        # or forecast_files(...)

The input is a long table (an id column, a timestamp column and value columns) in Parquet or CSV, with each
series' rows together (as exports and `df.sort_values(id)` give; a series that reappears later is refused).
Every rank streams the whole file once, keeps the series whose position i in the file has i % world_size == rank,
and forecasts them `series_per_part` at a time: each part goes to its own file `part-r{rank}-{k}.parquet` in the
output folder, written atomically. So memory is bounded by a part, not by the panel, and an interrupted run,
started again with the same arguments, skips the parts it already wrote. The folder's `manifest.json` records what
its parts are made from (the input's sha256, the model's, every setting that changes a part): a run that differs
is refused rather than resumed, since the parts there would be another forecast. A series samples from the stream
of its position in the whole file (`row_seeds(seed, ...)[i]`), so results do not depend on the number of processes.
Ranks are started by Fabric (`strategy="ddp_spawn"` for several CPU processes, one process per device on GPU);
each logs its progress. `read_parts` gathers the parts into one table.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from toto import checkpoint_io
from toto.options import DEFAULT_MODEL, Feedback
from toto.tables import to_panel
from toto.validation import InputError

log = logging.getLogger(__name__)
T = TypeVar("T")
PART_PATTERN = "part-r{rank:03d}-{index:06d}.parquet"
# What an output folder's parts are made from (`_made_from`), written before the first part.
MANIFEST_FILE = "manifest.json"
# Forecast options that change no number of a part (forecasts are batch-invariant): a resume may change them.
UNRECORDED_OPTIONS = ("batch_size",)
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


@dataclass(frozen=True)
class Survey:
    """What a job's input holds, read before any process starts (`survey`)."""

    series: int
    variates: int
    """Of the first series, as the ranks read it (a long table's series share their value columns)."""
    steps: int
    """At least the steps of the longest series: its rows, or the first series' steps on its grid."""


def survey(job: BatchJob) -> Survey:
    """Check the job's input before any work and measure it: the file exists and has the id column, each series'
    rows are together (a badly ordered file fails at once instead of after hours of work), and the first series
    reads as the ranks will read every series."""
    path = job.input_path
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    columns = _columns(path)
    if job.id_column not in columns:
        raise InputError(f"{path}: no id column {job.id_column!r}; its columns are {columns}: name the series id"
                         " column (--id-column)")
    series, rows, longest = 0, 0, 0
    for position, *_, begin, end in _id_runs(path, job.id_column, _chunks(path, [job.id_column])):
        if position == series:  # a new series
            series, rows = series + 1, 0
        rows += end - begin
        longest = max(longest, rows)
    if not series:
        raise InputError(f"{path}: the table has no rows")
    _, first_rows = next(_series(path, job.id_column))
    (first,) = to_panel(first_rows, job.timestamp_column, job.id_column, job.target_columns, job.freq).series
    return Survey(series, len(first.variates), max(longest, len(first.index)))


def forecast_files(job: BatchJob, devices: int = 1, accelerator: str = "cpu",
                   surveyed: Survey | None = None) -> list[Path]:
    """Run `job` over `devices` processes; returns the part files, all ranks' together, in order.

    The input is checked first (`survey`; `surveyed` is its result when the caller has it already), then the
    output folder: one whose parts were made from another input, model or settings is refused."""
    if surveyed is None:
        survey(job)
    _claim(job, devices)
    launch(_run_rank, job, devices=devices, accelerator=accelerator)
    return sorted(job.output_dir.glob("part-r*.parquet"))


def _made_from(job: BatchJob, devices: int) -> dict:
    """What the parts of `job` over `devices` processes are made from, as JSON: the bytes of the input and of the
    model's files, and every setting that changes which series a part holds or what it forecasts."""
    settings = {field.name: getattr(job, field.name) for field in dataclasses.fields(job)
                if field.name not in ("input_path", "output_dir", "checkpoint", "forecast_options")}
    options = {k: v for k, v in job.forecast_options.items() if k not in UNRECORDED_OPTIONS}
    record = {"input_sha256": _sha256(job.input_path),
              "model_sha256": checkpoint_io.fingerprint(checkpoint_io.resolve(job.checkpoint)),
              **settings, "processes": devices, "forecast_options": options}
    return json.loads(json.dumps(record, default=list))  # tuples as lists, as the file holds them


def _claim(job: BatchJob, devices: int) -> None:
    """Make the output folder this job's: record what its parts are made from, or check that the record there is
    this job's (a resume). Parts made from anything else are refused, never mixed with this run's."""
    folder, manifest = job.output_dir, job.output_dir / MANIFEST_FILE
    made_from = _made_from(job, devices)
    if any(folder.glob("part-r*.parquet")):
        if not manifest.is_file():
            raise InputError(f"{folder} holds forecast parts with no record of what they were made from"
                             f" ({MANIFEST_FILE}): write this run to another output folder, or remove {folder} to"
                             " start again")
        try:
            recorded = json.loads(manifest.read_text())
        except ValueError as error:
            raise InputError(f"{manifest} is damaged ({error}): remove {folder} to start again") from error
        if recorded != made_from:
            raise InputError(f"{folder} holds forecast parts made from {_differences(recorded, made_from)}: to keep"
                             f" them, write this run to another output folder; to start again, remove {folder}")
        return  # a resume
    folder.mkdir(parents=True, exist_ok=True)  # no parts yet: the record is this run's, whatever was there
    temporary = manifest.with_suffix(".tmp")
    temporary.write_text(json.dumps(made_from, indent=2) + "\n")
    os.replace(temporary, manifest)


def _differences(recorded: dict, wanted: dict, prefix: str = "") -> str:
    """The recorded values that differ from this run's, in words: "another input file (sha256 ...), ..."."""
    words = []
    for key in sorted(recorded.keys() | wanted.keys()):
        old, new = recorded.get(key, "unset"), wanted.get(key, "unset")
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            words.append(_differences(old, new, f"{prefix}{key}."))
        elif key.endswith("_sha256"):
            thing = {"input_sha256": "input file", "model_sha256": "model"}.get(key, key)
            words.append(f"another {thing} (sha256 {str(old)[:12]}..., this run's {str(new)[:12]}...)")
        else:
            words.append(f"{prefix}{key} {old} (this run: {new})")
    return ", ".join(words)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def _columns(path: Path) -> list[str]:
    """The file's column names, read from its schema or header line."""
    try:
        if _is_parquet(path):
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(path).schema_arrow.names)
        return list(pd.read_csv(path, nrows=0).columns)
    except (OSError, ValueError) as error:  # pyarrow's and pandas' errors on an empty or damaged file
        raise InputError(f"{path}: cannot read it ({error})") from error


def _is_parquet(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return True
    if name.endswith((".csv", ".csv.gz")):
        return False
    raise InputError(f"{path}: batch forecasting reads .parquet or .csv files")


def _chunks(path: Path, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    if _is_parquet(path):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=columns):
            yield batch.to_pandas()
    else:
        yield from pd.read_csv(path, chunksize=READ_ROWS, usecols=columns)
