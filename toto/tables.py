"""Tables in and out: a table into series on a regular time grid (the one set of rules for every way a table gets
in), series into the model's tensors, and forecasts back into a table. It knows nothing of models: the pipeline
(`toto.pipeline.ForecastPipeline.predict_df`) calls it on both sides of a forecast.

`to_panel` is used by the pandas API and `toto forecast`, by `train.sources.TableSource` (fine-tuning), by
`boom eval --data` (backtests on a user's own table), and its grid rule (`regular_grid`) by the service for the
timestamps of a request. So a CSV is read the same way for training, inference and evaluation:

- columns: the timestamp column is a datetime column, else the column with the most usual timestamp name
  ("timestamp" first, see `TIMESTAMP_NAMES`), else the first text column whose values parse as timestamps. A
  numeric column is a time axis only when named so and only as calendar years (integers 1000-2999) or Unix
  time of the years 1973-2286, whose magnitude tells its unit (seconds, milliseconds, microseconds or
  nanoseconds); other numbers are refused rather than read as seconds since 1970.
  The id column is the column with a usual id name, else the single text column. Targets are the remaining
  numeric columns; text columns left over are reported in `Panel.ignored`, and a mostly numeric column with
  stray strings ('n/a', '1,5') is refused, naming the value and row.
- values: NaN is missing; a value beyond `MAX_ABS_VALUE` (or infinite) is refused, since the model computes
  in float32 and would turn it into a missing value or an overflow.
- time: duplicate timestamps are refused (aggregate them first); the frequency is `freq` when given, else
  pandas' inferred frequency, else the most common step; gaps in the grid become NaN (missing), timestamps off
  the grid are refused, and so is a grid mostly made of holes (its length is bounded before it is built).
  Timestamps are kept at second resolution, so a series may span centuries (years 1 to 9999), and steps below
  one second are refused. Text timestamps whose UTC offsets differ (a switch to or from daylight saving time)
  are read in UTC. A series given by its `start` and `freq` must start on one of the frequency's steps.

Whatever a user can get wrong in the table raises `InputError`, whose message says what and how to fix it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset, Tick

from toto.data.util.dataset import MaskedTimeseries, stack_ragged, unobserved_in_context
from toto.validation import MAX_ABS_VALUE, MIN_TIME_STEPS, InputError

# A grid this many times longer than its rows is mostly holes: more likely a wrong frequency or a stray
# timestamp than real data, and filling it could exhaust memory.
MAX_GRID_PER_ROW = 10
# Integer time columns: calendar years, or Unix time of the years 1973 to 2286 in one of four units (nanoseconds to
# 2255, within int64). The units' ranges do not overlap, so the magnitude of a column tells its unit without a guess.
YEAR_RANGE = (1000, 2999)
UNIX_TIME_RANGES: dict[Literal["s", "ms", "us", "ns"], tuple[int, int]] = {
    "s": (10**8, 10**10), "ms": (10**11, 10**13), "us": (10**14, 10**16), "ns": (10**17, 9 * 10**18),
}
# Timestamps are held at this resolution: wide enough for years 1 to 9999, fine enough for monitoring data.
TIME_UNIT: Literal["s"] = "s"
WHOLE_SECONDS = "timestamps are held to the second, and steps below one second are not supported"
# Calendar frequencies repeat within this many steps (business days within a week, months within four years), so the
# shortest and the longest of them bound a grid's length before it is built.
CALENDAR_PROBE_STEPS = 64

TIMESTAMP_NAMES = (
    "timestamp", "datetime", "date", "time", "ts", "ds", "period", "year", "quarter", "month", "week",
)
ID_NAMES = ("id", "item_id", "unique_id", "series_id", "series", "item")


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


@dataclass(frozen=True)
class Columns:
    """The columns of a table, read by the one set of rules (module docstring): its timestamps parsed, the id column
    (None for a wide table), the target values (float64, checked) and the text columns it leaves out."""

    frame: pd.DataFrame  # the table, its column names as strings
    timestamp_column: str
    timestamps: pd.DatetimeIndex
    id_column: str | None
    values: pd.DataFrame  # the target columns, float64, indexed like `frame`
    ignored: dict[str, str]

    def groups(self) -> list[tuple[object, np.ndarray]]:
        """(id, positions of its rows in the table) of every series, in order of first appearance."""
        if self.id_column is None:
            return [(None, np.arange(len(self.frame)))]
        ids = self.frame[self.id_column].to_numpy()
        return [(key, np.asarray(rows)) for key, rows in pd.Series(np.arange(len(ids))).groupby(ids, sort=False)]


def read_columns(
    df: pd.DataFrame,
    timestamp_column: str | None = None,
    id_column: str | None = None,
    target_columns: Sequence[str] | None = None,
) -> Columns:
    """Find and check a table's timestamp, id and target columns (those left as None are detected)."""
    if isinstance(df.index, pd.DatetimeIndex):  # a frame indexed by time, as pandas users often have
        df = df.reset_index(names=df.index.name or "timestamp")
    if df.empty:
        raise InputError("the table has no rows")
    df = df.rename(columns=str).reset_index(drop=True)
    columns = list(df.columns)
    if len(set(columns)) != len(columns):
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        raise InputError(f"the table has duplicate column names: {repeated}")
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
    if id_column and df[id_column].isna().any():
        raise InputError(
            f"id column {id_column!r} is empty in row {_first_row(df[id_column].isna())}: fill it in"
        )
    return Columns(df, timestamp_column, timestamps, id_column, values, ignored)


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
    table = read_columns(df, timestamp_column, id_column, target_columns)
    values = table.values.set_index(table.timestamps)
    series = [_regularise(key, values.iloc[rows], freq) for key, rows in table.groups()]
    return Panel(series=series, timestamp_column=table.timestamp_column, id_column=table.id_column,
                 ignored=table.ignored)


