"""The model in a process of its own, so that forward passes never wait for the event loop's Python.

A forward pass is thousands of small torch calls, and each one takes Python's GIL back after its kernel. In one
process, the event loop (parsing, validating and answering requests) holds that lock whenever it runs: measured
on 2 cores, a thread running Python 30% of the time slowed a 13-series pass from 210 to 280 ms, while a process
doing the same beside it did not slow it at all. So the service's event loop stays in the BentoML worker and the
model runs in a child process (one `ProcessPoolExecutor` worker, started with "spawn"), one pass at a time.

Tasks go to the child and forecasts come back pickled (a few kB per series). The child's exceptions are re-raised
in the service, which answers them as before (413 for memory, and so on). A pass is cancelled through a shared
counter that names the pass to stop, checked by the child between decoding steps. If the child dies (killed by
the kernel's out-of-memory killer, say), the pass fails with `ModelProcessDied` and a new child is started at once:
it loads the checkpoint while nobody waits for it, and `loaded` (the service's readiness) is false until it has.
If it cannot load, `load_failure` says why (the service's liveness), so that an orchestrator restarts the server
rather than leaving it unready for good.

`InProcessModel` runs the same passes on the service's own engine instead (`TOTO_SERVE_MODEL_PROCESS=false`): the
in-process tests serve that way, without a child to spawn for every service they make.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.sharedctypes import Synchronized
from typing import Protocol

from serve.engine import Answer, EngineSpec, ForecastEngine, Task, load_engine
from toto.inference.cancel import Cancellation, cancelled

log = logging.getLogger(__name__)

# How often a pass in flight asks its `cancel` hook whether anybody still waits for it.
CANCEL_POLL_S = 0.1


class ModelProcessDied(Exception):
    """The model's process ended during a forward pass; the next pass starts a new one."""


class ForwardPasses(Protocol):
    """Where the service's forward passes run: a child process (`ModelProcess`) or its own (`InProcessModel`)."""

    @property
    def loaded(self) -> bool: ...

    @property
    def load_failure(self) -> str | None: ...

    def run(self, tasks: list[Task], pass_limit_bytes: int, cancel: Cancellation) -> list[Answer]: ...

    def close(self) -> None: ...


class InProcessModel:
    """Forward passes on an engine loaded in this process, run by the calling worker thread; cancellation is
    checked by the engine itself between decoding steps."""

    def __init__(self, engine: ForecastEngine) -> None:
        self._engine = engine

    @property
    def loaded(self) -> bool:
        return True  # the engine was loaded before this object was made

    @property
    def load_failure(self) -> str | None:
        return None

    def run(self, tasks: list[Task], pass_limit_bytes: int, cancel: Cancellation) -> list[Answer]:
        return self._engine.run(tasks, pass_limit_bytes, cancel)

    def close(self) -> None:
        """Nothing to stop: the engine goes with the service."""


class ModelProcess:
    """A child process holding a `ForecastEngine`; `forecast` runs one forward pass there and waits for it."""

    def __init__(self, spec: EngineSpec) -> None:
        self._spec = spec
        self._context = multiprocessing.get_context("spawn")  # no fork of a process with threads and torch state
        self._stop_pass = self._context.Value("q", -1, lock=False)  # the id of the pass the child should stop
        self._next_pass = 0
        self._start()

    def _start(self) -> None:
        """A new child, loading the engine now (the pool starts its worker, and so its initializer, on the first
        submit) rather than when the next request comes."""
        self._pool = ProcessPoolExecutor(1, mp_context=self._context, initializer=_load_engine,
                                         initargs=(self._spec, self._stop_pass))
        self._loading = self._pool.submit(_nothing)

    @property
    def loaded(self) -> bool:
        """Whether the child has loaded its engine (false while a replacement loads, or if it could not)."""
        return self._loading.done() and self.load_failure is None

    @property
    def load_failure(self) -> str | None:
        """Why the child could not load its engine, once it has failed; None while it loads and once it has."""
        if not self._loading.done() or (error := self._loading.exception()) is None:
            return None
        return f"the model process could not load checkpoint {self._spec.checkpoint!r}: {type(error).__name__}: {error}"

    def settle(self, timeout_s: float) -> None:
        """Wait until the child has loaded its engine or failed to (then `load_failure` says why); raises
        TimeoutError past `timeout_s`. Waits on the loading itself, so it returns the moment that ends."""
        done, _ = wait([self._loading], timeout=timeout_s)
        if not done:
            raise TimeoutError(f"the model process neither loaded {self._spec.checkpoint!r} nor failed within "
                               f"{timeout_s} s")

    def run(self, tasks: list[Task], pass_limit_bytes: int, cancel: Cancellation) -> list[Answer]:
        """`ForecastEngine.run(tasks, pass_limit_bytes)` in the child; `cancel` is polled meanwhile. Called from one
        thread at a time (the service's model lock)."""
        pass_id = self._next_pass
        self._next_pass += 1
        try:
            future = self._pool.submit(_run, pass_id, tasks, pass_limit_bytes)
            while True:
                try:
                    return future.result(timeout=CANCEL_POLL_S)
                except FutureTimeout:
                    if cancelled(cancel):
                        self._stop_pass.value = pass_id
        except BrokenProcessPool as error:
            log.error("the model process died during a forward pass of %d series; starting a new one", len(tasks))
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._start()
            raise ModelProcessDied(
                f"the model process died during this forecast ({error}); the service started a new one: retry, "
                "and if it happens again, send a smaller request or lower TOTO_SERVE_MEMORY_BUDGET_BYTES to what "
                "this machine has") from error

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# The child's side: its engine, loaded once by the pool's initializer, and the shared "stop this pass" counter.
_ENGINE: ForecastEngine | None = None
_STOP_PASS: Synchronized | None = None


def _load_engine(spec: EngineSpec, stop_pass: Synchronized) -> None:
    global _ENGINE, _STOP_PASS
    _ENGINE = load_engine(spec)
    _STOP_PASS = stop_pass


def _nothing() -> None:
    """A task that only makes the pool start its worker, whose initializer loads the engine."""


def _run(pass_id: int, tasks: list[Task], pass_limit_bytes: int) -> list[Answer]:
    assert _ENGINE is not None and _STOP_PASS is not None  # the pool's initializer set them
    stop = _STOP_PASS
    return _ENGINE.run(tasks, pass_limit_bytes, lambda: stop.value == pass_id)
