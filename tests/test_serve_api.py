"""`POST /forecast` through BentoML's HTTP app, in process: shapes, quantile order, timestamps, equality with
TotoForecaster, missing values, and a 4xx with a message for every kind of bad input, after which the service is
still healthy. (What only a real server shows is in tests/test_serve_server.py.)"""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import torch
from serve_fixtures import (
    LIMITS,
    TRAINED_CONTEXT,
    co2_weekly,
    save_tiny_checkpoint,
    serve_in_process,
    service_settings,
    us_macro_quarterly,
    values,
)

from serve.logs import BENTOML_HTTP_LOGGER
from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.model.toto import Toto

TOTO2_CHECKPOINT = Path(__file__).parent / "fixtures" / "toto2" / "gqa"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serve-api") / "checkpoint")


@pytest.fixture(scope="module")
def client(checkpoint: Path) -> Iterator[httpx.Client]:
    with serve_in_process(service_settings(checkpoint)) as service:
        yield service.client


@pytest.fixture(scope="module")
def forecaster(checkpoint: Path) -> TotoForecaster:
    """The served checkpoint, loaded beside the service."""
    return TotoForecaster(Toto.from_pretrained(checkpoint).model)


def _check_quantiles_ordered(variate: dict, levels: list[float]) -> None:
    stacked = np.array([variate["quantiles"][str(level)] for level in levels])
    assert np.all(np.diff(stacked, axis=0) >= 0), "quantiles must not cross"
    assert np.all(np.isfinite(stacked))


