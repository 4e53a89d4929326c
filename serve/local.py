"""Run the service as a real `bentoml serve` process on a free 127.0.0.1 port, for tests and benchmarks.

The server runs in its own process group (BentoML forks an arbiter and workers), is ready when `/readyz` answers
200, and is stopped group-wide afterwards so that no worker outlives the block.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import httpx

REPO = Path(__file__).resolve().parents[1]


class LocalServer(NamedTuple):
    url: str
    pid: int  # of the `bentoml serve` process, leader of the server's process group
    log_path: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(
    workdir: Path, env: Mapping[str, object] | None = None, timeout_s: float = 180, probe: str = "/readyz"
) -> Iterator[LocalServer]:
    """`bentoml serve serve.service:TotoService` with `TOTO_SERVE_*` settings from `env`, BentoML's home and the
    server log in `workdir`; yields once `probe` answers 200 (by default: once the model is loaded)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {
        **os.environ,
        "BENTOML_HOME": str(workdir / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        **{key: str(value) for key, value in (env or {}).items()},
    }
    bentoml = Path(sys.executable).parent / "bentoml"
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(bentoml), "serve", "serve.service:TotoService", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = LocalServer(f"http://127.0.0.1:{port}", process.pid, log_path)
    try:
        _wait_for(server, process, probe, timeout_s)
        yield server
    finally:
        _stop(process)


def _wait_for(server: LocalServer, process: subprocess.Popen, probe: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{_tail(server.log_path)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.url}{probe}", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{probe} did not answer 200 within {timeout_s} s:\n{_tail(server.log_path)}")


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:]


def _stop(process: subprocess.Popen) -> None:
    """Stop the server, then any worker it forked that is still there (they share its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
