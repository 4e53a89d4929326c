"""What only a real server shows, on one `bentoml serve` boot: the model in its own process answers what the library
does; BentoML's own HTTP client works as docs/serving.md shows it; ambiguous framing is refused on the socket; a
client that leaves has its forecast cancelled; a model process killed mid-pass (as the kernel's out-of-memory killer
would) costs that request a 503, not the server: a new model process loads at once (/readyz answers 503 until it
has) and answers the next request. Everything else about the service runs in process (tests/test_serve_*.py).
"""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import bentoml
import httpx
import numpy as np
import psutil
from serve_fixtures import LIMITS, co2_weekly, save_tiny_checkpoint, start_server, values

from serve.local import LocalServer
from serve.schemas import ForecastRequest
from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.model.toto import Toto

pytestmark = pytest.mark.integration

BUDGET = 24 * 2**20
TIMEOUT_S = 4
WIDE = [f"v{i}" for i in range(LIMITS["max_variates"])]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("server") / "checkpoint")


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[LocalServer]:
    # A throughput set high admits `slow_request` whatever its estimated time: these tests stop it mid-pass.
    with start_server(checkpoint.parent, checkpoint, memory_budget_bytes=BUDGET, timeout_s=TIMEOUT_S,
                      client_check_after_s=0.5, max_body_bytes=4_000_000, tokens_per_second=1e9) as running:
        yield running


def slow_request() -> dict:
    """The widest request the limits allow without samples: within the budget, and seconds of decoding."""
    co2 = values(co2_weekly().iloc[-LIMITS["max_context_length"]:])
    return {"series": [{"variates": {name: co2 for name in WIDE}}] * LIMITS["max_series"],
            "prediction_length": LIMITS["max_prediction_length"], "num_samples": LIMITS["max_num_samples"],
            "seed": 0}


def small() -> dict:
    return {"series": [{"variates": {"co2": values(co2_weekly().iloc[-64:])}}], "prediction_length": 16,
            "num_samples": 8, "seed": 0}


def ready(server: LocalServer) -> bool:
    return httpx.get(f"{server.url}/readyz", timeout=5).status_code == 200


def passes_started(server: LocalServer) -> float:
    """Forward passes handed to the model so far, from the service's Prometheus histogram."""
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    count = re.search(r"^toto_forecast_batch_series_count(?:\{[^}]*\})? (\S+)$", text, re.M)
    return float(count.group(1)) if count else 0.0


def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Return once `condition()` holds, asking again as soon as it has answered: the server is another process,
    and what it says over HTTP is the only event the test can wait on."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s} s"


def test_the_model_process_answers_what_the_library_does(server: LocalServer, checkpoint: Path) -> None:
    co2 = co2_weekly()
    windows = [co2.iloc[start:start + 200] for start in (0, 1400)]  # the first holds missing weeks
    body = {"series": [{"variates": {"co2": values(w)}} for w in windows], "prediction_length": 20,
            "num_samples": 48, "quantile_levels": [0.1, 0.9], "seed": 123}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/livez").status_code == 200 and ready(server)
        response = client.post("/forecast", json=body)
        assert response.status_code == 200, response.text
        assert "/forecast" in client.get("/docs.json").json()["paths"]
    expected = TotoForecaster(Toto.from_pretrained(checkpoint).model).forecast(
        MaskedTimeseries.from_series(np.stack([w.to_numpy()[None] for w in windows])), 20, num_samples=48,
        samples_per_batch=LIMITS["samples_per_batch"], seed=123)
    for row, forecast in enumerate(response.json()["forecasts"]):
        got = forecast["variates"]["co2"]
        np.testing.assert_allclose(got["mean"], expected.mean[row, 0].numpy(), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(got["quantiles"]["0.9"], expected.quantile([0.9])[0, row, 0].numpy(),
                                   rtol=1e-5, atol=1e-4)
    assert passes_started(server) >= 2  # the warm-up pass and this one, counted on /metrics


def test_bentoml_client_with_keyword_arguments_and_with_a_request_object(server: LocalServer) -> None:
    """BentoML's own client, as docs/serving.md shows it: the request's fields as keyword arguments; also the request
    as JSON-ready dicts, whose `timestamps` is null (BentoML's serde failed on a null list; tests/test_doc_examples.py
    runs the document's example, whose answer has null timestamps)."""
    body = {"series": [{"id": "web-1", "variates": {"cpu": [0.4, 0.5, 0.45, 0.6, 0.55]},
                        "start": "2024-05-01T00:00:00Z", "freq": "5min"}], "prediction_length": 3, "num_samples": 8,
            "seed": 5}
    expected = httpx.post(f"{server.url}/forecast", json=body, timeout=60).json()
    with bentoml.SyncHTTPClient(server.url) as bento:
        by_keywords = bento.forecast(**body)
        request = ForecastRequest.model_validate_json(json.dumps(body))
        by_object = bento.forecast(**dict(request))
        by_dump = bento.forecast(**request.model_dump(mode="json"))
    assert request.model_dump(mode="json")["series"][0]["timestamps"] is None
    for answer in (by_keywords, by_object, by_dump):
        assert answer["seed"] == 5 and answer["forecasts"][0]["id"] == "web-1"
        assert answer["forecasts"][0]["variates"] == expected["forecasts"][0]["variates"]


def test_both_content_length_and_transfer_encoding_get_400(server: LocalServer) -> None:
    url = urlparse(server.url)
    body = json.dumps(small()).encode()
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    head = (f"POST /forecast HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
        connection.sendall(head + chunked)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]


def log_text(server: LocalServer) -> str:
    return Path(server.log_path).read_text(errors="replace")


def test_request_whose_client_left_is_cancelled(server: LocalServer) -> None:
    stopped_before = log_text(server).count("cancelled between decoding steps")
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/forecast", json=slow_request(), timeout=1.5)
    # Passes run one at a time: this one is answered once the slow pass has stopped at a decoding step.
    follow_up = httpx.post(f"{server.url}/forecast", json=small(), timeout=60)
    assert follow_up.status_code == 200, follow_up.text
    # Answered before the slow request's own timeout could have stopped it: the departure did.
    assert time.monotonic() - start < TIMEOUT_S
    log = log_text(server)
    assert log.count("cancelled between decoding steps") > stopped_before
    assert "status=499" in log
    assert ready(server)


def model_process(server: LocalServer) -> psutil.Process:
    """The server's model process (serve.model_process): the child started by multiprocessing's spawn."""
    [process] = [p for p in psutil.Process(server.pid).children(recursive=True)
                 if "spawn_main" in " ".join(p.cmdline())]
    return process


def test_a_killed_model_process_fails_its_request_with_503_and_is_replaced(server: LocalServer) -> None:
    victim = model_process(server)
    passes_before = passes_started(server)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, f"{server.url}/forecast", json=slow_request(), timeout=60)
        until(lambda: passes_started(server) > passes_before, 10, "the slow request's pass")
        victim.kill()  # mid-pass: the pass takes seconds
        answer = slow.result()
    assert answer.status_code == 503, answer.text
    assert "model process died" in answer.json()["error"]
    # A new model process loads the checkpoint at once; /readyz says when it has, and then it answers. (A request
    # sent before then waits for it, but this server's 4 s request timeout is shorter than a load on a busy machine.)
    until(lambda: ready(server), 60, "the replacement model process loading")
    follow_up = httpx.post(f"{server.url}/forecast", json=small(), timeout=60)
    assert follow_up.status_code == 200, follow_up.text
    assert model_process(server).pid != victim.pid
