"""The service's memory budget and its timeout, in process, with a small budget and a short timeout.

A scaled-down "largest request the limits allow": within every request limit, but over the memory budget, so it
gets a 413 naming the budget, its cost and the knob; a small one is answered; /readyz stays healthy. A slow request
that times out is cancelled between decoding steps and frees the model for the next one. Requests that fit the
budget only one at a time wait their turn. (A client that leaves, and a model process killed mid-pass, need a real
server: tests/test_serve_server.py.)
"""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

import logging
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
from serve_fixtures import LIMITS, co2_weekly, save_tiny_checkpoint, serve_in_process, service_settings, values

BUDGET = 24 * 2**20
TIMEOUT_S = 2
WIDE = [f"v{i}" for i in range(LIMITS["max_variates"])]
# What the service logs when a forward pass stops because nobody waits for it any more.
STOPPED = "cancelled between decoding steps"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    checkpoint = save_tiny_checkpoint(tmp_path_factory.mktemp("budget") / "checkpoint")
    # A throughput set high admits a request whatever its estimated time: the timeout test needs one that runs past
    # the timeout (the refusal of those estimated past it is tests/test_serve_admission.py's).
    settings = service_settings(checkpoint, memory_budget_bytes=BUDGET, timeout_s=TIMEOUT_S,
                                max_body_bytes=4_000_000, tokens_per_second=1e9)  # bodies of the widest requests
    with serve_in_process(settings) as service:
        yield service.client


def widest(series: int, return_samples: bool) -> dict:
    """`series` series of the limits' width and length, the longest horizon and the most samples allowed."""
    co2 = values(co2_weekly().iloc[-LIMITS["max_context_length"]:])
    one = {"variates": {name: co2 for name in WIDE}}
    return {"series": [one] * series, "prediction_length": LIMITS["max_prediction_length"],
            "num_samples": LIMITS["max_num_samples"], "return_samples": return_samples, "seed": 0}


def small() -> dict:
    return {"series": [{"variates": {"co2": values(co2_weekly().iloc[-64:])}}], "prediction_length": 16,
            "num_samples": 8, "seed": 0}


def ready(client: httpx.Client) -> bool:
    return client.get("/readyz").status_code == 200


def test_over_budget_gets_413_naming_budget_cost_and_knob(client: httpx.Client) -> None:
    answer = client.post("/forecast", json=widest(LIMITS["max_series"], return_samples=True))
    assert answer.status_code == 413, answer.text
    body = answer.json()
    message = body["error"]
    assert "TOTO_SERVE_MEMORY_BUDGET_BYTES" in message and f"memory_budget_bytes={BUDGET}" in message
    cost = int(re.search(r"needs (\d+) bytes", message).group(1))
    assert cost > BUDGET
    assert body["detail"][0]["limit"] == BUDGET
    assert ready(client)
    within = client.post("/forecast", json=small())
    assert within.status_code == 200, within.text
    assert len(within.json()["forecasts"][0]["variates"]["co2"]["mean"]) == 16
    assert ready(client)


def test_timed_out_request_is_cancelled_and_frees_the_model(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="serve.service"):
        start = time.monotonic()
        slow = client.post("/forecast", json=widest(LIMITS["max_series"], return_samples=False))
        answered_after = time.monotonic() - start
        assert slow.status_code == 504, slow.text  # BentoML's answer past traffic.timeout
        assert TIMEOUT_S <= answered_after < TIMEOUT_S + 5
        # The next request runs once the abandoned pass has stopped at its next decoding step (one pass at a time).
        follow_up = client.post("/forecast", json=small())
    assert follow_up.status_code == 200, follow_up.text
    assert any(STOPPED in record.getMessage() for record in caplog.records), caplog.text
    assert ready(client)


def test_requests_that_fit_only_one_at_a_time_wait_their_turn(client: httpx.Client) -> None:
    co2 = values(co2_weekly().iloc[-LIMITS["max_context_length"]:])
    # It reserves about 23.8 MiB of the 24 MiB budget (16.3 MiB of it its samples): one at a time.
    body = {"series": [{"variates": {name: co2 for name in WIDE}}], "prediction_length": 64, "num_samples": 256,
            "return_samples": True, "seed": 0}

    def post(seed: int) -> httpx.Response:
        return client.post("/forecast", json={**body, "seed": seed})

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(post, range(3)))
    assert [answer.status_code for answer in answers] == [200, 200, 200], [a.text[:200] for a in answers]
    samples = [answer.json()["forecasts"][0]["variates"]["v0"]["samples"] for answer in answers]
    assert all(len(s) == 256 and len(s[0]) == 64 for s in samples) and samples[0] != samples[1]
    assert ready(client)