@dataclass(frozen=True)
class PlacedSeries:
    """One series of a table whose rows may be irregular, on the regular grid its rows were placed on.

    `grid` holds, at each step, the mean of the rows placed there (NaN for a gap); `rows` are the series' rows in
    the table, ordered by time (stable), and `slot_of_row` the grid step each of them was placed on."""

    grid: Series
    rows: np.ndarray  # (rows,) positions in the table, by time
    slot_of_row: np.ndarray  # (rows,) grid step of each
    gaps: int  # grid steps without a row
    repeated: int  # rows sharing their step with an earlier row (same or snapped timestamps)
    off_grid: int  # rows whose timestamp was moved to the nearest step
    backwards: int  # rows whose timestamp is earlier than the row before them in the table

    def summary(self) -> str:
        """What the placing did, in one line."""
        return _placement_summary([self], len(self.rows))


@dataclass(frozen=True)
class Placement:
    """Every series of a table placed on a grid (`place_rows`)."""

    series: list[PlacedSeries]
    columns: Columns

    @property
    def gaps(self) -> int:
        return sum(s.gaps for s in self.series)

    @property
    def repeated(self) -> int:
        return sum(s.repeated for s in self.series)

    @property
    def off_grid(self) -> int:
        return sum(s.off_grid for s in self.series)

    @property
    def backwards(self) -> int:
        return sum(s.backwards for s in self.series)

    def summary(self) -> str:
        """What the placing did, in one line."""
        return _placement_summary(self.series, len(self.columns.frame))


def _placement_summary(series: Sequence[PlacedSeries], rows: int) -> str:
    steps = {str(s.grid.index.freqstr) for s in series}
    what = [f"{rows:,} rows on a {', '.join(sorted(steps))} grid"]
    for count, text in ((sum(s.gaps for s in series), "missing steps"),
                        (sum(s.repeated for s in series), "repeated timestamps"),
                        (sum(s.off_grid for s in series), "off-grid rows moved to the nearest step"),
                        (sum(s.backwards for s in series), "steps back in time")):
        if count:
            what.append(f"{count:,} {text}")
    return "; ".join(what)


