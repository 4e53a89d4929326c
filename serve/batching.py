"""Continuous batching: the series of concurrent requests share one forward pass, started as soon as the model is free.

Requests queue their series tasks; one loop hands the model everything queued (up to `max_batch_size` series,
whole requests, in arrival order) whenever the previous forward pass ends. Under load, the requests that arrive
during a pass ride the next one together, while the event loop parses and answers requests beside the pass (which
runs in the model's own process, `serve.model_process`); a lone request never waits for company. This replaces
BentoML's adaptive batching, whose batchable endpoint the service could only reach through its own HTTP client: a
second request, parse and answer per request (docs/serving.md, "How requests are batched").
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from serve.engine import SeriesTask
from serve.schemas import SeriesForecast
from toto.inference.forecaster import Cancellation

# A forward pass: the tasks, and a callable that says whether nobody waits for them any more.
ForwardPass = Callable[[list[SeriesTask], Cancellation], list[SeriesForecast]]


class QueueTimeout(Exception):
    """A request waited longer than the batching queue's latency bound for a forward pass."""


@dataclass
class _Queued:
    tasks: list[SeriesTask]
    abandoned: Cancellation
    answer: asyncio.Future[list[SeriesForecast]]
    queued_at: float = field(default_factory=time.monotonic)

    def unwanted(self) -> bool:
        return self.answer.done() or self.abandoned()


def _nobody_waits(batch: list[_Queued]) -> bool:
    return all(entry.unwanted() for entry in batch)


class ContinuousBatcher:
    """Merges the tasks of concurrent `forecast` calls into forward passes; one event loop uses it.

    `run_pass` runs in a worker thread (through `asyncio.to_thread`), one pass at a time, so the event loop keeps
    accepting requests meanwhile. A pass stops (`run_pass`'s cancellation) once none of its requests waits.
    """

    def __init__(self, run_pass: ForwardPass, max_batch_size: int, max_latency_s: float) -> None:
        self.run_pass = run_pass
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self._queue: deque[_Queued] = deque()
        self._queued = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    async def forecast(self, tasks: list[SeriesTask], abandoned: Cancellation) -> list[SeriesForecast]:
        """The forecasts of `tasks`, in order, from the next forward pass that has room for them."""
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run())
        entry = _Queued(tasks, abandoned, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        self._queued.set()
        return await entry.answer  # cancelling the caller cancels `answer`, which takes it out of its pass

    async def _run(self) -> None:
        while True:
            await self._queued.wait()
            batch = self._next_batch()
            if not batch:
                continue
            tasks = [task for entry in batch for task in entry.tasks]
            try:
                forecasts = await asyncio.to_thread(self.run_pass, tasks, partial(_nobody_waits, batch))
            except Exception as error:  # the pass failed for all its requests: each gets the error
                for entry in batch:
                    if not entry.answer.done():
                        entry.answer.set_exception(error)
                continue
            start = 0
            for entry in batch:
                if not entry.answer.done():
                    entry.answer.set_result(forecasts[start : start + len(entry.tasks)])
                start += len(entry.tasks)

    def _next_batch(self) -> list[_Queued]:
        """Queued requests in arrival order while their series fit `max_batch_size` (always at least one); those
        nobody waits for are dropped, and those queued past the latency bound are answered with `QueueTimeout`."""
        batch: list[_Queued] = []
        series = 0
        now = time.monotonic()
        while self._queue:
            entry = self._queue[0]
            if entry.unwanted():
                self._queue.popleft()
                continue
            if now - entry.queued_at > self.max_latency_s:
                self._queue.popleft()
                entry.answer.set_exception(QueueTimeout(
                    f"waited {now - entry.queued_at:.1f} s for a forward pass, past the batching queue's bound of "
                    f"{self.max_latency_s:.1f} s (TOTO_SERVE_MAX_LATENCY_MS): retry later, or raise the bound"))
                continue
            if batch and series + len(entry.tasks) > self.max_batch_size:
                break
            batch.append(self._queue.popleft())
            series += len(entry.tasks)
        if not self._queue:
            self._queued.clear()
        return batch