def test_univariate_forecast_with_timestamps_and_missing_weeks(client: httpx.Client, checkpoint: Path) -> None:
    co2 = co2_weekly().iloc[:260]
    assert co2.isna().sum() > 0  # the real record has unmeasured weeks: they travel as null
    body = {
        "series": [{"id": "mauna-loa", "variates": {"co2": values(co2)},
                    "timestamps": [t.isoformat() for t in co2.index]}],
        "prediction_length": 12,
        "num_samples": 64,
        "quantile_levels": [0.1, 0.5, 0.9],
        "seed": 1,
    }
    response = client.post("/forecast", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_id"] == str(checkpoint)
    assert (answer["seed"], answer["prediction_length"], answer["num_samples"]) == (1, 12, 64)
    [forecast] = answer["forecasts"]
    assert forecast["id"] == "mauna-loa"
    expected = pd.date_range(co2.index[-1] + pd.offsets.Week(weekday=5), periods=12, freq="W-SAT")
    assert pd.DatetimeIndex(forecast["timestamps"]).equals(expected)
    variate = forecast["variates"]["co2"]
    assert list(forecast["variates"]) == ["co2"]
    assert all(len(variate[key]) == 12 for key in ("mean", "median"))
    assert set(variate["quantiles"]) == {"0.1", "0.5", "0.9"}
    _check_quantiles_ordered(variate, [0.1, 0.5, 0.9])
    assert variate["median"] == variate["quantiles"]["0.5"]
    assert variate["samples"] is None


def test_multivariate_forecast_returns_samples_per_variate(client: httpx.Client) -> None:
    macro = us_macro_quarterly()[["realgdp", "realcons", "realinv"]].iloc[-120:]
    body = {
        "series": [{"variates": {name: values(macro[name]) for name in macro},
                    "start": macro.index[0].isoformat(), "freq": "QS"}],
        "prediction_length": 8,
        "num_samples": 16,
        "quantile_levels": [0.05, 0.25, 0.5, 0.75, 0.95],
        "return_samples": True,
    }
    response = client.post("/forecast", json=body)
    assert response.status_code == 200, response.text
    [forecast] = response.json()["forecasts"]
    assert list(forecast["variates"]) == ["realgdp", "realcons", "realinv"]
    expected = pd.date_range(macro.index[-1] + pd.offsets.QuarterBegin(startingMonth=1), periods=8, freq="QS")
    assert pd.DatetimeIndex(forecast["timestamps"]).tz_localize(None).equals(expected)
    for variate in forecast["variates"].values():
        assert np.array(variate["samples"]).shape == (16, 8)
        assert np.allclose(variate["mean"], np.mean(variate["samples"], axis=0), rtol=1e-5)
        _check_quantiles_ordered(variate, [0.05, 0.25, 0.5, 0.75, 0.95])


@pytest.mark.parametrize("feedback", ["sample", "mean"])
def test_response_equals_toto_forecaster_on_same_input_and_seed(
    client: httpx.Client, forecaster: TotoForecaster, feedback: str
) -> None:
    co2 = co2_weekly()
    windows = [co2.iloc[start:start + 200] for start in (0, 700, 1400)]  # the first holds missing weeks
    body = {
        "series": [{"variates": {"co2": values(w)}} for w in windows],
        "prediction_length": 20,  # not a multiple of the patch size
        "num_samples": 48,
        "quantile_levels": [0.1, 0.9],
        "seed": 123,
        "return_samples": True,
    } | ({"feedback": feedback} if feedback != "sample" else {})  # "sample" is the default
    response = client.post("/forecast", json=body)
    assert response.status_code == 200, response.text
    stacked = np.stack([w.to_numpy()[None] for w in windows])  # (series, variates=1, time), NaN where missing
    expected = forecaster.forecast(
        MaskedTimeseries.from_series(stacked), 20, num_samples=48,
        samples_per_batch=LIMITS["samples_per_batch"], seed=123, feedback=feedback,
    )
    quantiles = expected.quantile([0.1, 0.9])
    for row, forecast in enumerate(response.json()["forecasts"]):
        got = forecast["variates"]["co2"]
        close = {"rtol": 1e-5, "atol": 1e-4}
        np.testing.assert_allclose(got["samples"], expected.samples[row, 0].T.numpy(), **close)
        np.testing.assert_allclose(got["mean"], expected.mean[row, 0].numpy(), **close)
        np.testing.assert_allclose(got["median"], expected.median[row, 0].numpy(), **close)
        np.testing.assert_allclose(got["quantiles"]["0.1"], quantiles[0, row, 0].numpy(), **close)
        np.testing.assert_allclose(got["quantiles"]["0.9"], quantiles[1, row, 0].numpy(), **close)


def test_context_is_cut_to_the_context_the_model_was_trained_with(client: httpx.Client) -> None:
    """Steps older than the checkpoint's trained context (training_summary.json) are not read, as in predict_df;
    a variate observed only before that context is refused, not forecast from nothing."""
    co2 = values(co2_weekly().iloc[-(TRAINED_CONTEXT + 150):])
    answers = []
    for window in (co2, co2[-TRAINED_CONTEXT:], co2[-TRAINED_CONTEXT + 1:]):
        body = {"series": [{"variates": {"co2": window}}], "prediction_length": 8, "num_samples": 16, "seed": 5}
        response = client.post("/forecast", json=body)
        assert response.status_code == 200, response.text
        answers.append(response.json()["forecasts"][0]["variates"]["co2"]["mean"])
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-5, atol=1e-4)
    assert not np.allclose(answers[1], answers[2], rtol=1e-5, atol=1e-4)  # one step fewer is read: it differs

    stale = [*co2[:100], *[None] * TRAINED_CONTEXT]
    body = {"series": [{"variates": {"co2": co2[-300:], "stale": stale[-300:]}}], "prediction_length": 8}
    response = client.post("/forecast", json=body)
    assert response.status_code == 422, response.text
    assert f"['stale'] have no observed value in the last {TRAINED_CONTEXT} steps" in response.text