def place_rows(
    df: pd.DataFrame,
    timestamp_column: str | None = None,
    id_column: str | None = None,
    target_columns: Sequence[str] | None = None,
    freq: str | None = None,
) -> Placement:
    """Put every row of a table on a regular grid, as real metric exports need: gaps, repeated timestamps, steps off
    the grid and a clock that moves back are all allowed, unlike `to_panel`.

    The grid of each series starts at its first timestamp and steps at `freq`, else at the dominant step between
    its sorted timestamps (the most common one). When that grid would be mostly empty (more than twice as many steps
    as distinct timestamps: irregular sampling), the step is the median gap instead, so that the model reads filled
    patches. Each row is placed on its nearest step; a step holding several rows holds their mean.
    """
    table = read_columns(df, timestamp_column, id_column, target_columns)
    seconds = table.timestamps.as_unit(TIME_UNIT).asi8  # whole seconds, the table's resolution
    placed = []
    for key, rows in table.groups():
        order = rows[np.argsort(seconds[rows], kind="stable")]
        times = seconds[order]
        where = f"series {key!r}: " if key is not None else ""
        step = _placement_step(times, freq, where)
        slot = np.round((times - times[0]) / step).astype(np.int64)
        length = int(slot[-1]) + 1
        if length > MAX_GRID_PER_ROW * len(times):
            raise InputError(f"{where}{len(times)} rows spread over {length} steps of {step} s: most of the grid"
                             " would be missing; check the timestamps or give --freq / freq=")
        grid_values = mean_per_step(table.values.to_numpy()[order].T, slot, length)
        index = pd.date_range(pd.Timestamp(int(times[0]), unit="s"), periods=length, freq=pd.Timedelta(seconds=step),
                              unit=TIME_UNIT)
        grid = Series(id=key, variates=list(table.values.columns), index=index, values=grid_values)
        distinct = len(np.unique(slot))
        placed.append(PlacedSeries(grid, order, slot, gaps=length - distinct, repeated=len(slot) - distinct,
                                   off_grid=int((times - times[0] != slot * step).sum()),
                                   backwards=int((np.diff(seconds[rows]) < 0).sum())))
    return Placement(placed, table)


