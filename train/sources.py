"""Where training series come from.

Every source turns its input into a list of `SeriesRecord`s: a (variates, time) float32 target array with NaN for
missing values, plus optional exogenous (known-future covariate) variates on the same time axis. Sources are
configured in YAML by class path, so a config can mix several, each with a sampling `weight`:

    data:
      sources:
        - class_path: train.sources.SyntheticSource
          init_args: {num_series: 2000, weight: 3.0}
        - class_path: train.sources.TableSource
          init_args: {path: data/real/, weight: 1.0}
"""

from __future__ import annotations

import glob
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from toto.tables import InputError, Panel, long_to_wide, to_panel
from train.synthetic import RepeatingProfileGenerator, SyntheticSeriesGenerator

log = logging.getLogger(__name__)


class DataSourceError(InputError):
    """A data file could not be read or does not have the expected layout; the message names the file.

    An `InputError`: the data is the user's to fix, so `toto-train` prints the message as one line (`train.cli`).
    """


@dataclass
class SeriesRecord:
    """One (possibly multivariate) series: all its variates attend to each other in the model."""

    name: str
    target: np.ndarray  # (variates, time) float32, NaN = missing
    exogenous: np.ndarray | None = None  # (exogenous variates, time) float32, known in the future too

    @property
    def length(self) -> int:
        return self.target.shape[-1]

    @property
    def num_exogenous(self) -> int:
        return 0 if self.exogenous is None else self.exogenous.shape[0]


def as_variates_first(values: object, what: str) -> np.ndarray:
    """A 1-D or 2-D (variates, time) array as float32 (variates, time); None and +-inf become NaN (missing)."""
    array = np.array(values, dtype=np.float64)  # None -> nan
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise DataSourceError(f"{what}: expected a 1-D or (variates, time) array, got shape {array.shape}")
    array[~np.isfinite(array)] = np.nan
    return array.astype(np.float32)


class SeriesSource(ABC):
    """Base class of data sources. `weight` is the share of training windows drawn from this source."""

    def __init__(self, weight: float = 1.0) -> None:
        if weight <= 0:
            raise InputError(f"source weight must be positive, got {weight}")
        self.weight = weight

    def __str__(self) -> str:
        """How messages name the source: its class, and its path for a source read from files."""
        path = getattr(self, "path", None)
        return type(self).__name__ if path is None else f"{type(self).__name__} ({path})"

    @abstractmethod
    def load(self) -> list[SeriesRecord]:
        """All series of this source."""


