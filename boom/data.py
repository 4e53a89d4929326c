"""BOOM (and GIFT-Eval) series folders -> GluonTS test data, following the published methodology.

On the hub (`Datadog/BOOM`) every series is one `datasets.save_to_disk` folder named `ds-<id>-<freq>` with
the fields `item_id`, `start`, `freq` and `target` (2-D, variates x time, for multivariate series).
GIFT-Eval stores its datasets the same way (`<name>` or `<name>/<freq>` folders), so one loader reads both.

What the methodology fixes, and this module reproduces exactly:
- prediction length = base length of the frequency's unit (S 60, T 48, H 48, D 30, W 8, M 12; GIFT-Eval's
  M4 datasets use their own table) times 1, 10 or 15 for the short, medium and long terms;
- test windows = min(max(1, ceil(0.1 * shortest series length / prediction length)), 20), non-overlapping
  and taken from the end of the series (M4: one window);
- which terms a series is evaluated on comes from `boom_properties.json` (`term: short` -> short only,
  `term: long` -> short, medium and long).

A user's own table (CSV, TSV or Parquet, wide or long) is evaluated the same way without converting it to this
layout first: `TablePanel` reads it with `toto.tables` (the rules of `toto forecast` and training) and makes
one configuration per series and term, with the same windows and metrics.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
from gluonts.dataset.common import ProcessDataEntry
from gluonts.dataset.split import TestData, split
from gluonts.time_feature import get_seasonality, norm_freq_str
from pandas.tseries.offsets import BaseOffset

from toto import tables
from toto.io import read_table
from toto.validation import MIN_TIME_STEPS, InputError

HUB_REPO = "Datadog/BOOM"
DATA_ENV_VAR = "BOOM_PATH"
TEST_SPLIT = 0.1
MAX_WINDOWS = 20
# GIFT-Eval's M4 datasets (m4_yearly, ..., m4_hourly), which follow M4's own prediction lengths and one window.
M4_DATASET = re.compile(r"m4_(yearly|quarterly|monthly|weekly|daily|hourly)", re.IGNORECASE)
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq")
# Base prediction length per frequency unit (GIFT-Eval's PRED_LENGTH_MAP, which BOOM adopts).
PREDICTION_LENGTHS = {"S": 60, "T": 48, "H": 48, "D": 30, "W": 8, "M": 12,
                      "Q": 8}  # Q is not in GIFT-Eval's table outside M4; M4's value
M4_PREDICTION_LENGTHS = {"A": 6, "Q": 8, "M": 18, "W": 13, "D": 14, "H": 48}
# pandas offset names (old and new aliases) -> the unit letters of the tables above.
_UNITS = {"s": "S", "S": "S", "min": "T", "T": "T", "h": "H", "H": "H", "D": "D", "B": "D", "W": "W",
          "ME": "M", "M": "M", "MS": "M", "QE": "Q", "Q": "Q", "YE": "A", "Y": "A", "A": "A"}


class Term(str, Enum):
    """Forecast horizon class of a configuration; the value is the name used in result keys."""

    SHORT = "short"
    MEDIUM = "medium"
    LONG = "long"

    @property
    def multiplier(self) -> int:
        return {"short": 1, "medium": 10, "long": 15}[self.value]


def to_offset(freq: str) -> BaseOffset:
    """pandas' offset for `freq`, accepting the deprecated aliases ('T', 'H', '10S') that BOOM's data uses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pd.tseries.frequencies.to_offset(freq)


def seasonality(freq: str) -> int:
    """GluonTS's seasonality for `freq` (24 for hourly, 12 for monthly data), the season that seasonal naive repeats
    and MASE's scale spans.

    `get_seasonality` parses the string with pandas, which warns for the period spellings ('M', 'Q-DEC') that
    GluonTS's own period index uses; it is given the offset's current spelling ('ME', 'QE-DEC') instead, for the
    same number."""
    return get_seasonality(to_offset(freq).freqstr)


