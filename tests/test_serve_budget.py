"""The service's memory budget and cancellation, on a real server with a small budget and a short timeout.

A scaled-down "largest request the limits allow": within every request limit, but over the memory budget, so it
gets a 413 naming the budget, its cost and the knob; a small one is answered; /readyz stays healthy. A slow
request that times out, or whose client leaves, is cancelled between decoding steps and frees the worker. A model
process killed during a pass (as the kernel's out-of-memory killer would) costs that request a 503, not the
server: a new model process loads at once (/readyz answers 503 until it has) and answers the next request.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
import torch
from serve_fixtures import LIMITS, co2_weekly, values

from serve.local import local_server
from toto.model.config import TotoConfig
from toto.model.toto import Toto

BUDGET = 24 * 2**20
TIMEOUT_S = 4
WIDE = [f"v{i}" for i in range(LIMITS["TOTO_SERVE_MAX_VARIATES"])]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("budget")
    torch.manual_seed(0)
    checkpoint = Toto.from_config(TotoConfig.tiny()).save_pretrained(workdir / "checkpoint")
    env = {"TOTO_SERVE_CHECKPOINT": checkpoint, **LIMITS, "TOTO_SERVE_MEMORY_BUDGET_BYTES": BUDGET,
           "TOTO_SERVE_TIMEOUT_S": TIMEOUT_S, "TOTO_SERVE_CLIENT_CHECK_AFTER_S": 0.5, "TOTO_SERVE_MAX_BODY_BYTES": 4_000_000}  # bodies of the widest requests
    with local_server(workdir, env) as running:
        yield running


def request(series: int, return_samples: bool) -> dict:
    """`series` series of the limits' width and length, the longest horizon and the most samples allowed."""
    co2 = values(co2_weekly().iloc[-LIMITS["TOTO_SERVE_MAX_CONTEXT_LENGTH"]:])
    one = {"variates": {name: co2 for name in WIDE}}
    return {"series": [one] * series, "prediction_length": LIMITS["TOTO_SERVE_MAX_PREDICTION_LENGTH"],
            "num_samples": LIMITS["TOTO_SERVE_MAX_NUM_SAMPLES"], "return_samples": return_samples, "seed": 0}


def small() -> dict:
    return {"series": [{"variates": {"co2": values(co2_weekly().iloc[-64:])}}], "prediction_length": 16,
            "num_samples": 8, "seed": 0}


def ready(server) -> bool:
    return httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200


def test_over_budget_gets_413_naming_budget_cost_and_knob(server) -> None:
    largest = request(LIMITS["TOTO_SERVE_MAX_SERIES"], return_samples=True)
    answer = httpx.post(f"{server.url}/forecast", json=largest, timeout=60)
    assert answer.status_code == 413, answer.text
    body = answer.json()
    message = body["error"]
    assert "TOTO_SERVE_MEMORY_BUDGET_BYTES" in message and f"memory_budget_bytes={BUDGET}" in message
    cost = int(re.search(r"needs (\d+) bytes", message).group(1))
    assert cost > BUDGET
    assert body["detail"][0]["limit"] == BUDGET
    assert ready(server)
    within = httpx.post(f"{server.url}/forecast", json=small(), timeout=60)
    assert within.status_code == 200, within.text
    assert len(within.json()["forecasts"][0]["variates"]["co2"]["mean"]) == 16
    assert ready(server)


def abandoned_passes(server) -> int:
    return Path(server.log_path).read_text(errors="replace").count("cancelled between decoding steps")


def follow_up_seconds(server) -> float:
    start = time.monotonic()
    answer = httpx.post(f"{server.url}/forecast", json=small(), timeout=60)
    assert answer.status_code == 200, answer.text
    return time.monotonic() - start


def test_timed_out_request_is_cancelled_and_frees_the_worker(server) -> None:
    before = abandoned_passes(server)
    start = time.monotonic()
    slow = httpx.post(f"{server.url}/forecast", json=request(LIMITS["TOTO_SERVE_MAX_SERIES"], False), timeout=120)
    assert slow.status_code == 504, slow.text  # BentoML's answer past traffic.timeout
    assert time.monotonic() - start < TIMEOUT_S + 5
    assert ready(server)
    assert follow_up_seconds(server) < 10
    assert abandoned_passes(server) > before


def test_request_whose_client_left_is_cancelled(server) -> None:
    before = abandoned_passes(server)
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/forecast", json=request(LIMITS["TOTO_SERVE_MAX_SERIES"], False), timeout=1.5)
    time.sleep(0.5)  # the server checks between decoding steps
    follow_up_seconds(server)
    # Answered before the slow request's own timeout could have stopped it: the departure did.
    assert time.monotonic() - start < TIMEOUT_S
    assert abandoned_passes(server) > before
    assert "status=499" in Path(server.log_path).read_text(errors="replace")
    assert ready(server)


def test_requests_that_fit_only_one_at_a_time_wait_their_turn(server) -> None:
    co2 = values(co2_weekly().iloc[-LIMITS["TOTO_SERVE_MAX_CONTEXT_LENGTH"]:])
    # It reserves about 23.8 MiB of the 24 MiB budget (16.3 MiB of it its samples): one at a time.
    body = {"series": [{"variates": {name: co2 for name in WIDE}}], "prediction_length": 64, "num_samples": 256,
            "return_samples": True, "seed": 0}

    def post(seed: int) -> httpx.Response:
        return httpx.post(f"{server.url}/forecast", json={**body, "seed": seed}, timeout=60)

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(post, range(3)))
    assert [answer.status_code for answer in answers] == [200, 200, 200], [a.text[:200] for a in answers]
    samples = [answer.json()["forecasts"][0]["variates"]["v0"]["samples"] for answer in answers]
    assert all(len(s) == 256 and len(s[0]) == 64 for s in samples) and samples[0] != samples[1]
    assert ready(server)


def model_process(server) -> psutil.Process:
    """The server's model process (serve.model_process): the child started by multiprocessing's spawn."""
    [process] = [p for p in psutil.Process(server.pid).children(recursive=True)
                 if "spawn_main" in " ".join(p.cmdline())]
    return process


def test_a_killed_model_process_fails_its_request_with_503_and_is_replaced(server) -> None:
    victim = model_process(server)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, f"{server.url}/forecast",
                           json=request(LIMITS["TOTO_SERVE_MAX_SERIES"], False), timeout=60)
        deadline = time.monotonic() + 10
        while victim.cpu_percent(interval=0.2) < 50 and time.monotonic() < deadline:
            pass  # wait until the slow request's pass is running
        victim.kill()
        answer = slow.result()
    assert answer.status_code == 503, answer.text
    assert "model process died" in answer.json()["error"]
    # A new model process loads the checkpoint at once; /readyz says when it has, and then it answers.
    deadline = time.monotonic() + 30
    while not ready(server):
        assert time.monotonic() < deadline, "the replacement model process did not load within 30 s"
        time.sleep(0.2)
    assert follow_up_seconds(server) < TIMEOUT_S
    assert model_process(server).pid != victim.pid
