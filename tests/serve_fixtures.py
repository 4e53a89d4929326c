"""The forecasting service for the serving tests, in this process or as a real server, and real series to send it.

`serve_in_process(settings)` makes the service from `settings` (`serve.service.create_service`) and drives its ASGI
app with Starlette's TestClient: BentoML's own app (its middlewares, the request guard, the timeout, the probes and
/metrics) without a socket, and with the forward passes in this process (`model_process=False`), so a service costs
a second or two. `start_server` boots a real `bentoml serve` (through `serve.local`) for what only a real server
shows: its model process, HTTP framing on the socket, a client that goes away.

Both serve a tiny random-weight checkpoint saved as real safetensors files (`save_tiny_checkpoint`), with small
limits. The series come from CSV files that ship inside statsmodels (weekly Mauna Loa CO2, with missing weeks;
quarterly US macro data), read with pandas without paying for the statsmodels import.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import torch
from starlette.testclient import TestClient

from serve.local import LocalServer, local_server
from serve.service import ForecastService, create_service
from serve.settings import ServeSettings
from toto.checkpoint_io import TRAINING_SUMMARY_FILE
from toto.model.config import TotoConfig
from toto.model.toto import Toto

STATSMODELS_DATA = Path(importlib.util.find_spec("statsmodels").origin).parent / "datasets"

# Small limits so that over-limit requests stay small; the tests read them from here.
LIMITS: dict[str, Any] = {
    "max_context_length": 512,
    "max_prediction_length": 64,
    "max_variates": 8,
    "max_series": 40,
    "max_num_samples": 256,
    "max_quantile_levels": 9,
    "max_body_bytes": 200_000,
    "samples_per_batch": 32,
    "max_latency_ms": 60_000,
}

# The context the test checkpoint says it was trained with (its training_summary.json): the service reads at most
# the last TRAINED_CONTEXT steps of a series.
TRAINED_CONTEXT = 256


def save_tiny_checkpoint(folder: Path) -> Path:
    """A tiny random-weight checkpoint (forecast quality is not under test) with trained context
    `TRAINED_CONTEXT`, saved to `folder`; the same weights every time."""
    torch.manual_seed(0)
    checkpoint = Toto.from_config(TotoConfig.tiny()).save_pretrained(folder)
    (checkpoint / TRAINING_SUMMARY_FILE).write_text(json.dumps({"context_length": TRAINED_CONTEXT}))
    return checkpoint


def service_settings(checkpoint: Path | str, **overrides: Any) -> ServeSettings:
    """Settings of an in-process test service: `LIMITS`, forward passes in this process, and `overrides`."""
    return ServeSettings(checkpoint=str(checkpoint), **{**LIMITS, "model_process": False, **overrides})


class InProcessService(NamedTuple):
    client: TestClient  # an httpx client whose requests reach the service's ASGI app in this process
    service: ForecastService  # the instance BentoML made, after its checkpoint has loaded (or failed to)


@contextmanager
def serve_in_process(settings: ServeSettings) -> Iterator[InProcessService]:
    """The service made from `settings`, started (BentoML's lifespan: its start-up hooks) and loaded; yields once
    loading has ended, by awaiting the loading task itself, successfully or not. Stopped afterwards."""
    from _bentoml_sdk.service import get_current_service

    app = create_service(settings).to_asgi()
    with TestClient(app) as client:
        _unregister_request_metrics(app)
        service: ForecastService = get_current_service()

        async def loaded() -> None:
            await asyncio.shield(service.loading)

        client.portal.call(loaded)
        yield InProcessService(client, service)


def _unregister_request_metrics(app: Any) -> None:
    """BentoML's HTTP app registers its request metrics in prometheus_client's process-wide registry when it starts,
    and a second app in the process would register them again and fail (DuplicateTimeseries): a server has one app
    per process, the tests one per service. So a started app's metrics leave the registry at once. They still count:
    in multiprocess mode their values go to files, which /metrics reads (a collector of its own), not the registry."""
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    layer = app.middleware_stack  # the middlewares, each wrapping the next in `.app`
    while layer is not None:
        for value in list(getattr(layer, "__dict__", {}).values()):
            if isinstance(value, MetricWrapperBase):
                REGISTRY.unregister(value)
        layer = getattr(layer, "app", None)


@contextmanager
def start_server(workdir: Path, checkpoint: Path, **overrides: Any) -> Iterator[LocalServer]:
    """A real `bentoml serve` of `checkpoint` with `LIMITS` and `overrides` (settings by field name), its model in
    its own process as in production."""
    settings = {**LIMITS, "checkpoint": checkpoint, **overrides}
    with local_server(workdir, {f"TOTO_SERVE_{name.upper()}": value for name, value in settings.items()}) as server:
        yield server


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