def test_future_exogenous_values_drive_the_forecast_like_toto_forecaster(
    client: httpx.Client, forecaster: TotoForecaster
) -> None:
    macro = us_macro_quarterly()
    past, future = macro.iloc[-100:-6], macro.iloc[-6:]
    body = {
        "series": [{"variates": {"realcons": values(past["realcons"])},
                    "exogenous": {"realdpi": values(past["realdpi"])},
                    "future_exogenous": {"realdpi": values(future["realdpi"])}}],
        "prediction_length": 6,
        "num_samples": 32,
        "seed": 7,
    }
    response = client.post("/forecast", json=body)
    assert response.status_code == 200, response.text
    [forecast] = response.json()["forecasts"]
    assert list(forecast["variates"]) == ["realcons"]  # exogenous variables are given, not forecast
    expected = forecaster.forecast(
        MaskedTimeseries.from_series(past[["realcons", "realdpi"]].to_numpy().T[None], num_exogenous_variables=1),
        6, num_samples=32, samples_per_batch=LIMITS["samples_per_batch"], seed=7,
        future_exogenous_variables=torch.tensor(future[["realdpi"]].to_numpy().T[None], dtype=torch.float32),
        exogenous_layout="aligned",  # the layout the model is fine-tuned on (toto.inference.covariates)
    )
    np.testing.assert_allclose(forecast["variates"]["realcons"]["median"], expected.median[0, 0], rtol=1e-5)


def test_missing_values_anywhere_are_accepted(client: httpx.Client) -> None:
    cpu = [None, None, 0.4, 0.45, None, 0.5, 0.52, None, 0.49, 0.51, 0.5, None]
    body = {"series": [{"variates": {"cpu": cpu, "memory": [0.6] * 11 + [None]}}], "prediction_length": 4,
            "num_samples": 8}
    response = client.post("/forecast", json=body)
    assert response.status_code == 200, response.text
    for variate in response.json()["forecasts"][0]["variates"].values():
        assert len(variate["median"]) == 4 and np.all(np.isfinite(variate["median"]))


def _body(**overrides: object) -> dict:
    series = {"variates": {"cpu": [0.4, 0.5, 0.45, 0.6, 0.55]}}
    return {"series": [series], "prediction_length": 3, "num_samples": 8, **overrides}


def _raw(text: str) -> bytes:
    return text.encode()


