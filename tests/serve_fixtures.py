"""A real forecasting server on 127.0.0.1 for the serving tests, and real series to send it.

`start_server` runs `bentoml serve serve.service:TotoService` (through `serve.local`) with a tiny random-weight
checkpoint saved as real safetensors files and small limits. The series come from CSV files that ship inside
statsmodels (weekly Mauna Loa CO2, with missing weeks; quarterly US macro data), read with pandas without paying
for the statsmodels import.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import torch

from serve.local import local_server
from toto.model.checkpoint import TRAINING_SUMMARY_FILE
from toto.model.config import TotoConfig
from toto.model.toto import Toto

STATSMODELS_DATA = Path(importlib.util.find_spec("statsmodels").origin).parent / "datasets"

# Small limits so that over-limit requests stay small; the tests read them from here.
LIMITS = {
    "TOTO_SERVE_MAX_CONTEXT_LENGTH": 512,
    "TOTO_SERVE_MAX_PREDICTION_LENGTH": 64,
    "TOTO_SERVE_MAX_VARIATES": 8,
    "TOTO_SERVE_MAX_SERIES": 40,
    "TOTO_SERVE_MAX_NUM_SAMPLES": 256,
    "TOTO_SERVE_MAX_QUANTILE_LEVELS": 9,
    "TOTO_SERVE_MAX_BODY_BYTES": 200_000,
    "TOTO_SERVE_SAMPLES_PER_BATCH": 32,
    "TOTO_SERVE_MAX_LATENCY_MS": 60_000,
}


# The context the test checkpoint says it was trained with (its training_summary.json): the server reads at most
# the last TRAINED_CONTEXT steps of a series.
TRAINED_CONTEXT = 256


class Server(NamedTuple):
    url: str
    checkpoint: Path
    log_path: Path  # the server's combined stdout and stderr


@contextmanager
def start_server(workdir: Path) -> Iterator[Server]:
    """Serve a tiny random-weight checkpoint (forecast quality is not under test), trained context
    `TRAINED_CONTEXT`, with `LIMITS`."""
    torch.manual_seed(0)
    checkpoint = Toto.from_config(TotoConfig.tiny()).save_pretrained(workdir / "checkpoint")
    (checkpoint / TRAINING_SUMMARY_FILE).write_text(json.dumps({"context_length": TRAINED_CONTEXT}))
    with local_server(workdir, {"TOTO_SERVE_CHECKPOINT": checkpoint, **LIMITS}) as server:
        yield Server(server.url, checkpoint, server.log_path)


def co2_weekly() -> pd.Series:
    """Weekly CO2 at Mauna Loa from 1958, with NaN for the weeks that were not measured."""
    frame = pd.read_csv(STATSMODELS_DATA / "co2" / "co2.csv")
    return pd.Series(frame["co2"].to_numpy(), index=pd.to_datetime(frame["date"].astype(str)), name="co2")


def us_macro_quarterly() -> pd.DataFrame:
    """Quarterly US macro data from 1959: real GDP, consumption, investment and more."""
    frame = pd.read_csv(STATSMODELS_DATA / "macrodata" / "macrodata.csv")
    start = pd.Timestamp(year=int(frame["year"].iloc[0]), month=3 * int(frame["quarter"].iloc[0]) - 2, day=1)
    frame.index = pd.date_range(start, periods=len(frame), freq="QS")
    return frame.drop(columns=["year", "quarter"])


def values(series: pd.Series) -> list[float | None]:
    """JSON-ready values: NaN becomes null."""
    return [None if pd.isna(v) else float(v) for v in series]
