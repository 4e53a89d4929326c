"""Turn a table into series on a regular time grid: the one set of rules for every way a table gets in.

`to_panel` is used by the pandas API and `toto forecast`, by `train.sources.TableSource` (fine-tuning), by
`boom eval --data` (backtests on a user's own table), and its grid rule (`regular_grid`) by the service for the
timestamps of a request. So a CSV is read the same way for training, inference and evaluation:

- columns: the timestamp column is a datetime column, else the column with the most usual timestamp name
  ("timestamp" first, see `TIMESTAMP_NAMES`), else the first text column whose values parse as timestamps. A
  numeric column is a time axis only when named so and only as calendar years (integers 1000-2999) or Unix
  seconds (1973-2286); other numbers are refused rather than read as seconds since 1970.
  The id column is the column with a usual id name, else the single text column. Targets are the remaining
  numeric columns; text columns left over are reported in `Panel.ignored`, and a mostly numeric column with
  stray strings ('n/a', '1,5') is refused, naming the value and row.
- values: NaN is missing; a value beyond `MAX_ABS_VALUE` (or infinite) is refused, since the model computes
  in float32 and would turn it into a missing value or an overflow.
- time: duplicate timestamps are refused (aggregate them first); the frequency is `freq` when given, else
  pandas' inferred frequency, else the most common step; gaps in the grid become NaN (missing), timestamps off
  the grid are refused, and so is a grid mostly made of holes. Timestamps are kept at second resolution, so a
  series may span centuries (yearly data from 1700 to 2008, say).

Whatever a user can get wrong in the table raises `InputError`, whose message says what and how to fix it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

# pandas needs three timestamps to infer a frequency.
MIN_TIME_STEPS = 3
# A grid this many times longer than its rows is mostly holes: more likely a wrong frequency or a stray
# timestamp than real data, and filling it could exhaust memory.
MAX_GRID_PER_ROW = 10
# The model computes in float32 (largest 3.4e38) and its scaler squares values: keep inputs far from overflow.
MAX_ABS_VALUE = 1e30
# Integer time columns: calendar years, or Unix seconds between 1973 and 2286.
YEAR_RANGE = (1000, 2999)
UNIX_SECONDS_RANGE = (10**8, 10**10)
# Timestamps are held at this resolution: wide enough for centuries, fine enough for monitoring data.
TIME_UNIT = "s"

TIMESTAMP_NAMES = (
    "timestamp", "datetime", "date", "time", "ts", "ds", "period", "year", "quarter", "month", "week",
)
ID_NAMES = ("id", "item_id", "unique_id", "series_id", "series", "item")


class InputError(ValueError):
    """The table cannot be read as series as it is; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Series:
    """One (multivariate) series on a regular time grid, as the model will see it."""

    id: object  # the value of the id column, as in the table; None for a wide table
    variates: list[str]  # the target column names, one per row of `values`
    index: pd.DatetimeIndex  # the regular grid at second resolution; `index.freq` is its frequency
    values: np.ndarray  # (variates, time) float64, NaN where missing

    @property
    def interval_seconds(self) -> int:
        """Seconds per step. Exact for fixed frequencies; the mean step for calendar ones such as months."""
        span = self.index[-1] - self.index[0]
        return max(1, round(span.total_seconds() / (len(self.index) - 1)))

    def future_index(self, prediction_length: int) -> pd.DatetimeIndex:
        """The timestamps of the next `prediction_length` steps."""
        return pd.date_range(
            self.index[-1], periods=prediction_length + 1, freq=self.index.freq, unit=TIME_UNIT
        )[1:]


@dataclass(frozen=True)
class Panel:
    """The series of one table, with the column names that a forecast table reuses."""

    series: list[Series]
    timestamp_column: str
    id_column: str | None
    # Columns that were detected as neither time, id nor target, with the reason; callers say so to the user.
    ignored: dict[str, str] = field(default_factory=dict)

    @property
    def form(self) -> str:
        return "long" if self.id_column else "wide"


