"""`toto.tables`, the one set of rules that turns a table into series for the CLI, predict_df, training
(`TableSource`) and backtests: time columns (years, Unix seconds, names), long centuries of data, duplicates, gaps,
magnitudes and ignored columns, and that training and inference read the same file the same way."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("pandas", reason=missing("cli"))
pytest.importorskip("lightning", reason=missing("train"))

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from toto.tables import InputError, long_to_wide, to_panel
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
    with pytest.raises(InputError, match="neither years .* nor Unix seconds"):
        to_panel(steps, timestamp_column="time")
    with pytest.raises(InputError, match="no timestamp column found"):
        to_panel(steps)  # not silently taken as seconds since 1970


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