def mean_per_step(values: np.ndarray, steps: np.ndarray, length: int) -> np.ndarray:
    """(variates, rows) values at grid `steps` -> (variates, length): the mean of each step's observed values, NaN
    where it has none."""
    sums = np.stack([np.bincount(steps, np.nan_to_num(row), minlength=length) for row in values])
    counts = np.stack([np.bincount(steps, np.isfinite(row), minlength=length) for row in values])
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _placement_step(times: np.ndarray, freq: str | None, where: str) -> int:
    """The grid step in seconds of sorted Unix-second `times` (see `place_rows`)."""
    if freq is not None:
        offset = parse_frequency(freq)
        try:
            return int(offset.nanos // 10**9)
        except ValueError as error:
            raise InputError(f"{where}--freq {freq!r} is a calendar frequency; detection places rows on a fixed step:"
                             " give one in seconds, minutes, hours or days (e.g. '5min', 'h', 'D')") from error
    distinct = np.unique(times)
    if len(distinct) < MIN_TIME_STEPS:
        raise InputError(f"{where}only {len(distinct)} distinct timestamp(s); at least {MIN_TIME_STEPS} are needed")
    gaps = np.diff(distinct)
    values, counts = np.unique(gaps, return_counts=True)
    step = int(values[np.argmax(counts)])
    if (distinct[-1] - distinct[0]) / step + 1 > 2 * len(distinct):
        step = int(np.median(gaps))
    return max(step, 1)


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


def parse_frequency(freq: str) -> BaseOffset:
    """A pandas offset for `freq`, which must step forward in time by whole seconds (`TIME_UNIT`)."""
    try:
        offset = to_offset(freq) if freq.strip() else None
    except ValueError:
        offset = None
    if offset is None or offset.n <= 0:
        raise InputError(f"{freq!r} is not a pandas frequency; use e.g. '30s', '5min', 'h', 'D', 'W', 'MS'")
    if isinstance(offset, Tick) and offset.nanos % 10**9:
        raise InputError(f"{freq!r} is finer than a second, but {WHOLE_SECONDS}: aggregate the values to steps of"
                         " 1 s or more (e.g. '1s', '5s', 'min')")
    return offset


def infer_frequency(index: pd.DatetimeIndex) -> BaseOffset:
    """pandas' inferred frequency or, when gaps defeat it, the most common step (the gaps then become NaN).

    `index` must be sorted, without duplicates, and hold at least `MIN_TIME_STEPS` timestamps.
    """
    inferred = pd.infer_freq(index)
    if inferred:
        return to_offset(inferred)
    return to_offset(pd.Series(index).diff().mode().iloc[0])


def regular_grid(index: pd.DatetimeIndex, freq: str | None = None, where: str = "") -> pd.DatetimeIndex:
    """The regular grid from the first to the last of `index` (sorted), at `freq` or the inferred frequency.

    Refuses duplicate timestamps, too few of them, fractions of a second, timestamps off the grid and a grid mostly
    made of holes; `where` ("series 'a': ") prefixes the message.
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
    index = whole_seconds(pd.DatetimeIndex(index))
    offset = parse_frequency(freq) if freq is not None else infer_frequency(index)
    grid = _bounded_grid(index, offset, where)
    off_grid = index[~index.isin(grid)]
    if len(off_grid):
        raise InputError(
            f"{where}timestamps do not lie on a regular {offset.freqstr} grid, e.g. {off_grid[0]}: "
            "resample the data or give the frequency with --freq / freq= (e.g. '5min', 'h', 'D', 'MS')"
        )
    return grid


def _bounded_grid(index: pd.DatetimeIndex, offset: BaseOffset, where: str) -> pd.DatetimeIndex:
    """The steps of `offset` from the first to the last of `index`. More than `MAX_GRID_PER_ROW` per row are refused
    before they are built: a few rows years apart at 1-second steps would otherwise take gigabytes.

    A fixed step gives the length exactly. A calendar frequency's shortest and longest steps (over
    `CALENDAR_PROBE_STEPS` of them) bound it; between the bounds, at most the limit is built to count the steps.
    """
    first, last = index[0], index[-1]
    limit = MAX_GRID_PER_ROW * len(index)
    if isinstance(offset, Tick):
        shortest = longest = offset.nanos // 10**9
    else:
        try:
            probe = pd.date_range(first, periods=CALENDAR_PROBE_STEPS + 1, freq=offset, unit=TIME_UNIT)
        except (ValueError, OverflowError):  # calendar steps end at the year 9999, so the grid is shorter than this
            return pd.date_range(first, last, freq=offset, unit=TIME_UNIT)
        steps = np.diff(probe.asi8)
        shortest, longest = int(steps.min()), int(steps.max())
    span = int(index.asi8[-1] - index.asi8[0])  # seconds
    fewest, most = span // longest + 1, span // shortest + 1
    if most <= limit:
        return pd.date_range(first, last, freq=offset, unit=TIME_UNIT)
    if fewest <= limit:  # a calendar frequency: count its steps, building no more than the limit
        grid = pd.date_range(first, periods=limit + 1, freq=offset, unit=TIME_UNIT)
        if grid[-1] > last:
            return grid[grid <= last]
        fewest = limit + 1
    steps_text = str(fewest) if fewest == most else f"at least {fewest}"
    raise InputError(
        f"{where}{len(index)} rows spread over {steps_text} steps of {offset.freqstr} from {first} to {last}: most"
        f" of the grid would be missing (at most {MAX_GRID_PER_ROW} steps per row); check the timestamps or give"
        " --freq / freq="
    )


def grid_from_start(start: datetime | str, length: int, freq: str) -> pd.DatetimeIndex:
    """`length` steps of `freq` from `start` (a timestamp, to the second), which must be one of the frequency's steps.

    pandas would move it silently: a Saturday to the next business day for "B", a Monday to the Friday after for
    "W-FRI", the 15th to the next 1st for "MS". A series given by its timestamps is refused when they are off the
    grid (`regular_grid`); one given by its start is too.
    """
    offset = parse_frequency(freq)
    first = whole_seconds(_one_index([pd.Timestamp(start)]))[0]
    if not offset.is_on_offset(first):
        raise InputError(
            f"start {first} is a {first.day_name()}, not on the {offset.freqstr} grid: start on one of its steps,"
            f" e.g. {offset.rollback(first)} or {offset.rollforward(first)}"
        )
    return pd.date_range(first, periods=length, freq=offset, unit=TIME_UNIT)


def parse_timestamps(column: pd.Series, name: str) -> pd.DatetimeIndex:
    """The values of a time column (text, datetimes or numbers) as timestamps at second resolution, years 1 to 9999;
    anything unparsable or finer than a second is refused."""
    if column.isna().any():
        raise InputError(f"timestamp column {name!r} is empty in row {_first_row(column.isna())}: fill it in")
    if _is_numeric(column):
        return whole_seconds(_numeric_timestamps(column, name))
    parsed = _to_datetime(column)
    if parsed.isna().any():
        unparsed = pd.Series(parsed.isna(), index=column.index)
        bad = column[unparsed]
        raise InputError(
            f"timestamp column {name!r} has {len(bad)} value(s) that are not timestamps, e.g. {bad.iloc[0]!r}"
            f" in row {_first_row(unparsed)}: write them like '2024-01-01 00:00:00' (ISO 8601), as years or as Unix"
            " seconds, or name the right column with --timestamp-column"
        )
    return whole_seconds(parsed)


def whole_seconds(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """`index` at second resolution (`TIME_UNIT`); a timestamp with a fraction of a second is refused rather than
    moved to the second before it, which would make the steps of sub-second data look like duplicates."""
    seconds = index.as_unit(TIME_UNIT)
    fraction = np.asarray(index != seconds)
    if fraction.any():
        raise InputError(
            f"timestamp {index[fraction][0]} has a fraction of a second, but {WHOLE_SECONDS}: aggregate the values to"
            " steps of 1 s or more (e.g. df.resample('1s', on=timestamp_column).mean()), or round the timestamps"
            " to whole seconds"
        )
    return seconds


def _numeric_timestamps(column: pd.Series, name: str) -> pd.DatetimeIndex:
    """Integer years, or Unix time in the unit its magnitude names (`UNIX_TIME_RANGES`); any other number is not a
    timestamp we can tell the meaning of."""
    values = column.to_numpy()
    low, high = values.min(), values.max()
    if np.all(values == np.round(values)) and YEAR_RANGE[0] <= low and high <= YEAR_RANGE[1]:
        return pd.DatetimeIndex([f"{int(v):04d}-01-01" for v in values]).as_unit(TIME_UNIT)
    for unit, (start, end) in UNIX_TIME_RANGES.items():
        if start <= low and high <= end:
            return pd.DatetimeIndex(pd.to_datetime(column, unit=unit))
    raise InputError(
        f"timestamp column {name!r} holds numbers from {low:g} to {high:g}, which are neither years"
        f" ({YEAR_RANGE[0]}-{YEAR_RANGE[1]}) nor Unix time of the years 1973-2286 (seconds, milliseconds,"
        " microseconds or nanoseconds, told apart by their magnitude): write them as dates like"
        f" '2024-01-01 00:00:00' (e.g. pd.to_datetime(df[{name!r}], unit='s')), or name the right column with"
        " --timestamp-column"
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


def _to_datetime(column: pd.Series) -> pd.DatetimeIndex:
    """Parse text (or datetime) timestamps, NaT where a value is not one.

    Timestamps with different UTC offsets (a switch to or from daylight saving time) are read in UTC; dates beyond
    pandas' nanosecond range (1677-2262) are parsed one by one, which gives them a coarser unit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pandas falls back to parsing element by element
        warnings.simplefilter("ignore", FutureWarning)  # mixed UTC offsets: read in UTC below
        parsed = pd.to_datetime(column, errors="coerce")  # fast: one format, inferred from the first value
        if parsed.isna().sum() > column.isna().sum():  # e.g. "2024-03-01" among "2024-03-01 00:30" values
            parsed = pd.to_datetime(column, errors="coerce", format="mixed")
    unparsed = column[parsed.isna() & column.notna()]
    if len(unparsed) and _timestamp(unparsed.iloc[0]) is not None:  # a date beyond 1677-2262
        return _one_index([_timestamp(value) for value in column])
    if parsed.dtype == object:  # timestamps with different UTC offsets (a daylight saving switch): read in UTC
        _utc_offsets(list(parsed.dropna()))
        return pd.DatetimeIndex(pd.to_datetime(parsed, utc=True))
    return pd.DatetimeIndex(parsed)