def frequency_unit(freq: str) -> str:
    """The unit letter (S, T, H, D, W, M, Q, A) of a pandas frequency string such as '10S', '5min' or 'H'."""
    name = norm_freq_str(to_offset(freq).name)
    if name not in _UNITS:
        raise ValueError(f"Unsupported frequency {freq!r}: BOOM/GIFT-Eval define prediction lengths for "
                         f"{sorted(set(_UNITS.values()))} units only.")
    return _UNITS[name]


def prediction_length(freq: str, term: Term | str, m4: bool = False) -> int:
    """Forecast horizon of a configuration: the frequency's base length times the term's multiplier."""
    table = M4_PREDICTION_LENGTHS if m4 else PREDICTION_LENGTHS
    unit = frequency_unit(freq)
    if unit not in table:
        raise ValueError(f"No published prediction length for frequency {freq!r} (unit {unit}).")
    return table[unit] * Term(term).multiplier


def num_windows(min_series_length: int, prediction_length: int, m4: bool = False) -> int:
    """Number of non-overlapping rolling test windows at the end of the series (M4: always one)."""
    if m4:
        return 1
    return min(max(1, math.ceil(TEST_SPLIT * min_series_length / prediction_length)), MAX_WINDOWS)


def _to_univariate(entries: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Split each multivariate entry into one entry per variate (`<item_id>_dim<k>`), as GIFT-Eval does."""
    for entry in entries:
        for k, row in enumerate(entry["target"]):
            yield {**entry, "target": row, "item_id": f"{entry['item_id']}_dim{k}"}


@dataclass
class SeriesDataset:
    """One `save_to_disk` folder evaluated at one term.

    `to_univariate=True` splits multivariate series into univariate entries for models that forecast one
    variate at a time (statistical baselines); the metrics are the same either way because they are
    aggregated over all windows and variates at once.
    """

    path: Path
    term: Term = Term.SHORT
    to_univariate: bool = False

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.term = Term(self.term)
        if not (self.path / "state.json").exists():
            raise FileNotFoundError(
                f"{self.path} is not a `datasets.save_to_disk` folder (no state.json). Point --data / "
                f"{DATA_ENV_VAR} at the folder that holds the ds-<id>-<freq> series folders.")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_m4(self) -> bool:
        """Whether the folder is one of GIFT-Eval's M4 datasets, by its own name (not by any folder above it)."""
        return M4_DATASET.fullmatch(self.path.name) is not None

    @cached_property
    def hf_dataset(self) -> datasets.Dataset:
        return datasets.load_from_disk(str(self.path)).with_format("numpy")

    @cached_property
    def freq(self) -> str:
        """The series' period frequency in today's pandas spelling ('T' -> 'min', '10S' -> '10s', 'M' -> 'M').

        GluonTS indexes time with `pd.Period`, so the spelling is the Period one ('M', not the offset 'ME').
        """
        raw = str(self.hf_dataset[0]["freq"])
        try:
            # Any offset may come: pandas raises ValueError for one that is no period frequency (caught below),
            # where pandas-stubs accept the period frequencies only.
            return pd.Period("2000-01-01", freq=to_offset(raw)).freqstr  # type: ignore[arg-type]
        except ValueError as error:
            raise ValueError(f"{self.path}: freq {raw!r} is not a period frequency; write period aliases such as "
                             "'M', 'Q', 'Y' in the `freq` field (GIFT-Eval's convention)") from error

    @cached_property
    def target_dim(self) -> int:
        target = self.hf_dataset[0]["target"]
        return target.shape[0] if target.ndim > 1 else 1

    @cached_property
    def min_series_length(self) -> int:
        return min(int(np.shape(t)[-1]) for t in self.hf_dataset["target"])

    @cached_property
    def prediction_length(self) -> int:
        return prediction_length(self.freq, self.term, m4=self.is_m4)

    @cached_property
    def windows(self) -> int:
        return num_windows(self.min_series_length, self.prediction_length, m4=self.is_m4)

    @cached_property
    def seasonality(self) -> int:
        """GluonTS's seasonality for the frequency: the lag of MASE's in-sample seasonal error."""
        return seasonality(self.freq)

    @cached_property
    def required_length(self) -> int:
        """Steps the series needs at this term: its test windows, and before them at least one season of history.

        With less, seasonal naive (the baseline the leaderboard scales every model by) has no season to repeat
        and forecasts NaN; with no history at all GluonTS cannot split the windows off."""
        return self.prediction_length * self.windows + max(MIN_TIME_STEPS, self.seasonality)

    @property
    def length_problem(self) -> str | None:
        """What a series too short for its term (`required_length`) lacks, or None when it is long enough."""
        if self.min_series_length >= self.required_length:
            return None
        history = self.required_length - self.prediction_length * self.windows
        return (f"{self.name} has {self.min_series_length} steps, too few for the {self.term.value} term: its "
                f"{self.windows} test window(s) of {self.prediction_length} steps need at least {history} steps "
                f"of history before them ({self.required_length} steps in all)")

    @cached_property
    def entries(self) -> list[dict[str, Any]]:
        """GluonTS data entries (start as `pd.Period`, float32 targets)."""
        process = ProcessDataEntry(self.freq, one_dim_target=self.target_dim == 1)
        raw = ({**row, "item_id": str(row["item_id"]), "start": pd.Timestamp(row["start"].item())}
               for row in self.hf_dataset)
        entries = [process(entry) for entry in raw]
        return list(_to_univariate(entries)) if self.to_univariate and self.target_dim > 1 else entries

    @property
    def test_data(self) -> TestData:
        """Rolling, non-overlapping test windows from the end of every series; inputs hold the full history."""
        _, template = split(self.entries, offset=-self.prediction_length * self.windows)
        return template.generate_instances(prediction_length=self.prediction_length, windows=self.windows,
                                           distance=self.prediction_length)


# --------------------------------------------------------------------------------------------------
# Benchmark metadata and the list of configurations


@dataclass(frozen=True)
class Configuration:
    """One row of `all_results.csv`: a series evaluated at a term."""

    series: str
    term: Term
    properties: dict[str, Any]

    @property
    def key(self) -> str:
        """The published `dataset` column: `<series>/<frequency label>/<term>`."""
        return f"{self.series}/{self.properties['frequency']}/{self.term.value}"


def _metadata(name: str) -> Any:
    return json.loads(resources.files("boom").joinpath("metadata").joinpath(name).read_text())


def load_properties(data_dir: Path | None = None, subset: str = "boom") -> dict[str, dict[str, Any]]:
    """Series properties of the full benchmark (`subset="boom"`) or the 32-series BOOMlet (`"boomlet"`).

    A `<subset>_properties.json` inside `data_dir` takes precedence over the published copy shipped with
    the package, so a local benchmark folder (or a test fixture) can describe its own series.
    """
    if subset not in ("boom", "boomlet"):
        raise ValueError(f"Unknown subset {subset!r}: use 'boom' (all 2,807 series) or 'boomlet' (32 series).")
    filename = f"{subset}_properties.json"
    if data_dir is not None and (Path(data_dir) / filename).exists():
        return json.loads((Path(data_dir) / filename).read_text())
    return _metadata(filename)


def low_variance_series() -> set[str]:
    """The series the published leaderboard scores unscaled (MAE and CRPS) because their variance is ~0."""
    return set(_metadata("low_variance_datasets.json"))


def configurations(properties: dict[str, dict[str, Any]], terms: Iterable[Term | str] = tuple(Term),
                   series: Iterable[str] | None = None) -> list[Configuration]:
    """Every (series, term) pair the methodology evaluates, restricted to `terms` and optionally `series`."""
    wanted_terms = {Term(t) for t in terms}
    if series is not None:
        unknown = sorted(set(series) - set(properties))
        if unknown:
            raise ValueError(f"Series {unknown} are not in the benchmark properties.")
    names = list(properties) if series is None else [s for s in properties if s in set(series)]
    configs = []
    for name in names:
        props = properties[name]
        available = [Term.SHORT] if props["term"] == "short" else list(Term)
        configs += [Configuration(name, term, props) for term in available if term in wanted_terms]
    return configs


# --------------------------------------------------------------------------------------------------
# Locating the data: a local folder, or the hub


def resolve_data_dir(path: str | Path | None = None, series: Iterable[str] | None = None) -> Path:
    """The folder holding the series folders: `path`, else `$BOOM_PATH`, else a hub download.

    The hub download fetches only `series` when given (e.g. the BOOMlet), into the Hugging Face cache.
    """
    path = path or os.environ.get(DATA_ENV_VAR)
    if path:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"BOOM data folder {path} does not exist. Pass the folder that holds the "
                                    f"ds-<id>-<freq> series folders (--data DIR or {DATA_ENV_VAR}=DIR).")
        return path
    return download(series=series)


