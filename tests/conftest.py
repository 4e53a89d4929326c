"""Settings shared by every test module, the embedded model loaded once per run, and the guard of the fast lane.

Markers (pyproject.toml): `integration` marks a test of a workflow end to end: it boots a real `bentoml serve`, starts
a process (a command run as a subprocess, spawned workers) or trains a model through the CLI or a tutorial;
`make test-fast` leaves those out. A test without it that starts a process fails here, naming what it started, so
that the fast lane cannot fill up with server boots and subprocesses unnoticed.
"""

from __future__ import annotations

import multiprocessing.process
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from toto.pipeline import ForecastPipeline

# The test models are tiny: one thread is faster than several on a small shared CPU, and subprocesses the tests
# start (CLI runs, servers) inherit the setting.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# BentoML's Prometheus client counts in multiprocess mode, in files under this folder; `bentoml serve` makes one for
# its workers, the in-process services of the tests (serve_fixtures.serve_in_process) use this one. prometheus_client
# reads it when it is imported, so it is set before any test module imports BentoML.
PROMETHEUS_DIR = None if "PROMETHEUS_MULTIPROC_DIR" in os.environ else tempfile.mkdtemp(prefix="open-toto-prometheus-")
if PROMETHEUS_DIR is not None:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_DIR

import torch  # noqa: E402  (after OMP_NUM_THREADS)

torch.set_num_threads(1)

# Markers under which a test may start processes.
PROCESS_MARKERS = ("integration", "container")
# The one process a library starts on its own: jsonargparse (LightningCLI's parser) resolves type stubs with
# typeshed_client, which asks the interpreter for its sys.path in a subprocess, once per process (cached). It is a
# probe of this Python, not a server or a command under test.
LIBRARY_PROBES = ([sys.executable, "-c", "import sys, json; print(json.dumps(sys.path))"],)
STARTED = pytest.StashKey[list[str]]()
_guarded: pytest.Item | None = None  # the running test, while it may not start processes


def _refuse_outside_integration(what: str, command: object = None) -> None:
    """Fail the running test if it may not start processes: `what` names the process it was starting."""
    if _guarded is None or command in LIBRARY_PROBES:
        return
    _guarded.stash.setdefault(STARTED, []).append(what)
    pytest.fail(f"{_guarded.nodeid} started {what} without the integration marker: mark it "
                "@pytest.mark.integration (make test-fast leaves it out), or keep the work in this process",
                pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    """Watch the two doors to a new process: `subprocess.Popen` (commands, `bentoml serve`, docker) and
    multiprocessing's `Process.start` (spawned or forked workers, process pools, DataLoader workers, DDP)."""
    popen_init, process_start = subprocess.Popen.__init__, multiprocessing.process.BaseProcess.start

    def guarded_popen_init(self: subprocess.Popen, args: Any, *more: Any, **options: Any) -> None:
        _refuse_outside_integration(f"a subprocess ({args!r:.200})", args)
        popen_init(self, args, *more, **options)

    def guarded_process_start(self: multiprocessing.process.BaseProcess) -> None:
        _refuse_outside_integration(f"a {type(self).__name__} ({self.name})")
        process_start(self)

    subprocess.Popen.__init__ = guarded_popen_init  # type: ignore[method-assign]
    multiprocessing.process.BaseProcess.start = guarded_process_start  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    if PROMETHEUS_DIR is not None:
        shutil.rmtree(PROMETHEUS_DIR, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Guard setup, call and teardown of every test without a process marker (its module's fixtures included)."""
    global _guarded
    _guarded = None if any(item.get_closest_marker(name) for name in PROCESS_MARKERS) else item
    try:
        yield
    finally:
        _guarded = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A process started from another thread (an event loop's, a worker's) fails the test too: the failure raised
    there may never reach the test."""
    outcome = yield
    report = outcome.get_result()
    started = item.stash.get(STARTED, [])
    if started and report.passed:
        report.outcome = "failed"
        report.longrepr = f"started {', '.join(started)} without the integration marker"
    started.clear()  # each one reported once: by this phase's own failure, or here


@pytest.fixture(scope="session")
def toto_tiny() -> Iterator[ForecastPipeline]:
    """The embedded model, `ForecastPipeline.from_pretrained("toto-tiny")`, loaded once for the whole run.

    Shared by every test that uses it, so none may change it (its dtype, its weights, its options): a test that
    needs a changed copy saves it to a folder, or builds a pipeline around `.model`. Checked unchanged at the end."""
    from toto.pipeline import ForecastPipeline  # imported when a test first asks for the model

    pipeline = ForecastPipeline.from_pretrained("toto-tiny", device="cpu")
    weights = {name: tensor.clone() for name, tensor in pipeline.model.state_dict().items()}
    options = (pipeline.feedback, pipeline.context_length, pipeline.context_ensemble, pipeline.model.training)
    yield pipeline
    changed = [name for name, tensor in pipeline.model.state_dict().items() if not torch.equal(tensor, weights[name])]
    assert not changed, f"a test changed the shared toto-tiny's weights: {changed[:5]}"
    now = (pipeline.feedback, pipeline.context_length, pipeline.context_ensemble, pipeline.model.training)
    assert now == options, f"a test changed the shared toto-tiny's options: {options} -> {now}"