def _timestamp(value: str | datetime) -> pd.Timestamp | None:
    """One value as a timestamp (None if it is none), at the unit its date needs: seconds beyond 1677-2262."""
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    return None if pd.isna(stamp) else stamp


def _utc_offsets(stamps: Sequence[datetime]) -> set[timedelta | None]:
    """The UTC offsets of `stamps` (None: no offset), refused when some have one and others not: the clock of those
    is unknown."""
    offsets = {s.utcoffset() for s in stamps}
    if None in offsets and len(offsets) > 1:
        naive = next(s for s in stamps if s.tzinfo is None)
        aware = next(s for s in stamps if s.tzinfo is not None)
        raise InputError(f"some timestamps have a UTC offset and others do not, e.g. {aware} and {naive}: give"
                         " all of them with their offset, or none")
    return offsets


def _one_index(stamps: Sequence[datetime | None]) -> pd.DatetimeIndex:
    """Timestamps parsed one by one (None where a value is not one) as one index at microsecond resolution (years 1
    to 9999), in UTC when their UTC offsets differ."""
    present = [pd.Timestamp(s) for s in stamps if s is not None]
    offsets = _utc_offsets(present)
    utc = np.array([np.datetime64("NaT") if s is None else _utc_wall_time(pd.Timestamp(s)) for s in stamps],
                   dtype="datetime64[us]")
    index = pd.DatetimeIndex(utc)
    if None in offsets or not present:
        return index
    return index.tz_localize("UTC").tz_convert(present[0].tzinfo if len(offsets) == 1 else "UTC")