class SyntheticSource(SeriesSource):
    """Synthetic observability-style series for pretraining (see `train.synthetic`), reproducible from `seed`."""

    def __init__(
        self,
        num_series: int = 1000,
        length: int = 2048,
        max_variates: int = 4,
        missing_fraction: float = 0.02,
        seed: int = 0,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        self.num_series = num_series
        self.generator = SyntheticSeriesGenerator(
            length=length, max_variates=max_variates, missing_fraction=missing_fraction, seed=seed
        )

    def load(self) -> list[SeriesRecord]:
        return [SeriesRecord(f"synthetic/{i}", self.generator.series(i)) for i in range(self.num_series)]


class RepeatingProfileSource(SeriesSource):
    """Synthetic series that repeat a cycle almost exactly (see `train.synthetic.RepeatingProfileGenerator`)."""

    def __init__(
        self, num_series: int = 1000, length: int = 2176, max_variates: int = 3, seed: int = 0, weight: float = 1.0
    ) -> None:
        super().__init__(weight)
        self.num_series = num_series
        self.generator = RepeatingProfileGenerator(length=length, max_variates=max_variates, seed=seed)

    def load(self) -> list[SeriesRecord]:
        return [SeriesRecord(f"profile/{i}", self.generator.series(i)) for i in range(self.num_series)]


def _expand_paths(path: str, suffixes: tuple[str, ...]) -> list[Path]:
    """A file, every matching file in a folder (recursively), or a glob pattern; an error if nothing matches."""
    candidate = Path(path)
    if candidate.is_dir():
        files = sorted(p for p in candidate.rglob("*") if p.suffix in suffixes)
    elif candidate.exists():
        files = [candidate]
    else:
        files = sorted(Path(p) for p in glob.glob(path, recursive=True) if Path(p).suffix in suffixes)
    if not files:
        raise DataSourceError(f"{path}: no {'/'.join(suffixes)} files found (check the path)")
    return files


class HFDatasetSource(SeriesSource):
    """Hugging Face `datasets` data in the GIFT-Eval / BOOM layout: one row per series with fields `item_id`,
    `start`, `freq` and `target` (1-D, or 2-D (variates, time) for multivariate series).

    `path` is a `save_to_disk` folder, a .parquet/.arrow file, a folder of them, or a glob. `exogenous_fields`
    names per-row arrays (1-D or 2-D, same length as `target`) used as known-future covariates, e.g.
    `feat_dynamic_real`.
    """

    def __init__(
        self,
        path: str,
        target_field: str = "target",
        exogenous_fields: list[str] | None = None,
        split: str = "train",
        max_series: int | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        self.path = path
        self.target_field = target_field
        self.exogenous_fields = exogenous_fields or []
        self.split = split
        self.max_series = max_series

    def _open(self):
        import datasets

        folder = Path(self.path)
        try:
            if folder.is_dir() and ((folder / "dataset_info.json").exists() or (folder / "dataset_dict.json").exists()):
                dataset = datasets.load_from_disk(str(folder))
                if isinstance(dataset, datasets.DatasetDict):
                    dataset = dataset[self.split]
                return dataset
            files = [str(p) for p in _expand_paths(self.path, (".parquet", ".arrow"))]
            if files[0].endswith(".arrow"):
                return datasets.concatenate_datasets([datasets.Dataset.from_file(f) for f in files])
            return datasets.Dataset.from_parquet(files, keep_in_memory=True)
        except DataSourceError:
            raise
        except Exception as error:  # the library's reasons vary (missing file, bad schema, corrupt data)
            raise DataSourceError(f"{self.path}: cannot read as a Hugging Face dataset: {error}") from error

    def load(self) -> list[SeriesRecord]:
        dataset = self._open()
        missing = [f for f in [self.target_field, *self.exogenous_fields] if f not in dataset.column_names]
        if missing:
            raise DataSourceError(f"{self.path}: missing fields {missing}; the dataset has {dataset.column_names}")
        if self.max_series is not None:
            dataset = dataset.select(range(min(self.max_series, len(dataset))))
        records = []
        for index, row in enumerate(dataset):
            name = f"{self.path}/{row.get('item_id', index)}"
            target = as_variates_first(row[self.target_field], name)
            exogenous = None
            if self.exogenous_fields:
                exogenous = np.concatenate([as_variates_first(row[f], f"{name}:{f}") for f in self.exogenous_fields])
                if exogenous.shape[-1] != target.shape[-1]:
                    raise DataSourceError(
                        f"{name}: exogenous fields have {exogenous.shape[-1]} steps but target has {target.shape[-1]}"
                    )
            records.append(SeriesRecord(name, target, exogenous))
        return records


class TableSource(SeriesSource):
    """CSV or Parquet tables (a file, a folder of files, or a glob), in wide or long form, read by `toto.tables`.

    wide: one row per timestamp (per item when there is an id column); `target_columns` (default: every other
          numeric column) are the variates of one multivariate series per item, or separate series with
          `multivariate: false`.
    long: one row per (item, timestamp[, variable]) with the number in `value_column`; `variable_column` names the
          variate, and is pivoted to the wide form (`toto.tables.long_to_wide`; a repeated row is refused).
    `exogenous_columns` (variable names in long form) become known-future covariates of each item.

    Everything else follows the rules of `toto.tables.to_panel`, the same as `toto forecast` and `predict_df`: the
    timestamp and id columns are detected unless named, the frequency is `freq` or inferred, duplicate timestamps
    are refused, gaps become missing values, a column without any value is refused, and text columns that are
    neither time nor id are named in a warning. Each error names the file.
    """

    def __init__(
        self,
        path: str,
        layout: Literal["wide", "long"] = "wide",
        timestamp_column: str | None = None,
        id_column: str | None = None,
        target_columns: list[str] | None = None,
        exogenous_columns: list[str] | None = None,
        value_column: str = "value",
        variable_column: str | None = None,
        multivariate: bool = True,
        freq: str | None = None,
        weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        self.path = path
        self.layout = layout
        self.timestamp_column = timestamp_column
        self.id_column = id_column
        self.target_columns = target_columns
        self.exogenous_columns = exogenous_columns or []
        self.value_column = value_column
        self.variable_column = variable_column
        self.multivariate = multivariate
        self.freq = freq

    @staticmethod
    def _read(file: Path) -> pd.DataFrame:
        try:
            return pd.read_parquet(file) if file.suffix == ".parquet" else pd.read_csv(file)
        except Exception as error:  # pandas raises many types (parser, encoding, arrow, OS errors)
            raise DataSourceError(f"{file}: cannot read as {file.suffix[1:]}: {error}") from error

    def _panel(self, frame: pd.DataFrame) -> Panel:
        if self.layout == "long" and self.variable_column is not None:
            frame = long_to_wide(frame, self.variable_column, self.value_column, self.timestamp_column, self.id_column)
        targets = self.target_columns
        if targets is None and self.layout == "long" and self.variable_column is None:
            targets = [self.value_column]
        columns = [*targets, *self.exogenous_columns] if targets else None
        return to_panel(frame, self.timestamp_column, self.id_column, columns, self.freq)

    def _file_records(self, file: Path) -> list[SeriesRecord]:
        try:
            panel = self._panel(self._read(file))
        except InputError as error:
            raise DataSourceError(f"{file}: {error}") from error
        if panel.ignored:
            log.warning("%s: ignored column(s) %s (%s); name target_columns to choose the columns", file,
                        sorted(panel.ignored), ", ".join(sorted(set(panel.ignored.values()))))
        records = []
        for series in panel.series:
            if missing := [c for c in self.exogenous_columns if c not in series.variates]:
                raise DataSourceError(f"{file}: exogenous column(s) {missing} are not numeric columns of the table")
            exogenous_rows = [series.variates.index(c) for c in self.exogenous_columns]
            target_rows = [i for i in range(len(series.variates)) if i not in exogenous_rows]
            if not target_rows:
                raise DataSourceError(f"{file}: every numeric column is exogenous; name the targets in target_columns")
            name = f"{file}:{series.id}" if series.id is not None else str(file)
            exogenous = as_variates_first(series.values[exogenous_rows], name) if exogenous_rows else None
            target = as_variates_first(series.values[target_rows], name)
            if self.multivariate:
                records.append(SeriesRecord(name, target, exogenous))
            else:
                records += [
                    SeriesRecord(f"{name}:{series.variates[row]}", row_values[None], exogenous)
                    for row, row_values in zip(target_rows, target)
                ]
        return records

    def load(self) -> list[SeriesRecord]:
        records = [r for file in _expand_paths(self.path, (".csv", ".parquet")) for r in self._file_records(file)]
        log.info("read %d series from %s", len(records), self.path)
        return records
