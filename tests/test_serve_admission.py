"""Admission of `/forecast` requests at the default limits, in process with the embedded `toto-tiny` on the CPU: a
request is validated off the event loop (so `/livez` answers meanwhile), and one whose estimated time passes the
timeout is refused before any work."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

import json
import math
import re
import threading
from collections.abc import Iterator

import httpx
from serve_fixtures import LIMITS, InProcessService, co2_weekly, serve_in_process, service_settings, values

from serve.settings import ServeSettings

# The default request limits, which the test fixtures otherwise shrink.
DEFAULT_LIMITS = {name: ServeSettings.model_fields[name].default for name in LIMITS}
# Short, so that the largest request's estimated time passes it on any CPU (toto-tiny forwards 2,500 to 15,000 tokens
# a second on a core; the request is a million tokens).
TIMEOUT_S = 10


@pytest.fixture(scope="module")
def service() -> Iterator[InProcessService]:
    settings = service_settings("toto-tiny", **DEFAULT_LIMITS, timeout_s=TIMEOUT_S, device="cpu")
    with serve_in_process(settings) as service:
        yield service


@pytest.fixture(scope="module")
def client(service: InProcessService) -> httpx.Client:
    return service.client


def passes_started(client: httpx.Client) -> float:
    """Forward passes handed to the model so far, from the service's Prometheus histogram."""
    count = re.search(r"^toto_forecast_batch_series_count(?:\{[^}]*\})? (\S+)$", client.get("/metrics").text, re.M)
    return float(count.group(1)) if count else 0.0


def _probes_during(client: httpx.Client, body: bytes) -> tuple[httpx.Response, int]:
    """Send `body` to /forecast from a thread and, from the moment the service has read it whole until it is
    answered, /livez probes one after another from here: the answer, and how many probes were answered before it."""
    read = threading.Event()

    def chunks() -> Iterator[bytes]:
        yield body
        read.set()  # the service has the whole body: its checks start now

    answers: list[httpx.Response] = []
    request = threading.Thread(target=lambda: answers.append(
        client.post("/forecast", content=chunks(), headers={"content-type": "application/json"})))
    request.start()
    read.wait()
    probes = 0
    while request.is_alive():
        assert client.get("/livez").status_code == 200
        probes += not answers
    request.join()
    return answers[0], probes


def test_livez_answers_while_a_large_request_is_validated(client: httpx.Client) -> None:
    """Issue 28: a request's validation ran on the event loop, and `/livez` waited for it. Here 64 series of 4,096
    timestamps: the guard reads the JSON, pydantic validates it, and each series' time grid is built and checked (the
    last series is off its grid, so the answer is a 422 once all are checked). Probes keep being answered meanwhile:
    many more than while the guard alone reads the same body (that body repeats a key, so the guard refuses it), a
    share of the work that runs in a worker thread too."""
    start = 1_704_067_200  # 2024-01-01, in Unix seconds
    minutes = [start + 60 * i for i in range(DEFAULT_LIMITS["max_context_length"])]
    series = [{"variates": {"cpu": [i % 7 for i in range(len(minutes))]}, "timestamps": minutes}
              for _ in range(DEFAULT_LIMITS["max_series"])]
    series[-1] = {**series[-1], "timestamps": [*minutes[:-1], minutes[-1] + 30]}  # off the minute grid
    text = json.dumps({"series": series, "prediction_length": 8}, separators=(",", ":"))
    body = text.encode()
    assert len(body) <= DEFAULT_LIMITS["max_body_bytes"]
    refused, guard_probes = _probes_during(client, (text[:-1] + ',"prediction_length":8}').encode())
    assert refused.status_code == 400 and "'prediction_length' more than once" in refused.text
    answer, probes = _probes_during(client, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["series", 63, "timestamps"]
    assert probes >= 3 * guard_probes + 3, f"{probes} probes answered during the checks, {guard_probes} in the guard"


def test_a_request_that_cannot_finish_within_the_timeout_is_refused_before_any_work(service: InProcessService) -> None:
    """Issue 28: the largest request the default limits admit (1 series of 64 variates, context 4,096, horizon
    1,024, 256 samples) ran into the 120 s timeout and got a 504 on a busy machine. Its time is now estimated
    first: the tokens the model forwards (64 variates, each its 128 context patches once and 64 horizon patches on
    each of 256 paths) over the throughput measured at start-up. Past the timeout it is a 413 naming the estimate,
    before any forward pass; a small request is still answered."""
    client, engine = service.client, service.service.engine
    assert engine is not None and service.service.tokens_per_second is not None
    co2 = values(co2_weekly().iloc[-DEFAULT_LIMITS["max_context_length"]:])
    largest = {"series": [{"variates": {f"v{i}": co2 for i in range(DEFAULT_LIMITS["max_variates"])}}],
               "prediction_length": DEFAULT_LIMITS["max_prediction_length"], "num_samples": 256}
    patch, context = engine.patch_size, engine.pipeline.context_length
    tokens = 64 * (math.ceil(context / patch) + 256 * math.ceil(1024 / patch))
    seconds = tokens / service.service.tokens_per_second
    passes = passes_started(client)
    refused = client.post("/forecast", json=largest)
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert f"an estimated {seconds:,.0f} s of forward passes ({tokens:,} tokens" in error
    assert f"timeout_s={TIMEOUT_S}" in error and "measured at start-up" in error and "\n" not in error
    assert passes_started(client) == passes  # refused before any work
    small = {"series": [{"variates": {"co2": co2[-256:]}}], "prediction_length": 16, "num_samples": 64, "seed": 0}
    answered = client.post("/forecast", json=small)
    assert answered.status_code == 200, answered.text
    assert passes_started(client) == passes + 1


def test_a_throughput_set_in_the_settings_is_used_as_is() -> None:
    settings = service_settings("toto-tiny", tokens_per_second=1000.0, timeout_s=1)
    body = {"series": [{"variates": {"cpu": [float(i % 5) for i in range(64)]}}], "prediction_length": 64,
            "num_samples": 128}  # 4 context patches, and 4 horizon patches on each of 128 paths: 516 tokens, 0.5 s
    with serve_in_process(settings) as service:
        assert service.service.tokens_per_second == 1000.0
        assert service.client.post("/forecast", json=body).status_code == 200
        refused = service.client.post("/forecast", json={**body, "num_samples": 256})  # 1,028 tokens: 1.03 s
        assert refused.status_code == 413
        assert "1,028 tokens at this server's 1,000 tokens/s, set by TOTO_SERVE_TOKENS_PER_SECOND" in refused.text
