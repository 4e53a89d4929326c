"""The pandas API: the embedded model forecasts real series offline, the table format, clear input errors."""

import pytest
from partial_install import missing

pytest.importorskip("pandas", reason=missing("cli"))

from pathlib import Path

import numpy as np
import pandas as pd

from toto.api import InputError, predict_df, quantile_columns, to_panel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def model(toto_tiny):
    """The embedded model (`load_model("toto-tiny")`, loaded once per run: tests/conftest.py)."""
    return toto_tiny


@pytest.fixture(scope="module")
def demand() -> pd.DataFrame:
    """The last four weeks of the hourly electricity load in examples/ (real data, daily season)."""
    return pd.read_csv(EXAMPLES / "electricity_demand.csv").tail(4 * 336).reset_index(drop=True)


@pytest.fixture(scope="module")
def arrivals() -> pd.DataFrame:
    """Quarterly arrivals to Australia from four countries, long form (real data shipped in examples/)."""
    return pd.read_csv(EXAMPLES / "tourist_arrivals_long.csv")


def test_embedded_model_forecasts_a_wide_table(model, demand):
    forecast = predict_df(
        demand, prediction_length=48, model=model, num_samples=32, quantiles=[0.1, 0.5, 0.9]
    )

    assert list(forecast.columns) == ["variate", "timestamp", "mean", "median", "0.1", "0.5", "0.9"]
    assert len(forecast) == 48 and set(forecast["variate"]) == {"load"}
    last = pd.Timestamp(demand["timestamp"].iloc[-1])
    expected = pd.date_range(last + pd.Timedelta("1h"), periods=48, freq="h")
    assert (pd.DatetimeIndex(forecast["timestamp"]) == expected).all()
    values = forecast[["mean", "median", "0.1", "0.5", "0.9"]].to_numpy()
    assert np.isfinite(values).all()
    assert (forecast["0.1"] <= forecast["0.5"]).all() and (forecast["0.5"] <= forecast["0.9"]).all()
    assert (forecast["0.1"] < forecast["0.9"]).any()  # sample paths differ, so the bands have width
    np.testing.assert_allclose(forecast["median"], forecast["0.5"])


def test_long_table_keeps_ids_and_continues_each_series(model, arrivals):
    forecast = predict_df(arrivals, prediction_length=6, model=model, num_samples=16)

    assert list(forecast.columns)[:3] == ["origin", "variate", "quarter"]
    assert quantile_columns(forecast) == [f"0.{i}" for i in range(1, 10)]
    assert forecast.groupby("origin").size().to_dict() == {"Japan": 6, "NZ": 6, "UK": 6, "US": 6}
    for _, rows in forecast.groupby("origin"):
        expected = pd.date_range("2012-10-01", periods=6, freq="QS-OCT")  # the data end in 2012 Q3
        assert (pd.DatetimeIndex(rows["quarter"]) == expected).all()
    assert (np.diff(forecast[quantile_columns(forecast)].to_numpy(), axis=1) >= 0).all()


def test_forecasts_do_not_depend_on_batching(model, arrivals):
    together = predict_df(arrivals, prediction_length=4, model=model, num_samples=16, batch_size=4, seed=7)
    one_by_one = predict_df(arrivals, prediction_length=4, model=model, num_samples=16, batch_size=1, seed=7)
    np.testing.assert_allclose(together[["mean", "0.1", "0.9"]], one_by_one[["mean", "0.1", "0.9"]], rtol=1e-5)
    other_seed = predict_df(arrivals, 4, model=model, num_samples=16, batch_size=4, seed=8)
    assert not np.allclose(other_seed["0.9"], together["0.9"])


def test_missing_values_and_gaps_become_nan_and_still_forecast(model, demand):
    holes = demand.copy()
    holes.loc[100:110, "load"] = np.nan  # missing values
    holes = holes.drop(index=range(500, 520))  # a gap in the time grid
    panel = to_panel(holes)

    (series,) = panel.series
    assert len(series.index) == len(demand) and series.index.freqstr == "h"
    assert np.isnan(series.values[0]).sum() == 11 + 20
    assert np.isnan(series.values[0, 500:520]).all()
    forecast = predict_df(holes, prediction_length=8, model=model, num_samples=8)
    assert np.isfinite(forecast[["mean", "0.1", "0.9"]].to_numpy()).all()