def to_panel(
    df: pd.DataFrame,
    timestamp_column: str | None = None,
    id_column: str | None = None,
    target_columns: Sequence[str] | None = None,
    freq: str | None = None,
) -> Panel:
    """Validate a wide or long table and put each of its series on a regular time grid.

    Columns left as None are detected as the module docstring says. `freq` (a pandas frequency string such as
    "30min" or "MS") overrides frequency inference.
    """
    if isinstance(df.index, pd.DatetimeIndex):  # a frame indexed by time, as pandas users often have
        df = df.reset_index(names=df.index.name or "timestamp")
    if df.empty:
        raise InputError("the table has no rows")
    df = df.rename(columns=str)
    columns = list(df.columns)
    if len(set(columns)) != len(columns):
        raise InputError(f"the table has duplicate column names: {sorted({c for c in columns if columns.count(c) > 1})}")
    for name, flag in (
        (timestamp_column, "timestamp"),
        (id_column, "id"),
        *((t, "target") for t in target_columns or ()),
    ):
        if name is not None and name not in columns:
            raise InputError(f"the {flag} column {name!r} is not in the table; its columns are {columns}")

    timestamp_column = timestamp_column or _detect_timestamp_column(df)
    timestamps = parse_timestamps(df[timestamp_column], timestamp_column)
    rest = [c for c in columns if c != timestamp_column]
    id_column = id_column or _detect_id_column(df, rest)
    rest = [c for c in rest if c != id_column]
    ignored: dict[str, str] = {}
    if target_columns:
        targets = list(target_columns)
    else:
        targets = [c for c in rest if _is_numeric(df[c])]
        for column in rest:
            if column not in targets:
                if _mostly_numeric(df[column]):
                    raise InputError(f"column {column!r} is not numeric{_non_numeric_hint(df, [column])}: fix"
                                     " those values, or leave the column out with --target-columns")
                ignored[column] = "not numeric"
    if not targets:
        raise InputError(
            f"no numeric column to forecast: the columns besides {timestamp_column!r}"
            f"{f' and {id_column!r}' if id_column else ''} are {rest or 'none'}{_non_numeric_hint(df, rest)}"
        )
    for column in targets:
        if not _is_numeric(df[column]):
            raise InputError(f"target column {column!r} is not numeric{_non_numeric_hint(df, [column])}")
    values = df[targets].astype("float64")
    _check_magnitudes(values)
    values = values.set_index(timestamps)
    if id_column and df[id_column].isna().any():
        raise InputError(
            f"id column {id_column!r} is empty in row {_first_row(df[id_column].isna())}: fill it in"
        )
    groups = values.groupby(df[id_column].to_numpy(), sort=False) if id_column else [(None, values)]
    series = [_regularise(key, group, freq) for key, group in groups]
    return Panel(series=series, timestamp_column=timestamp_column, id_column=id_column, ignored=ignored)


def long_to_wide(
    df: pd.DataFrame,
    variable_column: str,
    value_column: str,
    timestamp_column: str | None = None,
    id_column: str | None = None,
) -> pd.DataFrame:
    """Rows (id, timestamp, variable, value) pivoted to one column per variable, for `to_panel`.

    The timestamp and id columns are detected as in `to_panel` unless named. A repeated (id, timestamp,
    variable) is refused rather than averaged.
    """
    df = df.rename(columns=str)
    missing = [c for c in (variable_column, value_column, timestamp_column, id_column) if c and c not in df.columns]
    if missing:
        raise InputError(f"missing columns {missing}; the table has {list(df.columns)}")
    rest = df.drop(columns=[variable_column, value_column])
    timestamp_column = timestamp_column or _detect_timestamp_column(rest)
    id_column = id_column or _detect_id_column(rest, [c for c in rest.columns if c != timestamp_column])
    keys = [c for c in (id_column, timestamp_column) if c]
    repeated = df.duplicated([*keys, variable_column])
    if repeated.any():
        row = df[repeated].iloc[0]
        raise InputError(
            f"{int(repeated.sum())} repeated ({', '.join([*keys, variable_column])}) row(s), e.g."
            f" {tuple(row[[*keys, variable_column]])} in row {_first_row(repeated)}: keep one value per"
            " timestamp and variable (aggregate them first)"
        )
    wide = df.pivot(index=keys, columns=variable_column, values=value_column)
    wide.columns = [str(c) for c in wide.columns]
    return wide.reset_index()


def parse_frequency(freq: str) -> pd.DateOffset:
    """A pandas offset for `freq`, which must step forward in time."""
    try:
        offset = to_offset(freq) if freq.strip() else None
    except ValueError:
        offset = None
    if offset is None or offset.n <= 0:
        raise InputError(f"{freq!r} is not a pandas frequency; use e.g. '30s', '5min', 'h', 'D', 'W', 'MS'")
    return offset


