"""`toto.tables`, the one set of rules that turns a table into series for the CLI, predict_df, training
(`TableSource`) and backtests: time columns (years, Unix seconds, names), long centuries of data, duplicates, gaps,
magnitudes and ignored columns, and that training and inference read the same file the same way."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("pandas", reason=missing("cli"))
pytest.importorskip("lightning", reason=missing("train"))

import importlib.util
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from toto.tables import InputError, grid_from_start, long_to_wide, place_rows, to_panel
from train.sources import DataSourceError, TableSource

STATSMODELS_DATA = Path(importlib.util.find_spec("statsmodels").origin).parent / "datasets"


def sunspots() -> pd.DataFrame:
    """Yearly sunspot activity 1700-2008 (statsmodels): an integer YEAR column and one value column."""
    return pd.read_csv(STATSMODELS_DATA / "sunspots" / "sunspots.csv")


def test_integer_year_column_spanning_three_centuries_is_yearly() -> None:
    table = sunspots()
    assert table["YEAR"].dtype.kind == "i" and (table["YEAR"].min(), table["YEAR"].max()) == (1700, 2008)

    panel = to_panel(table)

    (series,) = panel.series
    assert panel.timestamp_column == "YEAR" and series.variates == ["SUNACTIVITY"]
    assert series.index[0] == pd.Timestamp("1700-01-01") and series.index[-1] == pd.Timestamp("2008-01-01")
    assert series.index.freqstr.startswith("YS") and len(series.index) == 309
    assert abs(series.interval_seconds - 365.2425 * 86400) < 86400  # a year, not a second
    assert list(series.future_index(2)) == [pd.Timestamp("2009-01-01"), pd.Timestamp("2010-01-01")]
    np.testing.assert_array_equal(series.values[0], table["SUNACTIVITY"].to_numpy())


def test_year_strings_over_centuries_do_not_overflow() -> None:
    table = sunspots().assign(YEAR=lambda t: t["YEAR"].astype(str) + "-01-01")
    (series,) = to_panel(table).series
    assert len(series.index) == 309 and series.interval_seconds > 3e7


def test_unix_seconds_and_unreadable_numbers() -> None:
    seconds = pd.DataFrame({"ts": 1_700_000_000 + 60 * np.arange(20), "cpu": np.linspace(0, 1, 20)})
    (series,) = to_panel(seconds).series
    assert series.index.freqstr == "min" and series.index[0] == pd.Timestamp(1_700_000_000, unit="s")
    steps = pd.DataFrame({"time": np.arange(20), "cpu": np.linspace(0, 1, 20)})  # step numbers, not a date
    for detected in (None, "time"):  # not silently taken as seconds since 1970
        with pytest.raises(InputError, match="'time' holds numbers from 0 to 19, which are neither years .* nor Unix"
                                             " time .* unit="):
            to_panel(steps, timestamp_column=detected)


def test_a_numeric_column_before_timestamp_is_not_the_time_axis() -> None:
    table = pd.DataFrame({
        "period": [1, 2, 3, 4], "timestamp": pd.date_range("2024-01-01", periods=4, freq="D").astype(str),
        "cpu": [1.0, 2.0, 3.0, 4.0],
    })
    panel = to_panel(table)
    assert panel.timestamp_column == "timestamp"
    assert panel.series[0].variates == ["period", "cpu"]


def test_duplicates_gaps_and_off_grid_timestamps() -> None:
    days = pd.date_range("2024-01-01", periods=10, freq="D")
    table = pd.DataFrame({"timestamp": days, "cpu": np.arange(10.0)})
    (series,) = to_panel(table.drop(index=[3, 4])).series
    assert len(series.index) == 10 and np.isnan(series.values[0, 3:5]).all()
    with pytest.raises(InputError, match="1 duplicate timestamp"):
        to_panel(pd.concat([table, table.iloc[[2]]]))
    with pytest.raises(InputError, match="not lie on a regular D grid"):
        to_panel(table.assign(timestamp=days.insert(5, days[4] + pd.Timedelta("6h"))[:10]))
    with pytest.raises(InputError, match="'' is not a pandas frequency"):
        to_panel(table, freq="")


def test_bad_values_are_refused_and_text_columns_named() -> None:
    days = pd.date_range("2024-01-01", periods=4, freq="D")
    with pytest.raises(InputError, match=r"column 'cpu' is not numeric \(.*'n/a' in row 2\)"):
        to_panel(pd.DataFrame({"timestamp": days, "cpu": ["1.0", "n/a", "3", "4"], "mem": [1.0, 2, 3, 4]}))
    with pytest.raises(InputError, match=r"column 'cpu' holds 1e\+308 in row 3, beyond .* float32"):
        to_panel(pd.DataFrame({"timestamp": days, "cpu": [1.0, 2.0, 1e308, 4.0]}))
    with pytest.raises(InputError, match=r"column 'cpu' holds inf"):
        to_panel(pd.DataFrame({"timestamp": days, "cpu": [1.0, np.inf, 3.0, 4.0]}))
    with pytest.raises(InputError, match=r"\['cpu'\] have no values"):
        to_panel(pd.DataFrame({"timestamp": days, "cpu": [np.nan] * 4}))
    panel = to_panel(pd.DataFrame({"host": ["a"] * 4, "timestamp": days, "note": ["x", "y", "z", "w"],
                                   "cpu": [1.0, 2, 3, 4]}), id_column="host")
    assert panel.ignored == {"note": "not numeric"} and panel.series[0].variates == ["cpu"]


def test_long_tables_pivot_without_averaging_repeats() -> None:
    days = pd.date_range("2024-01-01", periods=3, freq="D")
    long = pd.DataFrame({"item": ["a"] * 6, "timestamp": list(days) * 2, "metric": ["cpu"] * 3 + ["mem"] * 3,
                         "value": np.arange(6.0)})
    wide = long_to_wide(long, "metric", "value")
    assert list(wide.columns) == ["item", "timestamp", "cpu", "mem"]
    with pytest.raises(InputError, match=r"1 repeated \(item, timestamp, metric\) row"):
        long_to_wide(pd.concat([long, long.iloc[[0]]]), "metric", "value")


def test_training_and_inference_read_the_same_csv_the_same_way(tmp_path: Path) -> None:
    hours = pd.date_range("2024-01-01", periods=30, freq="h")
    table = pd.DataFrame({"host": ["a"] * 30 + ["b"] * 30, "timestamp": list(hours) * 2,
                          "cpu": np.sin(np.arange(60.0)), "region": "eu"}).drop(index=[5, 6, 40])  # gaps
    path = tmp_path / "hosts.csv"
    table.to_csv(path, index=False)
    panel = to_panel(pd.read_csv(path), id_column="host")
    records = TableSource(str(path), id_column="host").load()
    assert [r.name for r in records] == [f"{path}:{s.id}" for s in panel.series]
    for record, series in zip(records, panel.series):
        np.testing.assert_array_equal(record.target, series.values.astype(np.float32))
    duplicated = tmp_path / "duplicated.csv"
    pd.concat([table, table.iloc[[0]]]).to_csv(duplicated, index=False)
    with pytest.raises(DataSourceError, match=r"duplicated\.csv: series 'a': 1 duplicate timestamp"):
        TableSource(str(duplicated), id_column="host").load()


def _peak_bytes(call: Callable[[], object]) -> tuple[BaseException | None, int]:
    """What `call` raised (None if nothing) and the peak of the memory Python allocated meanwhile."""
    tracemalloc.start()
    try:
        call()
    except Exception as error:  # noqa: BLE001 - returned for the test to check
        return error, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return None, 0


def test_a_grid_mostly_of_holes_is_refused_before_it_is_built() -> None:
    # Three timestamps over two years, one second apart at first: 63 million steps of 1 s, which pandas took 3.4 GB
    # to build before the size was checked.
    seconds = pd.DataFrame({"timestamp": ["2022-01-01 00:00:00", "2022-01-01 00:00:01", "2024-01-01 00:00:00"],
                            "value": [1.0, 2.0, 3.0]})
    error, peak = _peak_bytes(lambda: to_panel(seconds))
    assert isinstance(error, InputError) and "3 rows spread over 63072001 steps of s" in str(error)
    assert "\n" not in str(error) and peak < 20 * 2**20
    error, peak = _peak_bytes(lambda: place_rows(seconds, freq="s"))  # detection's irregular rows: the same rule
    assert isinstance(error, InputError) and "3 rows spread over 63072001 steps of 1 s" in str(error)
    assert peak < 20 * 2**20
    # A calendar frequency is bounded without building its grid as well: three business days 200 years apart.
    business = pd.DataFrame({"timestamp": ["2000-01-03", "2000-01-04", "2199-12-31"], "value": [1.0, 2.0, 3.0]})
    error, peak = _peak_bytes(lambda: to_panel(business, freq="B"))
    assert isinstance(error, InputError) and "spread over at least" in str(error) and peak < 20 * 2**20
    # ... and exactly at the limit (10 steps per row): 3 monthly rows over 30 months pass, over 31 they do not.
    months = pd.DataFrame({"timestamp": ["2024-01-01", "2024-02-01", "2026-06-01"], "value": [1.0, 2.0, 3.0]})
    (series,) = to_panel(months, freq="MS").series
    assert len(series.index) == 30 and np.isnan(series.values[0, 2:-1]).all()
    with pytest.raises(InputError, match="3 rows spread over at least 31 steps of MS"):
        to_panel(months.replace("2026-06-01", "2026-07-01"), freq="MS")


def test_sub_second_timestamps_are_refused_as_such_not_as_duplicates() -> None:
    tenths = pd.DataFrame({"timestamp": [f"2024-01-01T00:00:00.{i}00Z" for i in range(10)], "value": np.arange(10.0)})
    with pytest.raises(InputError, match=r"00:00:00.100000\+00:00 has a fraction of a second.*steps below one second"
                                         r" are not supported") as refused:
        to_panel(tenths)
    assert "duplicate" not in str(refused.value)
    whole = tenths.assign(timestamp=[f"2024-01-01T00:00:0{i}.000Z" for i in range(10)])  # written with millis
    assert to_panel(whole).series[0].index.freqstr == "s"
    with pytest.raises(InputError, match=r"'100ms' is finer than a second.*steps below one second are not supported"):
        to_panel(whole, freq="100ms")


def test_offsets_that_change_at_a_dst_switch_are_read_in_utc() -> None:
    paris = pd.date_range("2024-03-30 12:00", "2024-03-31 12:00", freq="h", tz="Europe/Paris")  # 02:00 skipped
    table = pd.DataFrame({"timestamp": [t.isoformat() for t in paris], "value": np.arange(len(paris), dtype=float)})
    assert table["timestamp"].str[-6:].nunique() == 2  # +01:00, then +02:00

    (series,) = to_panel(table).series

    assert str(series.index.tz) == "UTC" and series.index.freqstr == "h" and len(series.index) == len(paris)
    assert series.index[0] == pd.Timestamp("2024-03-30 11:00", tz="UTC")
    one_offset = table.iloc[:10]  # all +01:00: the offset is kept
    assert str(to_panel(one_offset).series[0].index.tz) == "UTC+01:00"
    with pytest.raises(InputError, match="some timestamps have a UTC offset and others do not"):
        to_panel(table.assign(timestamp=table["timestamp"].str[:19].where(table.index < 5, table["timestamp"])))


@pytest.mark.parametrize("first", ["0001-01-01", "1000-01-01", "2500-01-01", "9000-01-01"])
def test_dates_beyond_pandas_nanoseconds_are_read_at_second_resolution(first: str) -> None:
    year = int(first[:4])
    table = pd.DataFrame({"date": [f"{year + i:04d}-01-01" for i in range(30)], "value": np.arange(30.0)})
    (series,) = to_panel(table).series
    assert series.index[0] == pd.Timestamp(first) and series.index.freqstr.startswith("YS")
    assert series.future_index(2)[-1] == pd.Timestamp(f"{year + 31:04d}-01-01")
    with pytest.raises(InputError, match="'10000-01-01' in row 30"):
        to_panel(table.replace(table["date"].iloc[-1], "10000-01-01"))


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_unix_time_is_read_in_the_unit_its_magnitude_names(unit: str) -> None:
    minutes = pd.date_range("2024-01-01", periods=30, freq="min")
    table = pd.DataFrame({"timestamp": minutes.as_unit(unit).asi8, "cpu": np.linspace(0, 1, 30)})
    (series,) = to_panel(table).series
    assert series.index.freqstr == "min" and series.index[0] == minutes[0]


@pytest.mark.parametrize(
    ("start", "freq", "message"),
    [
        ("2024-01-06", "B", "start 2024-01-06 00:00:00 is a Saturday, not on the B grid: start on one of its steps,"
                            " e.g. 2024-01-05 00:00:00 or 2024-01-08 00:00:00"),
        ("2024-01-08", "W-FRI", "is a Monday, not on the W-FRI grid: .* e.g. 2024-01-05 00:00:00 or 2024-01-12"),
        ("2024-01-15", "MS", "not on the MS grid: .* e.g. 2024-01-01 00:00:00 or 2024-02-01 00:00:00"),
    ],
)
def test_a_start_off_its_frequency_is_refused_not_moved(start: str, freq: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        grid_from_start(pd.Timestamp(start), 4, freq)
    on_grid = pd.Timestamp(start) - pd.tseries.frequencies.to_offset(freq)  # rolled back onto the grid
    grid = grid_from_start(on_grid, 4, freq)
    assert grid[0] == on_grid and len(grid) == 4
    assert grid_from_start(pd.Timestamp("0001-01-01"), 3, "YS")[-1] == pd.Timestamp("0003-01-01")