def _utc_wall_time(stamp: pd.Timestamp) -> np.datetime64:
    """A timestamp's time in UTC without its zone (a naive one as it is), at microsecond resolution."""
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.as_unit("us").asm8


def _looks_like_time(column: pd.Series) -> bool:
    """Whether a numeric column's values are years or Unix time (its name must say time as well)."""
    if not column.notna().all():
        return False
    try:
        _numeric_timestamps(column, "")
    except InputError:
        return False
    return True


def _detect_timestamp_column(df: pd.DataFrame) -> str:
    """The first datetime column, else the best-named time column, else the first text column that parses.

    A numeric column named as time whose numbers are no time we can read is refused with what they should be, rather
    than with "no timestamp column", when no other column is found.
    """
    for column in df.columns:
        if pd.api.types.is_datetime64_any_dtype(df[column]):
            return column
    by_name = {column.strip().lower(): column for column in reversed(df.columns)}
    unreadable = None
    for name in TIMESTAMP_NAMES:
        named = by_name.get(name)
        if named is not None and (not _is_numeric(df[named]) or _looks_like_time(df[named])):
            return named
        unreadable = unreadable or named
    for column in df.columns:  # the first 100 values are enough to tell; parsing is checked in full later
        head = df[column].head(100)
        if not _is_numeric(head) and head.notna().all() and _to_datetime(head).notna().all():
            return column
    if unreadable is not None:
        parse_timestamps(df[unreadable], unreadable)  # raises: says what its values are not
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
    grid = regular_grid(pd.DatetimeIndex(values.index), freq, where)
    values = values.reindex(grid)
    empty = [c for c in values.columns if values[c].isna().all()]
    if empty:
        raise InputError(
            f"{where}column(s) {empty} have no values: drop them or name targets with --target-columns"
        )
    return Series(id=key, variates=list(values.columns), index=grid, values=values.to_numpy().T.copy())