def infer_frequency(index: pd.DatetimeIndex) -> pd.DateOffset:
    """pandas' inferred frequency or, when gaps defeat it, the most common step (the gaps then become NaN).

    `index` must be sorted, without duplicates, and hold at least `MIN_TIME_STEPS` timestamps.
    """
    inferred = pd.infer_freq(index)
    if inferred:
        return to_offset(inferred)
    return to_offset(pd.Series(index).diff().mode().iloc[0])


def regular_grid(index: pd.DatetimeIndex, freq: str | None = None, where: str = "") -> pd.DatetimeIndex:
    """The regular grid from the first to the last of `index` (sorted), at `freq` or the inferred frequency.

    Refuses duplicate timestamps, too few of them, timestamps off the grid and a grid mostly made of holes;
    `where` ("series 'a': ") prefixes the message.
    """
    duplicated = index[index.duplicated()]
    if len(duplicated):
        raise InputError(
            f"{where}{len(duplicated)} duplicate timestamp(s), e.g. {duplicated[0]}: keep one row per"
            " timestamp (aggregate them, e.g. df.groupby(timestamp).mean()), or name the id column if the"
            " table is long form"
        )
    if len(index) < MIN_TIME_STEPS:
        raise InputError(f"{where}only {len(index)} time step(s); at least {MIN_TIME_STEPS} are needed")
    index = pd.DatetimeIndex(index).as_unit(TIME_UNIT)
    offset = parse_frequency(freq) if freq is not None else infer_frequency(index)
    grid = pd.date_range(index[0], index[-1], freq=offset, unit=TIME_UNIT)
    off_grid = index[~index.isin(grid)]
    if len(off_grid):
        raise InputError(
            f"{where}timestamps do not lie on a regular {offset.freqstr} grid, e.g. {off_grid[0]}: "
            "resample the data or give the frequency with --freq / freq= (e.g. '5min', 'h', 'D', 'MS')"
        )
    if len(grid) > MAX_GRID_PER_ROW * len(index):
        raise InputError(
            f"{where}{len(index)} rows spread over {len(grid)} steps of {offset.freqstr} from {grid[0]} to"
            f" {grid[-1]}: most of the grid would be missing; check the timestamps or give --freq / freq="
        )
    return grid


def parse_timestamps(column: pd.Series, name: str) -> pd.DatetimeIndex:
    """The values of a time column as timestamps at second resolution; anything unparsable is refused."""
    if column.isna().any():
        raise InputError(f"timestamp column {name!r} is empty in row {_first_row(column.isna())}: fill it in")
    if _is_numeric(column):
        return _numeric_timestamps(column, name)
    parsed = _to_datetime(column)
    if parsed.isna().any():
        bad = column[parsed.isna()]
        raise InputError(
            f"timestamp column {name!r} has {len(bad)} value(s) that are not timestamps, e.g. {bad.iloc[0]!r}"
            f" in row {_first_row(parsed.isna())}: write them like '2024-01-01 00:00:00' (ISO 8601), as"
            " years or as Unix seconds, or name the right column with --timestamp-column"
        )
    return pd.DatetimeIndex(parsed).as_unit(TIME_UNIT)


def _numeric_timestamps(column: pd.Series, name: str) -> pd.DatetimeIndex:
    """Integer years or Unix seconds; any other number is not a timestamp we can tell the meaning of."""
    values = column.to_numpy(dtype="float64")
    whole = bool(np.all(values == np.round(values)))
    if whole and YEAR_RANGE[0] <= values.min() and values.max() <= YEAR_RANGE[1]:
        return pd.DatetimeIndex([f"{int(v):04d}-01-01" for v in values]).as_unit(TIME_UNIT)
    if UNIX_SECONDS_RANGE[0] <= values.min() and values.max() <= UNIX_SECONDS_RANGE[1]:
        return pd.DatetimeIndex(pd.to_datetime(values, unit="s")).as_unit(TIME_UNIT)
    raise InputError(
        f"timestamp column {name!r} holds numbers from {values.min():g} to {values.max():g}, which are neither"
        f" years ({YEAR_RANGE[0]}-{YEAR_RANGE[1]}) nor Unix seconds (1973-2286): write them as dates like"
        " '2024-01-01 00:00:00', or name the right column with --timestamp-column"
    )


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _mostly_numeric(column: pd.Series) -> bool:
    """A text column whose values are mostly numbers: a target broken by a few stray strings."""
    present = column.dropna()
    return len(present) > 0 and pd.to_numeric(present, errors="coerce").notna().mean() > 0.5


