"""Start-up of the forecasting service: a checkpoint that cannot be loaded keeps the server unready, and every
probe and forecast says why, instead of the process dying silently or answering with a model it does not have."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from serve.local import local_server


def test_unloadable_checkpoint_keeps_the_server_unready_and_says_why(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-checkpoint"
    with local_server(tmp_path, {"TOTO_SERVE_CHECKPOINT": missing}, probe="/docs.json") as server:
        deadline = time.monotonic() + 60
        while httpx.get(f"{server.url}/livez").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)  # loading runs in the background; it fails within moments
        assert httpx.get(f"{server.url}/livez").status_code == 503
        assert httpx.get(f"{server.url}/readyz").status_code == 503
        body = {"series": [{"variates": {"cpu": [0.4, 0.5, 0.45]}}], "prediction_length": 2}
        response = httpx.post(f"{server.url}/forecast", json=body, timeout=30)
        assert response.status_code == 503
        assert "cannot load checkpoint" in response.json()["error"] and str(missing) in response.json()["error"]