def download(local_dir: str | Path | None = None, series: Iterable[str] | None = None) -> Path:
    """Download `Datadog/BOOM` (or only the given series folders) with `huggingface_hub.snapshot_download`."""
    from huggingface_hub import snapshot_download

    patterns = None if series is None else [f"{name}/*" for name in series]
    try:
        path = snapshot_download(HUB_REPO, repo_type="dataset", local_dir=local_dir, allow_patterns=patterns)
    except OSError as err:  # LocalEntryNotFoundError, HfHubHTTPError and connection errors are all OSErrors
        raise RuntimeError(
            f"Could not download {HUB_REPO} from the Hugging Face hub ({type(err).__name__}: {err}).\n"
            f"Use a local copy instead: on a machine that reaches the hub run `boom download --out DIR` "
            f"(or `huggingface-cli download {HUB_REPO} --repo-type dataset --local-dir DIR`), copy DIR "
            f"here, then pass `--data DIR` or set {DATA_ENV_VAR}=DIR.") from err
    return Path(path)


@dataclass
class TableSeriesDataset(SeriesDataset):
    """One series of a user's table (`TablePanel`) evaluated at one term, with the windows and metrics of BOOM."""

    series: tables.Series | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.term = Term(self.term)

    @property
    def is_m4(self) -> bool:
        return False

    @property
    def _series(self) -> tables.Series:
        """`series`, which `TablePanel.dataset` always gives (the None default only follows the base's fields)."""
        assert self.series is not None
        return self.series

    @cached_property
    def _periods(self) -> pd.PeriodIndex:
        """The series' timestamps as GluonTS's periods. Periods have no time zone: the wall times are kept, and
        the zone is dropped first so that pandas does not warn that it drops it."""
        index = self._series.index
        # pandas maps the grid's offset to its period (MS -> M), where pandas-stubs accept period frequencies only.
        return index.tz_localize(None).to_period(index.freq)  # type: ignore[arg-type]

    @cached_property
    def freq(self) -> str:
        return self._periods.freqstr

    @cached_property
    def target_dim(self) -> int:
        return len(self._series.variates)

    @cached_property
    def min_series_length(self) -> int:
        return self._series.values.shape[-1]

    @cached_property
    def entries(self) -> list[dict[str, Any]]:
        target = self._series.values.astype(np.float32)
        entry = {"item_id": self.name, "start": self._periods[0],
                 "target": target if self.target_dim > 1 else target[0]}
        return list(_to_univariate([entry])) if self.to_univariate and self.target_dim > 1 else [entry]