def columns_to_read(target_columns: Sequence[str] | None, exogenous_columns: Sequence[str]) -> list[str] | None:
    """The value columns to read from a table: the targets and the covariates (None: every numeric column)."""
    if not target_columns:
        return None
    return [*target_columns, *(c for c in exogenous_columns if c not in target_columns)]


def target_variates(series: Series, exogenous: Sequence[str]) -> list[str]:
    """The variates of `series` that are forecast: all but the known-future covariates."""
    return [name for name in series.variates if name not in exogenous]


def panel_inputs(batch: Sequence[Series], context_length: int, exogenous: Sequence[str] = ()) -> MaskedTimeseries:
    """Cut each series to its last `context_length` steps, left-pad them with NaN (unobserved) to a common
    length and stack them for the model, targets first and then the covariates named in `exogenous`."""
    values = []
    for series in batch:
        order = [*target_variates(series, exogenous), *exogenous]
        rows = [series.variates.index(name) for name in order]
        window = series.values[rows, -context_length:]
        if empty := unobserved_in_context(window, order, context_length):
            where = f"series {series.id!r}: " if series.id is not None else ""
            raise InputError(
                f"{where}{empty} have no values in the last {context_length} steps: raise the context length"
                " or drop them"
            )
        values.append(window)
    inputs = stack_ragged(
        values,
        time_interval_seconds=[s.interval_seconds for s in batch],
        end_timestamp_seconds=[int(s.index[-1].timestamp()) for s in batch],
    )
    return inputs._replace(num_exogenous_variables=len(exogenous))


def future_covariates(panel: Panel, future: Panel | None, exogenous: Sequence[str],
                      prediction_length: int) -> list[np.ndarray]:
    """Each series' (covariates, prediction_length) future values from `future`, checked to cover the horizon."""
    if not exogenous:
        return []
    missing = [c for c in exogenous if c not in panel.series[0].variates]
    if missing:
        raise InputError(
            f"exogenous column(s) {missing} are not in the table; its columns are {panel.series[0].variates}")
    if future is None:
        raise InputError(f"exogenous_columns {list(exogenous)} need future_df: their values at the forecast timestamps")
    by_id = {s.id: s for s in future.series}
    out = []
    for series in panel.series:
        where = f"series {series.id!r}: " if series.id is not None else ""
        if series.id not in by_id:
            raise InputError(f"{where}future_df has no rows for this series: give its covariates' future values")
        known = by_id[series.id]
        frame = pd.DataFrame(known.values.T, index=known.index, columns=known.variates)
        horizon = series.future_index(prediction_length)
        values = frame.reindex(horizon)[list(exogenous)]
        if values.isna().any().any():
            first = values.index[values.isna().any(axis=1)][0]
            raise InputError(
                f"{where}future_df lacks covariate values at {first} (it needs {list(exogenous)} at all "
                f"{prediction_length} timestamps from {horizon[0]} to {horizon[-1]})"
            )
        out.append(values.to_numpy(dtype=np.float32).T)
    return out


def forecast_rows(panel: Panel, batch: Sequence[Series], columns: Mapping[str, np.ndarray], prediction_length: int,
                  exogenous: Sequence[str] = ()) -> list[pd.DataFrame]:
    """The tidy forecast table of `batch` (series of `panel`): one row per (series, target variate, future
    timestamp), with the id column (long tables), "variate", the timestamp column and one column per entry of
    `columns` (each (batch, targets, horizon))."""
    frames = []
    for row, series in enumerate(batch):
        future_index = series.future_index(prediction_length)
        for v, variate in enumerate(target_variates(series, exogenous)):
            frame: dict[str, object] = {panel.id_column: series.id} if panel.id_column else {}
            frame |= {"variate": variate, panel.timestamp_column: future_index}
            frame |= {name: value[row, v] for name, value in columns.items()}
            frames.append(pd.DataFrame(frame))
    return frames


def quantile_columns(forecast: pd.DataFrame) -> list[str]:
    """The quantile columns of a forecast table ("0.1", "0.5", ...), from the lowest level to the highest."""
    levels = [c for c in forecast.columns if c.replace(".", "", 1).isdigit() and 0 < float(c) < 1]
    return sorted(levels, key=float)
