"""A real forecasting server on 127.0.0.1 for the serving tests, and real series to send it.

`start_server` runs `bentoml serve serve.service:TotoService` in its own process group on a free port, with a
tiny random-weight checkpoint saved as real safetensors files and small limits, and stops it afterwards. The
series come from CSV files that ship inside statsmodels (weekly Mauna Loa CO2, with missing weeks; quarterly US
macro data), read with pandas without importing statsmodels.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import httpx
import pandas as pd
import torch

from toto.model.config import TotoConfig
from toto.model.toto import Toto

REPO = Path(__file__).resolve().parents[1]
STATSMODELS_DATA = Path(importlib.util.find_spec("statsmodels").origin).parent / "datasets"

# Small limits so that over-limit requests stay small; every test module reads them from here.
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


def save_tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A tiny random-weight Toto as config.json + model.safetensors (forecast quality is not under test)."""
    torch.manual_seed(seed)
    return Toto.from_config(TotoConfig.tiny()).save_pretrained(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(NamedTuple):
    url: str
    checkpoint: Path


@contextmanager
def start_server(workdir: Path, env: dict[str, object] | None = None, timeout_s: float = 120) -> Iterator[Server]:
    """Serve a tiny checkpoint from `workdir`; yields the server once /readyz answers 200."""
    checkpoint = save_tiny_checkpoint(workdir / "checkpoint")
    port = free_port()
    full_env = {
        **os.environ,
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "TOTO_SERVE_CHECKPOINT": str(checkpoint),
        **{k: str(v) for k, v in {**LIMITS, **(env or {})}.items()},
    }
    bentoml = Path(sys.executable).parent / "bentoml"
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(bentoml), "serve", "serve.service:TotoService", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log_path, timeout_s)
        yield Server(url, checkpoint)
    finally:
        _stop(process)


def _wait_ready(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the server was not ready after {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server, then any worker it forked that is still there (they share its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


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
