"""`POST /detect` through BentoML's HTTP app, in process: the library's scores over HTTP, irregular timestamps,
multivariate series, merged with other requests, the limits (422, 413) and its OpenAPI document."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from serve_fixtures import serve_in_process, service_settings

from toto.anomaly.detector import DetectionSettings

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def load() -> pd.Series:
    frame = pd.read_csv(EXAMPLES / "electricity_demand.csv", parse_dates=["timestamp"])
    return frame.set_index("timestamp")["load"]


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """The embedded model behind the service: detection needs a trained model to say something."""
    with serve_in_process(service_settings("toto-tiny", max_detect_length=2000, max_series=4)) as service:
        yield service.client


def _values(series: pd.Series) -> list[float | None]:
    return [None if pd.isna(v) else float(v) for v in series]


def test_detect_answers_the_librarys_scores_for_every_value(client, load, toto_tiny):
    series = load.iloc[:700].copy()
    series.iloc[500] += 3000
    body = {"series": [{"id": "load", "variates": {"load": _values(series)},
                        "timestamps": [t.isoformat() for t in series.index]}], "alerts_per_day": 1}
    answer = client.post("/detect", json=body)
    assert answer.status_code == 200, answer.text
    scores = answer.json()["series"][0]
    assert scores["id"] == "load" and scores["combined"] is None and scores["placement"] == "700 rows on a h grid"
    load_scores = scores["variates"]["load"]
    ours = toto_tiny.detect(series.to_numpy()[None, None], 3600.0, DetectionSettings(alerts_per_day=1))
    served = np.array([np.nan if s is None else s for s in load_scores["anomaly_score"]])
    np.testing.assert_allclose(served, ours.anomaly_score[0, 0], rtol=1e-9)
    assert np.nanargmax(served) == 500 and load_scores["is_anomaly"][500]
    assert len(load_scores["lower"]) == len(load_scores["upper"]) == len(load_scores["median"]) == 700


def test_irregular_timestamps_and_several_variates_are_scored_value_by_value(client, load):
    times = list(load.index[:300]) + [load.index[120]] + list(load.index[300:400])  # a repeat, out of order
    values = _values(load.iloc[:300]) + [float(load.iloc[120]) + 1] + _values(load.iloc[300:400])
    body = {"series": [{"variates": {"load": values, "half": [None if v is None else v / 2 for v in values]},
                        "timestamps": [t.isoformat() for t in times]}], "false_alarm_rate": 0.01}
    answer = client.post("/detect", json=body)
    assert answer.status_code == 200, answer.text
    scores = answer.json()["series"][0]
    assert len(scores["combined"]["anomaly_score"]) == 401 and set(scores["variates"]) == {"load", "half"}
    assert "1 repeated timestamps" in scores["placement"] and "1 steps back in time" in scores["placement"]
    assert scores["variates"]["load"]["anomaly_score"][300] is not None  # the repeated row has a score of its own


def test_concurrent_detections_share_passes_and_answer_as_alone(client, load):
    bodies = [{"series": [{"variates": {"load": _values(load.iloc[i * 50 : i * 50 + 400])},
                           "start": "2024-01-01T00:00:00", "freq": "h"}]} for i in range(4)]
    alone = [client.post("/detect", json=body).json() for body in bodies]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda body: client.post("/detect", json=body).json(), bodies))
    for one, other in zip(alone, together, strict=True):
        np.testing.assert_allclose(
            np.array(one["series"][0]["variates"]["load"]["anomaly_score"], dtype=float),
            np.array(other["series"][0]["variates"]["load"]["anomaly_score"], dtype=float), rtol=1e-6)


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"series": [{"variates": {"x": [1.0] * 2001}, "start": "2024-01-01", "freq": "h"}]}, 422, "max_detect_length"),
    ({"series": [{"variates": {"x": [1.0, 2.0, 3.0]}}]}, 422, "needs the series' time"),
    ({"series": [{"variates": {"x": [1.0, 2.0]}}], "alerts_per_day": 1, "false_alarm_rate": 0.1}, 400, "not both"),
    ({"series": [{"variates": {"x": [1.0, 2.0, 3.0]}, "timestamps": ["2024-01-01"] * 3}]}, 422,
     "distinct timestamp"),
    ({"series": [{"variates": {"x": [1.0, 2.0, 3.0]}}], "false_alarm_rate": 1.5}, 400, "false_alarm_rate"),
    ({"series": [{"variates": {"x": [1.0, 2.0, 3.0]}, "start": "2024-01-06", "freq": "B"}]}, 422,
     "start 2024-01-06 00:00:00 is a Saturday, not on the B grid"),  # as /forecast: not moved to the Monday
])
def test_bad_detect_requests_get_a_4xx_naming_the_problem(client, body, status, message):
    answer = client.post("/detect", json=body)
    assert answer.status_code == status and message in answer.text, answer.text
    assert client.get("/readyz").status_code == 200


def test_a_detection_over_the_memory_budget_gets_413(load):
    with serve_in_process(service_settings("toto-tiny", memory_budget_bytes=2**20)) as service:
        body = {"series": [{"variates": {"load": _values(load.iloc[:1000])}, "start": "2024-01-01", "freq": "h"}]}
        answer = service.client.post("/detect", json=body)
    assert answer.status_code == 413 and "memory_budget_bytes" in answer.text


def test_the_openapi_document_describes_detect(client):
    spec = client.get("/docs.json").json()
    operation = spec["paths"]["/detect"]["post"]
    assert {"200", "400", "413", "422", "503"} <= set(operation["responses"])
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["false_alarm_rate"]["nullable"] is True
    assert body["properties"]["band_level"]["exclusiveMinimum"] is True