class TablePanel:
    """A user's CSV/TSV/Parquet table as BOOM configurations: one per series and term.

    The table is read by `toto.tables.to_panel` (columns detected unless named). Series are named by their id
    (the file's name for a wide table); the configuration keys are `<series>/<frequency>/<term>`.
    """

    def __init__(self, path: str | Path, timestamp_column: str | None = None, id_column: str | None = None,
                 target_columns: list[str] | None = None, freq: str | None = None) -> None:
        self.path = Path(path)
        self.panel = tables.to_panel(read_table(self.path), timestamp_column, id_column, target_columns, freq)
        names = [self._name(series) for series in self.panel.series]
        if len(set(names)) != len(names):
            raise tables.InputError(f"{self.path}: series ids {names} are not distinct once '/' is replaced")
        self.series = dict(zip(names, self.panel.series))

    def _name(self, series: tables.Series) -> str:
        return self.path.name.split(".")[0] if series.id is None else str(series.id).replace("/", "_")

    def configurations(self, terms: Iterable[Term | str] = tuple(Term)) -> list[Configuration]:
        """Every series at every term in `terms`; refused before any work when a series is too short for one of
        them (`SeriesDataset.required_length`), naming the terms every series is long enough for."""
        wanted = [Term(term) for term in terms]
        configs = [
            Configuration(name, term, {"frequency": series.index.freqstr, "term": "long", "domain": "",
                                       "num_variates": len(series.variates), "type": "table"})
            for name, series in self.series.items() for term in wanted
        ]
        problems = {config.term: problem for config in configs if (problem := self.dataset(config).length_problem)}
        if problems:
            fitting = [term.value for term in wanted if term not in problems]
            advice = f"pass --terms {' '.join(fitting)}" if fitting else "evaluate a table with a longer history"
            raise InputError(f"{self.path}: {next(iter(problems.values()))}; {advice}")
        return configs

    def dataset(self, config: Configuration, to_univariate: bool = False) -> TableSeriesDataset:
        return TableSeriesDataset(self.path / config.series, config.term, to_univariate, self.series[config.series])