BAD_INPUTS = {
    # name: (body as JSON-able value or raw bytes, expected status, a phrase the message must contain)
    "malformed JSON": (_raw('{"series": [{"variates": '), 400, "Invalid JSON"),
    "empty body": (b"", 400, "series"),
    "not an object": ([1, 2, 3], 400, "Input should be an object"),
    "horizon as string": (_body(prediction_length="12"), 400, "prediction_length"),
    "values as strings": (_body(series=[{"variates": {"cpu": ["0.4", "0.5"]}}]), 400, "valid number"),
    "boolean samples": (_body(num_samples=True), 400, "num_samples"),
    "unknown field": (_body(horizon=3), 400, "horizon"),
    "ragged variates": (_body(series=[{"variates": {"a": [1, 2, 3], "b": [1, 2]}}]), 400, "same length"),
    "NaN literal": (_raw('{"series": [{"variates": {"a": [1, NaN, 2]}}], "prediction_length": 3}'), 400, "finite"),
    "Infinity literal": (_raw('{"series": [{"variates": {"a": [Infinity, 2]}}], "prediction_length": 3}'), 400,
                         "finite"),
    "-Infinity literal": (_raw('{"series": [{"variates": {"a": [1, -Infinity]}}], "prediction_length": 3}'), 400,
                          "finite"),
    "value too large": (_body(series=[{"variates": {"a": [1e31, 2.0]}}]), 400, "less than or equal"),
    "no series": (_body(series=[]), 400, "series"),
    "no variates": (_body(series=[{"variates": {}}]), 400, "variates"),
    "empty arrays": (_body(series=[{"variates": {"a": [], "b": []}}]), 400, "at least 1 item"),
    "all-null variate": (_body(series=[{"variates": {"a": [None, None]}}]), 400, "no observed value"),
    "horizon zero": (_body(prediction_length=0), 400, "prediction_length"),
    "horizon negative": (_body(prediction_length=-5), 400, "prediction_length"),
    "horizon over limit": (_body(prediction_length=65), 422, "max_prediction_length=64"),
    "huge horizon": (_body(prediction_length=10**18), 422, "max_prediction_length=64"),
    "zero samples": (_body(num_samples=0), 400, "num_samples"),
    "too many samples": (_body(num_samples=257), 422, "max_num_samples=256"),
    "context over limit": (_body(series=[{"variates": {"a": [1.0] * 513}}]), 422, "max_context_length=512"),
    "too many variates": (_body(series=[{"variates": {f"v{i}": [1.0, 2.0] for i in range(9)}}]), 422,
                          "max_variates=8"),
    "too many series": (_body(series=[{"variates": {"a": [1.0, 2.0]}}] * 41), 422, "max_series=40"),
    "too many quantiles": (_body(quantile_levels=[i / 20 for i in range(1, 11)]), 422, "max_quantile_levels=9"),
    "quantile level 1.5": (_body(quantile_levels=[0.5, 1.5]), 400, "quantile_levels"),
    "duplicate quantiles": (_body(quantile_levels=[0.5, 0.5]), 400, "duplicates"),
    "negative seed": (_body(seed=-1), 400, "seed"),
    "start without freq": (_body(series=[{"variates": {"a": [1.0, 2.0]}, "start": "2024-01-01T00:00:00"}]), 400,
                           "needs freq"),
    "unknown freq": (_body(series=[{"variates": {"a": [1.0, 2.0]}, "start": "2024-01-01", "freq": "fortnight"}]),
                     422, "'fortnight' is not a pandas frequency"),
    "empty freq": (_body(series=[{"variates": {"a": [1.0, 2.0]}, "start": "2024-01-01", "freq": ""}]),
                   422, "'' is not a pandas frequency"),
    "unknown freq without timestamps": (_body(series=[{"variates": {"a": [1.0, 2.0]}, "freq": "fortnight"}]),
                                        422, "'fortnight' is not a pandas frequency"),
    "timestamps past 9999": (_body(series=[{"variates": {"a": [1.0, 2.0]}, "start": "9999-12-01", "freq": "D"}],
                                   prediction_length=60), 422, "cannot continue the timestamps"),
    "sub-second timestamps": (_body(series=[{"variates": {"a": [1.0, 2.0, 3.0]}, "timestamps": [
        "2024-01-01T00:00:00.000Z", "2024-01-01T00:00:00.100Z", "2024-01-01T00:00:00.200Z"]}]), 422,
        "2024-01-01 00:00:00.100000+00:00 has a fraction of a second"),
    "three timestamps over two years at 1 s": (_body(series=[{"variates": {"a": [1.0, 2.0, 3.0]}, "timestamps": [
        "2022-01-01T00:00:00Z", "2022-01-01T00:00:01Z", "2024-01-01T00:00:00Z"]}]), 422,
        "3 rows spread over 63072001 steps of s"),
    "start on a Saturday for business days": (
        _body(series=[{"variates": {"a": [1.0, 2.0]}, "start": "2024-01-06", "freq": "B"}]), 422,
        "start 2024-01-06 00:00:00 is a Saturday, not on the B grid"),
    "start on a Monday for W-FRI": (_body(series=[{"variates": {"a": [1.0, 2.0]}, "start": "2024-01-08",
                                                   "freq": "W-FRI"}]), 422, "not on the W-FRI grid"),
    "start on the 15th for MS": (_body(series=[{"variates": {"a": [1.0, 2.0]}, "start": "2024-01-15",
                                                "freq": "MS"}]), 422, "not on the MS grid"),
    "duplicate timestamps": (_body(series=[{"variates": {"a": [1.0, 2.0, 3.0]},
                                            "timestamps": ["2024-01-01", "2024-01-01", "2024-01-02"]}]),
                             422, "duplicate timestamp"),
    "timestamps off their grid": (_body(series=[{"variates": {"a": [1.0, 2.0, 3.0, 4.0]},
                                                 "timestamps": [0, 600, 1200, 1500]}]), 422, "regular 10min grid"),
    "duplicated JSON key": (_raw('{"series": [{"variates": {"cpu": [1, 2, 3], "cpu": [4, 5, 6]}}], '
                                 '"prediction_length": 3}'), 400, "'cpu' more than once"),
    "wrong number of timestamps": (_body(series=[{"variates": {"a": [1.0, 2.0]}, "timestamps": [0]}]), 400,
                                   "1 timestamps for 2 values"),
    "future exogenous of wrong length": (
        _body(series=[{"variates": {"a": [1.0, 2.0]}, "exogenous": {"x": [0.0, 1.0]},
                       "future_exogenous": {"x": [1.0]}}]), 400, "prediction_length=3"),
    "exogenous without future values": (_body(series=[{"variates": {"a": [1.0, 2.0]}, "exogenous": {"x": [0.0, 1.0]}}]),
                                        400, "future_exogenous"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gets_4xx_with_a_message_and_server_stays_healthy(client: httpx.Client, name: str) -> None:
    body, status, phrase = BAD_INPUTS[name]
    if isinstance(body, bytes):
        response = client.post("/forecast", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/forecast", json=body)
    assert response.status_code == status, response.text
    assert phrase in response.text
    assert response.json()["error"]
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200


NESTED = {
    "arrays 1,000 deep": b"[" * 1000 + b"]" * 1000,
    "arrays 5,000 deep": b"[" * 5000 + b"]" * 5000,
    "arrays 100,000 deep": b"[" * 100_000 + b"]" * 100_000,  # 200,000 bytes: the test service's body limit
    "objects 5,000 deep": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "unclosed arrays 100,000 deep": b"[" * 100_000,
}


@pytest.mark.parametrize("name", list(NESTED))
def test_deeply_nested_json_gets_a_one_line_400_and_the_server_still_answers(client: httpx.Client, name: str) -> None:
    """Issue 28: 1,000 levels of brackets made the guard's JSON parser raise RecursionError, and the request hung
    until the timeout and then answered 500. Any depth past the guard's bound is a 400 naming it."""
    from serve.guard import MAX_JSON_DEPTH

    response = client.post("/forecast", content=NESTED[name], headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert f"limit of {MAX_JSON_DEPTH} levels" in error and "\n" not in error
    assert client.get("/livez").status_code == 200
    assert client.post("/forecast", json=_body()).status_code == 200


def test_brackets_and_escaped_quotes_inside_strings_do_not_count_as_nesting(client: httpx.Client) -> None:
    from serve.guard import MAX_JSON_DEPTH

    name = 'cpu "[' + "[" * (2 * MAX_JSON_DEPTH)  # a quote, escaped in JSON, then brackets: all one string
    response = client.post("/forecast", json=_body(series=[{"id": "{" * 100, "variates": {name: [0.4, 0.5, 0.6]}}]))
    assert response.status_code == 200, response.text
    assert list(response.json()["forecasts"][0]["variates"]) == [name]


def test_oversize_body_gets_413_whether_or_not_its_length_is_declared(client: httpx.Client) -> None:
    body = json.dumps(_body(series=[{"variates": {"a": [316.123456] * 30_000}}])).encode()
    assert len(body) > LIMITS["max_body_bytes"]
    declared = client.post("/forecast", content=body, headers={"content-type": "application/json"})
    chunks = (body[i:i + 16_384] for i in range(0, len(body), 16_384))  # no Content-Length: chunked transfer
    streamed = client.post("/forecast", content=chunks, headers={"content-type": "application/json"})
    for response in (declared, streamed):
        assert response.status_code == 413
        assert "max_body_bytes=200000" in response.json()["error"]


def test_non_json_media_type_gets_415(client: httpx.Client) -> None:
    response = client.post("/forecast", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]


def test_still_serving_and_probes_metrics_and_openapi_are_up(client: httpx.Client) -> None:
    assert client.post("/forecast", json=_body()).status_code == 200
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "toto_forecast_batch_series_count" in metrics.text
    spec = client.get("/docs.json").json()
    assert "/forecast" in spec["paths"]


def test_gaps_in_timestamps_are_missing_values_as_in_the_table_rules(client: httpx.Client) -> None:
    hours = pd.date_range("2024-01-01", periods=12, freq="h")
    cpu = [0.4, 0.5, 0.45, 0.6, 0.55, 0.5, 0.52, 0.58, 0.61, 0.57, 0.5, 0.49]
    kept = [i for i in range(12) if i not in (4, 5)]  # two hours never reported
    gapped = {"variates": {"cpu": [cpu[i] for i in kept]}, "timestamps": [hours[i].isoformat() for i in kept]}
    filled = {"variates": {"cpu": [cpu[i] if i in kept else None for i in range(12)]},
              "timestamps": [t.isoformat() for t in hours]}
    answers = [client.post("/forecast", json=_body(series=[series], seed=3)) for series in (gapped, filled)]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    first, second = (a.json()["forecasts"][0] for a in answers)
    assert first == second
    assert pd.Timestamp(first["timestamps"][0]) == hours[-1] + pd.Timedelta("1h")


def test_timestamps_are_read_as_by_the_cli_across_a_dst_switch_and_before_1677(client: httpx.Client) -> None:
    paris = pd.date_range("2024-03-30 20:00", periods=12, freq="h", tz="Europe/Paris")  # +01:00, then +02:00
    old = [f"{1000 + i}-01-01" for i in range(12)]
    cpu = [0.4, 0.5, 0.45, 0.6, 0.55, 0.5, 0.52, 0.58, 0.61, 0.57, 0.5, 0.49]
    after_paris = paris[-1].tz_convert("UTC") + pd.Timedelta("1h")  # the hours continue in UTC
    for timestamps, expected in (([t.isoformat() for t in paris], after_paris),
                                 (old, pd.Timestamp("1012-01-01")), (None, pd.Timestamp("0003-01-01"))):
        series = {"variates": {"cpu": cpu}, "timestamps": timestamps} if timestamps else {
            "variates": {"cpu": cpu[:2]}, "start": "0001-01-01", "freq": "YS"}
        response = client.post("/forecast", json=_body(series=[series]))
        assert response.status_code == 200, response.text
        assert pd.Timestamp(response.json()["forecasts"][0]["timestamps"][0]) == expected


def test_default_number_of_samples_is_the_cli_default(client: httpx.Client) -> None:
    from toto.cli import _parser
    from toto.options import DEFAULT_NUM_SAMPLES

    body = _body()
    del body["num_samples"]
    answer = client.post("/forecast", json=body).json()
    # The CLI leaves the number to the pipeline, whose default for sampling models is the service's.
    assert _parser().parse_args(["forecast", "x.csv", "-p", "3"]).num_samples is None
    assert answer["num_samples"] == DEFAULT_NUM_SAMPLES == 256


def test_client_errors_are_one_warning_line_without_a_traceback(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """BentoML logs the exception of every failed request as an ERROR with its traceback; a client's mistake is
    one WARNING line naming the problem instead (serve.logs)."""
    with caplog.at_level(logging.INFO, logger=BENTOML_HTTP_LOGGER):
        assert client.post("/forecast", json=_body(prediction_length="12")).status_code == 400
    [record] = [r for r in caplog.records if r.name == BENTOML_HTTP_LOGGER]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "client error" in record.getMessage() and "prediction_length" in record.getMessage()
    assert "\n" not in record.getMessage()


def test_openapi_document_lists_version_errors_and_nullable_seed(client: httpx.Client) -> None:
    from serve.openapi import package_version

    spec = client.get("/docs.json").json()
    assert spec["info"]["version"] == package_version() != "None"
    operation = spec["paths"]["/forecast"]["post"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(operation["responses"])
    error = operation["responses"]["422"]["content"]["application/json"]["schema"]
    assert error["properties"]["detail"]["type"] == "array"
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["seed"]["nullable"] is True
    assert body["properties"]["num_samples"]["nullable"] is True and "256 when left out" in (
        body["properties"]["num_samples"]["description"])


def test_openapi_document_states_what_a_variate_needs_and_the_server_refuses_the_rest(client: httpx.Client) -> None:
    """Issue 28: the document accepted `"variates": {"": []}`, which the server refused. Names of at least one
    character and at least one value per variate now come from the same pydantic constraints as the checks."""
    schemas = client.get("/docs.json").json()["components"]["schemas"]
    fields = {"SeriesInput": ("variates", "exogenous", "future_exogenous"), "DetectSeries": ("variates",)}
    for model, names in fields.items():
        for name in names:
            field = schemas[model]["properties"][name]
            assert field["propertyNames"] == {"minLength": 1}, (model, name)
            assert field["additionalProperties"]["minItems"] == 1, (model, name)
    for variates, problem in (({"": []}, "at least 1 character"), ({"": [1.0, 2.0]}, "at least 1 character"),
                              ({"cpu": []}, "at least 1 item")):
        for route in ("/forecast", "/detect"):
            body = _body(series=[{"variates": variates}]) if route == "/forecast" else {
                "series": [{"variates": variates}], "false_alarm_rate": 0.01}
            response = client.post(route, json=body)
            assert response.status_code == 400, response.text
            [detail] = [d for d in response.json()["detail"] if problem in d["msg"]]
            assert detail["loc"][:3] == ["series", 0, "variates"]


def test_service_serves_a_toto2_checkpoint() -> None:
    """A quantile model (Toto 2.0, a real checkpoint with random weights) behind the same endpoint: its quantiles,
    its refusals of what only a sampling model does, and its known-future covariates."""
    body = {"series": [{"id": "web-1", "variates": {"cpu": [float(40 + i % 12) for i in range(64)]}}],
            "prediction_length": 8, "quantile_levels": [0.25, 0.5]}
    with serve_in_process(service_settings(TOTO2_CHECKPOINT)) as service:
        client = service.client
        answer = client.post("/forecast", json=body)
        assert answer.status_code == 200, answer.text
        cpu = answer.json()["forecasts"][0]["variates"]["cpu"]
        assert len(cpu["quantiles"]["0.25"]) == 8 and cpu["mean"] == cpu["median"]
        refused = client.post("/forecast", json={**body, "return_samples": True})
        assert refused.status_code == 422 and "return_samples" in refused.text
        refused = client.post("/forecast", json={**body, "feedback": "mean"})
        assert refused.status_code == 422 and "feeds back no samples; leave feedback out" in refused.text
        # Known-future covariates reach a Toto 2.0 forecast through the service, as in predict_df. The output
        # at a patch sees covariates up to that patch, so they inform the horizon from its second patch on.
        deploys = {}
        for flag in (0.0, 1.0):
            series = {**body["series"][0], "exogenous": {"deploy": [0.0] * 64},
                      "future_exogenous": {"deploy": [flag] * 16}}
            answer = client.post("/forecast", json={**body, "series": [series], "prediction_length": 16})
            assert answer.status_code == 200, answer.text
            assert list(answer.json()["forecasts"][0]["variates"]) == ["cpu"]
            deploys[flag] = answer.json()["forecasts"][0]["variates"]["cpu"]["median"]
        assert deploys[0.0] != deploys[1.0]
