"""Start-up of the forecasting service: a checkpoint that cannot be loaded keeps the service unready, and every
probe and forecast says why, instead of the process dying silently or answering with a model it does not have."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

from pathlib import Path

from serve_fixtures import serve_in_process, service_settings


def test_unloadable_checkpoint_keeps_the_service_unready_and_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    with serve_in_process(service_settings(missing)) as service:  # returns once loading has failed
        client = service.client
        assert client.get("/livez").status_code == 503
        assert client.get("/readyz").status_code == 503
        body = {"series": [{"variates": {"cpu": [0.4, 0.5, 0.45]}}], "prediction_length": 2}
        response = client.post("/forecast", json=body)
        assert response.status_code == 503
        assert "cannot load checkpoint" in response.json()["error"] and str(missing) in response.json()["error"]