def is_table(path: str | Path) -> bool:
    """Whether `--data` names a table file rather than a folder of series folders."""
    return Path(path).name.lower().endswith(TABLE_SUFFIXES)


def series_dataset(data_dir: Path | TablePanel, config: Configuration, to_univariate: bool = False) -> SeriesDataset:
    """The test set of one configuration, with a clear error when its folder is missing or its series too short."""
    if isinstance(data_dir, TablePanel):
        dataset: SeriesDataset = data_dir.dataset(config, to_univariate)
    else:
        path = Path(data_dir) / config.series
        if not path.is_dir():
            raise FileNotFoundError(f"Series folder {path} is missing: {data_dir} must hold one folder per series "
                                    f"(ds-<id>-<freq>), as downloaded from {HUB_REPO}.")
        dataset = SeriesDataset(path, config.term, to_univariate=to_univariate)
    if problem := dataset.length_problem:
        raise InputError(problem)
    return dataset


def write_hub_folder(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Series rows (item_id, start, freq, target) as one `save_to_disk` folder with the hub's field types.

    The writer twin of `SeriesDataset`: BOOM folders hold one (possibly multivariate, variates x time) series,
    GIFT-Eval folders hold many. `freq` must be a period alias ('M', not 'MS').
    """
    inner = datasets.Value("float32")
    multivariate = np.ndim(rows[0]["target"]) == 2
    target_feature = datasets.Sequence(datasets.Sequence(inner)) if multivariate else datasets.Sequence(inner)
    features = datasets.Features({"item_id": datasets.Value("string"), "start": datasets.Value("timestamp[s]"),
                                  "freq": datasets.Value("string"), "target": target_feature})
    columns = {"item_id": [row["item_id"] for row in rows],
               "start": [pd.Timestamp(row["start"]).to_pydatetime() for row in rows],
               "freq": [row["freq"] for row in rows],
               "target": [np.asarray(row["target"], dtype=np.float32).tolist() for row in rows]}
    datasets.Dataset.from_dict(columns, features=features).save_to_disk(str(folder))
