"""The forecasting service under load, in process: 32 concurrent clients are merged into batches and each gets its
own answer (within the float32 tolerance docs/serving.md states, against the same request sent alone), hundreds of
concurrent requests all succeed, and a schema-driven fuzz run (schemathesis, from /docs.json) finds no 5xx."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from serve_fixtures import LIMITS, co2_weekly, save_tiny_checkpoint, serve_in_process, service_settings, values

from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.inference.streams import row_seeds
from toto.model.toto import Toto

CLIENTS = 32
HORIZON, SAMPLES, CONTEXT = 16, 32, 128
FUZZ_EXAMPLES = 40  # per operation and run: bounded so the suite stays fast
# docs/serving.md: a merged request's numbers equal the same request alone up to this relative difference.
MERGED_VS_ALONE_RTOL = 1e-5
# Many more requests than one forward pass takes (max_batch_size), so that passes follow each other under load.
MANY_REQUESTS = 240


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serve-load") / "checkpoint")


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> Iterator[httpx.Client]:
    with serve_in_process(service_settings(checkpoint)) as service:
        yield service.client


def _request(window: int) -> dict:
    """Client `window`'s question: its own stretch of the CO2 record and its own seed."""
    co2 = co2_weekly().interpolate().iloc[(window % CLIENTS) * 40:][:CONTEXT]
    return {"series": [{"id": f"client-{window}", "variates": {"co2": values(co2)}}],
            "prediction_length": HORIZON, "num_samples": SAMPLES, "quantile_levels": [0.1, 0.9], "seed": window}


def _batch_histogram(client: httpx.Client) -> tuple[float, float]:
    """(forward passes, forward passes over exactly one series) from the service's Prometheus histogram."""
    text = client.get("/metrics").text
    count = re.search(r"^toto_forecast_batch_series_count(?:\{[^}]*\})? (\S+)$", text, re.M)
    single = re.search(r'^toto_forecast_batch_series_bucket\{[^}]*le="1\.0"[^}]*\} (\S+)$', text, re.M)
    return float(count.group(1)), float(single.group(1))


def _post_concurrently(client: httpx.Client, windows: range) -> list[httpx.Response]:
    """Each window's request from a thread of its own (at most 2 * CLIENTS at once), all through `client`."""
    with ThreadPoolExecutor(min(len(windows), 2 * CLIENTS)) as pool:
        return list(pool.map(lambda w: client.post("/forecast", json=_request(w)), windows))


def test_32_concurrent_clients_are_batched_and_each_gets_its_own_answer(client: httpx.Client, checkpoint: Path) -> None:
    # No warm-up here: the service runs a warm-up forecast before it reports ready.
    batches_before, _ = _batch_histogram(client)

    responses = _post_concurrently(client, range(CLIENTS))

    assert [r.status_code for r in responses] == [200] * CLIENTS, [r.text for r in responses if r.status_code != 200]
    batches, single = _batch_histogram(client)
    assert batches - batches_before < CLIENTS, "concurrent requests must share forward passes"
    assert batches > single, "the batch size histogram must show forward passes over more than one series"

    # What each client would get alone: its series with its own seed (row_seeds(seed, 1)[0] is the stream
    # TotoForecaster gives a one-series batch), computed here in one independent forward pass.
    series = np.stack([np.array(_request(w)["series"][0]["variates"]["co2"])[None] for w in range(CLIENTS)])
    expected = TotoForecaster(Toto.from_pretrained(checkpoint).model).forecast(
        MaskedTimeseries.from_series(series), HORIZON, num_samples=SAMPLES,
        samples_per_batch=LIMITS["samples_per_batch"], seed=[row_seeds(w, 1)[0] for w in range(CLIENTS)],
    )
    upper = expected.quantile(0.9)
    for window, response in enumerate(responses):
        [forecast] = response.json()["forecasts"]
        assert forecast["id"] == f"client-{window}"
        got = forecast["variates"]["co2"]
        # Batches of different sizes differ only by float rounding in the matrix products.
        np.testing.assert_allclose(got["median"], expected.median[window, 0], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(got["quantiles"]["0.9"], upper[window, 0], rtol=1e-4, atol=1e-3)


def test_merged_answers_equal_the_same_requests_alone_within_the_stated_tolerance(client: httpx.Client) -> None:
    windows = range(8)
    merged = _post_concurrently(client, windows)
    alone = [client.post("/forecast", json=_request(w)) for w in windows]  # one at a time: batches of one
    for together, single in zip(merged, alone):
        assert together.status_code == single.status_code == 200
        a, b = (r.json()["forecasts"][0]["variates"]["co2"] for r in (together, single))
        for key in ("mean", "median"):
            np.testing.assert_allclose(a[key], b[key], rtol=MERGED_VS_ALONE_RTOL, atol=0)
        np.testing.assert_allclose(a["quantiles"]["0.9"], b["quantiles"]["0.9"], rtol=MERGED_VS_ALONE_RTOL, atol=0)


def test_hundreds_of_concurrent_requests_all_succeed(client: httpx.Client) -> None:
    """Regression: when the service reached BentoML's batching through its own client, that client renewed its
    session every 100 calls while calls on it were in flight, and a share of these requests failed with a 500."""
    responses = _post_concurrently(client, range(MANY_REQUESTS))
    failed = [r.text for r in responses if r.status_code != 200]
    assert not failed, f"{len(failed)} of {MANY_REQUESTS} failed, e.g. {failed[0]}"


def _sent(client: httpx.Client, case: schemathesis.Case) -> httpx.Response:
    """`case` sent through `client`: schemathesis serializes it as keyword arguments of `requests`, mapped here."""
    request: dict[str, Any] = case.as_transport_kwargs(base_url=str(client.base_url))
    body = {"json": request["json"]} if "json" in request else {}
    if "data" in request:
        body = {"content": request["data"]} if isinstance(request["data"], str | bytes) else {"data": request["data"]}
    return client.request(request["method"], request["url"], headers=request.get("headers"),
                          params=request.get("params"), **body)


def test_schema_driven_fuzzing_finds_no_server_error(client: httpx.Client) -> None:
    """Valid and invalid bodies generated from the OpenAPI schema, for every operation it lists."""
    schema = schemathesis.openapi.from_dict(client.get("/docs.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert "/forecast" in {operation.path for operation in operations}
    for operation in operations:
        modes = list(GenerationMode) if operation.method.upper() == "POST" else [GenerationMode.POSITIVE]
        strategy = st.one_of(*(operation.as_strategy(mode) for mode in modes))

        @given(case=strategy)
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case: schemathesis.Case) -> None:
            response = _sent(client, case)
            answer = f"{response.status_code} {response.text[:300]}"
            assert response.status_code < 500, f"{case.as_curl_command()}\n-> {answer}"

        no_server_error()