def test_time_index_calendar_frequencies_and_unix_seconds(model, arrivals):
    japan = arrivals[arrivals["origin"] == "Japan"]
    monthly = pd.DataFrame(
        {"visitors": japan["arrivals"].to_numpy()},
        index=pd.date_range("2000-01-01", periods=len(japan), freq="MS"),
    )
    forecast = predict_df(monthly, prediction_length=3, model=model, num_samples=4)
    assert list(forecast["timestamp"]) == list(pd.date_range("2010-08-01", periods=3, freq="MS"))

    unusual_names = pd.DataFrame(
        {
            "host": ["web-1"] * 3,
            "when": ["2024-01-01 00:00", "2024-01-01 00:05", "2024-01-01 00:10"],
            "load": [1, 2, 3],
        }
    )
    panel = to_panel(unusual_names)  # found by content: the one parsable column, the one text column
    assert (panel.timestamp_column, panel.id_column, panel.series[0].variates) == ("when", "host", ["load"])

    seconds = pd.DataFrame({"ts": 1_700_000_000 + 60 * np.arange(50), "cpu": np.linspace(0.2, 0.4, 50)})
    (series,) = to_panel(seconds).series
    assert series.interval_seconds == 60 and series.index[0] == pd.Timestamp(1_700_000_000, unit="s")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            pd.DataFrame({"timestamp": ["2024-01-01", "2024-01-02", "2024-01-03"], "host": ["a", "b", "c"]}),
            "no numeric column to forecast",
        ),
        (
            pd.DataFrame({"timestamp": ["2024-01-01", "yesterday", "2024-01-03"], "cpu": [1.0, 2.0, 3.0]}),
            "not timestamps, e.g. 'yesterday' in row 2",
        ),
        (
            pd.DataFrame(
                {"timestamp": ["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-03"], "cpu": [1, 2, 3, 4]}
            ),
            "duplicate timestamp",
        ),
        (pd.DataFrame({"timestamp": ["2024-01-01", "2024-01-02"], "cpu": [1.0, 2.0]}), "only 2 time step"),
        (pd.DataFrame({"cpu": [1.0, 2.0, 3.0], "mem": [4.0, 5.0, 6.0]}), "no timestamp column found"),
        (
            pd.DataFrame(
                {
                    "timestamp": [
                        "2024-01-01 00:00",
                        "2024-01-01 00:10",
                        "2024-01-01 00:20",
                        "2024-01-01 00:25",
                    ],
                    "cpu": [1.0, 2.0, 3.0, 4.0],
                }
            ),
            "not lie on a regular 10min grid",
        ),
        (
            pd.DataFrame(
                {"timestamp": ["2024-01-01", "2024-01-02", "2024-01-03"], "cpu": [1.0, "n/a?", 3.0]}
            ),
            "non-numeric values such as 'n/a\\?' in row 2",
        ),
        (
            pd.DataFrame(
                {
                    "timestamp": ["2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:02", "2024-03-01"],
                    "cpu": [1.0, 2.0, 3.0, 4.0],
                }
            ),
            "4 rows spread over 86401 steps of min",
        ),
        (
            pd.DataFrame({"timestamp": ["2024-01-01", "2024-01-02", "2024-01-03"], "cpu": [np.nan] * 3}),
            r"\['cpu'\] have no values",
        ),
    ],
)
def test_bad_tables_get_a_clear_error(table, message):
    with pytest.raises(InputError, match=message):
        to_panel(table)


def test_named_columns_must_exist_and_settings_are_checked(model, arrivals):
    with pytest.raises(InputError, match="the id column 'host' is not in the table"):
        to_panel(arrivals, id_column="host")
    with pytest.raises(InputError, match="between 0 and 1"):
        predict_df(arrivals, 4, model=model, quantiles=[0.5, 1.5])
    with pytest.raises(InputError, match="'fortnightly' is not a pandas frequency"):
        to_panel(arrivals, freq="fortnightly")


def test_gluonts_predictor_gives_the_same_numbers_as_the_forecaster(model, arrivals):
    from toto.inference.gluonts_predictor import TotoPredictor

    ours = predict_df(
        arrivals, 6, model=model, quantiles=[0.1, 0.5, 0.9], num_samples=16, context_length=64, seed=5
    )
    entries = [
        {
            "item_id": origin,
            "start": pd.Period(rows["quarter"].iloc[0], freq="Q"),
            "target": rows["arrivals"].to_numpy(),
        }
        for origin, rows in arrivals.groupby("origin", sort=False)
    ]
    predictor = TotoPredictor(
        model, prediction_length=6, context_length=64, num_samples=16, batch_size=4, seed=5
    )

    forecasts = list(predictor.predict(entries))
    assert [f.item_id for f in forecasts] == ["Japan", "NZ", "UK", "US"]
    for forecast in forecasts:
        rows = ours[ours["origin"] == forecast.item_id]
        assert forecast.start_date.to_timestamp() == rows["quarter"].iloc[0]
        np.testing.assert_allclose(forecast.mean, rows["mean"], rtol=1e-5)
        # The same sample paths. GluonTS's quantile() picks the nearest sample while the table interpolates
        # (numpy's default), so the table is compared with numpy's quantile of the GluonTS samples.
        for level in ("0.1", "0.5", "0.9"):
            np.testing.assert_allclose(
                np.quantile(forecast.samples, float(level), axis=0), rows[level], rtol=1e-5
            )
