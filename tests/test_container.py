"""The service image, built from the Dockerfile and run by a real Docker engine, answers from the host.

The CPU image is built with `tools.build_image` (the local Debian base image and torch wheel where this machine has
them; Docker's layer cache makes a rebuild after a code change take seconds), started with its port published on
127.0.0.1, and queried over HTTP with httpx: the probes, then `/forecast`, whose answer must equal the library's
forecast of the same embedded model in this process (so the image carries this tree's code and weights). Then the
container is stopped and must shut down cleanly. Marked `container` (minutes, deselected by `make test`):
`make test-container` starts the engine if needed and runs it. Without a reachable engine the module skips and says
why; with one, a base image it cannot get fails it (the image could not be tested).
"""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pandas as pd
from serve_fixtures import co2_weekly, values

from tools.build_image import base_image_problem, build_image, local_sources, pinned_torch_version
from toto.data.util.dataset import MaskedTimeseries
from toto.inference.forecaster import TotoForecaster
from toto.pipeline import ForecastPipeline

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]  # a cold build downloads ~1 GB of packages

TAG = "open-toto-serve:test"
SAMPLES_PER_BATCH = 32  # set in the container, used here for the same sampling stream


def _engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "no docker client on PATH (apt-get install docker.io; make test-container starts dockerd)"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0:
        lines = (info.stderr or info.stdout).strip().splitlines()
        reason = lines[-1] if lines else "docker info failed"
        return f"no Docker engine answers ({reason}); make test-container starts one"
    return None


def _docker(*args: str, timeout: float = 120) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CPU image, built from this tree (checked here, not at import, so that `make test` never asks Docker)."""
    if problem := _engine_problem():
        pytest.skip(problem)
    if problem := base_image_problem(local_sources()):
        pytest.fail(f"a Docker engine answers, but the image cannot be built: {problem}", pytrace=False)
    log_path = tmp_path_factory.mktemp("image") / "build.log"
    with open(log_path, "w") as log:
        seconds = build_image(TAG, log=log)
    print(f"{TAG} built in {seconds:.0f} s (log: {log_path})")
    return TAG


class Container:
    def __init__(self, container_id: str, url: str) -> None:
        self.id = container_id
        self.url = url

    def logs(self) -> str:
        result = subprocess.run(["docker", "logs", "--tail", "60", self.id], capture_output=True, text=True)
        return result.stdout + result.stderr

    def running(self) -> bool:
        return _docker("inspect", "--format", "{{.State.Running}}", self.id) == "true"


def _wait_until_ready(container: Container, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not container.running():
            raise RuntimeError(f"the container exited before /readyz answered 200:\n{container.logs()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{container.url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise TimeoutError(f"/readyz did not answer 200 within {timeout_s} s:\n{container.logs()}")


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Container]:
    """The image running with its port 3000 published on a free 127.0.0.1 port; removed afterwards."""
    name = f"open-toto-test-{uuid.uuid4().hex[:8]}"
    container_id = _docker(
        "run", "--detach", "--name", name, "--publish", "127.0.0.1::3000",
        "--env", f"TOTO_SERVE_SAMPLES_PER_BATCH={SAMPLES_PER_BATCH}", image,
    )
    try:
        address = _docker("port", container_id, "3000/tcp").splitlines()[0]  # 127.0.0.1:PORT
        running = Container(container_id, f"http://{address}")
        _wait_until_ready(running)
        yield running
    finally:
        subprocess.run(["docker", "rm", "--force", container_id], capture_output=True)


def test_image_holds_the_pinned_cpu_torch_and_runs_as_a_non_root_user(image: str) -> None:
    script = (
        "import importlib.metadata as m, os, torch; "
        "names = sorted(d.metadata['Name'].lower() for d in m.distributions()); "
        "print(torch.__version__, torch.version.cuda, os.getuid(), [n for n in names if n.startswith('nvidia')])"
    )
    version, cuda, uid, nvidia_packages = _docker("run", "--rm", image, "python", "-c", script).split(" ", 3)
    assert version == f"{pinned_torch_version()}+cpu"  # constraints.txt's pin, CPU build
    assert cuda == "None"
    # nvidia-ml-py (NVML bindings for BentoML's GPU metrics) is no CUDA; CUDA's pip packages are all nvidia-*.
    assert nvidia_packages == "['nvidia-ml-py']"
    assert uid == "10001"


def test_probes_and_forecast_answer_from_the_host_as_the_library_does(
    container: Container, toto_tiny: ForecastPipeline
) -> None:
    with httpx.Client(base_url=container.url, timeout=60) as client:
        assert client.get("/livez").status_code == 200
        assert client.get("/readyz").status_code == 200
        co2 = co2_weekly().iloc[:300]  # weekly, with missing weeks
        body = {
            "series": [{"id": "co2", "variates": {"co2": values(co2)}, "start": str(co2.index[0]), "freq": "W-SAT"}],
            "prediction_length": 12, "num_samples": 64, "quantile_levels": [0.1, 0.9], "seed": 7,
        }
        response = client.post("/forecast", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_id"] == "toto-tiny" and answer["seed"] == 7
    forecast = answer["forecasts"][0]
    assert forecast["id"] == "co2"
    weeks_after = [co2.index[-1] + pd.Timedelta(weeks=k) for k in range(1, 13)]
    assert [pd.Timestamp(t).tz_localize(None) for t in forecast["timestamps"]] == weeks_after
    assert toto_tiny.context_ensemble  # the service pools the embedded model's windows, as the library does
    expected = TotoForecaster(toto_tiny.model).forecast(
        MaskedTimeseries.from_series(co2.to_numpy()[None, None]), 12, num_samples=64,
        samples_per_batch=SAMPLES_PER_BATCH, seed=7, context_ensemble=toto_tiny.context_ensemble,
    )
    got = forecast["variates"]["co2"]
    close = {"rtol": 1e-5, "atol": 1e-4}
    np.testing.assert_allclose(got["mean"], expected.mean[0, 0].numpy(), **close)
    np.testing.assert_allclose(got["median"], expected.median[0, 0].numpy(), **close)
    np.testing.assert_allclose(got["quantiles"]["0.9"], expected.quantile([0.9])[0, 0, 0].numpy(), **close)


def test_container_stops_cleanly_on_docker_stop(container: Container) -> None:
    started = time.monotonic()
    _docker("stop", "--time", "60", container.id)
    assert time.monotonic() - started < 60  # not killed at the deadline
    assert _docker("inspect", "--format", "{{.State.ExitCode}}", container.id) == "0", container.logs()