def _check_magnitudes(values: pd.DataFrame) -> None:
    """Refuse infinite values and values too large for the model's float32 arithmetic."""
    for column in values.columns:
        too_large = ~(values[column].abs() <= MAX_ABS_VALUE) & values[column].notna()
        if too_large.any():
            raise InputError(
                f"column {column!r} holds {float(values[column][too_large].iloc[0]):g} in row {_first_row(too_large)},"
                f" beyond the largest magnitude the model computes with ({MAX_ABS_VALUE:g}, float32):"
                " rescale the column (e.g. to other units) or mark the value missing"
            )


def _non_numeric_hint(df: pd.DataFrame, columns: Sequence[str]) -> str:
    """Point at the first value that stops a column from being numeric, e.g. a stray 'n/a' or '1,5'."""
    for column in columns:
        mask = pd.to_numeric(df[column], errors="coerce").isna() & df[column].notna()
        if mask.any():
            value = df[column][mask].iloc[0]
            return (
                f" (column {column!r} holds non-numeric values such as {value!r} in row {_first_row(mask)})"
            )
    return ""


def _first_row(mask: pd.Series) -> int:
    """1-based position of the first True: the row number in a file, not counting its header."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 1


def _to_datetime(column: pd.Series) -> pd.Series:
    """Parse text timestamps."""
    with warnings.catch_warnings():  # pandas warns when it falls back to parsing element by element
        warnings.simplefilter("ignore", UserWarning)
        parsed = pd.to_datetime(column, errors="coerce")  # fast: one format, inferred from the first value
        if parsed.isna().sum() > column.isna().sum():  # e.g. "2024-03-01" among "2024-03-01 00:30" values
            parsed = pd.to_datetime(column, errors="coerce", format="mixed")
    return parsed


def _looks_like_time(column: pd.Series) -> bool:
    """Whether a numeric column's values are years or Unix seconds (its name must say time as well)."""
    try:
        _numeric_timestamps(column.dropna(), "")
    except InputError:
        return False
    return column.notna().all()


def _detect_timestamp_column(df: pd.DataFrame) -> str:
    """The first datetime column, else the best-named time column, else the first text column that parses."""
    for column in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[column]):
            return column
    by_name = {column.strip().lower(): column for column in reversed(df.columns)}
    for name in TIMESTAMP_NAMES:
        column = by_name.get(name)
        if column is not None and (not _is_numeric(df[column]) or _looks_like_time(df[column])):
            return column
    for column in df.columns:  # the first 100 values are enough to tell; parsing is checked in full later
        head = df[column].head(100)
        if not _is_numeric(head) and head.notna().all() and _to_datetime(head).notna().all():
            return column
    raise InputError(
        f"no timestamp column found among {list(df.columns)}: add one (e.g. 'timestamp' with values like "
        "'2024-01-01 00:00') or name it with --timestamp-column / timestamp_column="
    )


def _detect_id_column(df: pd.DataFrame, candidates: list[str]) -> str | None:
    """A column with a usual id name, else the single text column; a wide table has neither.

    A column of mostly numbers with a few stray strings ("n/a", "1,5") is a broken target, not an id.
    """
    for column in candidates:
        if column.strip().lower() in ID_NAMES:
            return column
    text = [c for c in candidates if not _is_numeric(df[c]) and not _mostly_numeric(df[c])]
    if len(text) > 1:
        raise InputError(
            f"several non-numeric columns {text}: name the series id column with --id-column / id_column="
        )
    return text[0] if text else None


def _regularise(key: object, values: pd.DataFrame, freq: str | None) -> Series:
    """Sort one series by time and reindex it to its regular grid (`regular_grid`), gaps becoming NaN."""
    where = f"series {key!r}: " if key is not None else ""
    values = values.sort_index()
    grid = regular_grid(values.index, freq, where)
    values = values.reindex(grid)
    empty = [c for c in values.columns if values[c].isna().all()]
    if empty:
        raise InputError(
            f"{where}column(s) {empty} have no values: drop them or name targets with --target-columns"
        )
    return Series(id=key, variates=list(values.columns), index=grid, values=values.to_numpy().T.copy())
