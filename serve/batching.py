"""Continuous batching: the series of concurrent requests share one forward pass, started once the model is free.

Requests queue their series tasks; one loop hands the model everything queued (up to `max_batch_size` series,
whole requests, in arrival order) whenever the previous forward pass ends. Under load, the requests that arrive
during a pass ride the next one together, while the event loop parses and answers requests beside the pass (which
runs in the model's own process, `serve.model_process`); a lone request never waits for company. This replaces
BentoML's adaptive batching, whose batchable endpoint the service could only reach through its own HTTP client: a
second request, parse and answer per request (docs/serving.md, "How requests are batched").

After a pass that answered several requests, the loop gathers before the next one (`_gather`): the clients just
answered are likely to send again, and a pass that starts at once takes only the requests that came during the
last one. 32 clients then alternate between passes of about 11 and 21 series, which cost 17 and 11 ms a series
in the service on two cores, against 9 ms in one pass of 32 (docs/benchmarks.md). So the loop waits, while
requests keep arriving (each within `GATHER_GAP_S` of the one before), until as many are queued as the last pass
answered plus those already waiting, and never longer than `GATHER_SHARE` of the last pass's time: at most a
quarter more latency when nobody comes back.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from serve.engine import Answer, Task
from toto.inference.cancel import Cancellation, cancelled

# Gathering after a pass that answered several requests: the longest wait, as a share of that pass's time, and the
# longest silence between arrivals that still counts as a burst of clients coming back.
GATHER_SHARE = 0.25
GATHER_GAP_S = 0.01

# A forward pass: the tasks, and a callable that says whether nobody waits for them any more.
ForwardPass = Callable[[list[Task], Cancellation], list[Answer]]


class QueueTimeout(Exception):
    """A request waited longer than the batching queue's latency bound for a forward pass."""


@dataclass
class _Queued:
    tasks: list[Task]
    abandoned: Cancellation
    answer: asyncio.Future[list[Answer]]
    queued_at: float = field(default_factory=time.monotonic)

    def unwanted(self) -> bool:
        return self.answer.done() or cancelled(self.abandoned)


def _nobody_waits(batch: list[_Queued]) -> bool:
    return all(entry.unwanted() for entry in batch)


class ContinuousBatcher:
    """Merges the tasks of concurrent `submit` calls (/forecast and /detect requests) into forward passes; one event
    loop uses it.

    `run_pass` runs in a worker thread (through `asyncio.to_thread`), one pass at a time, so the event loop keeps
    accepting requests meanwhile. A pass stops (`run_pass`'s cancellation) once none of its requests waits.
    """

    def __init__(self, run_pass: ForwardPass, max_batch_size: int, max_latency_s: float) -> None:
        self.run_pass = run_pass
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self._queue: deque[_Queued] = deque()
        self._queued = asyncio.Event()
        self._arrived = asyncio.Event()  # set by every arrival; `_gather` clears it to hear the next one
        self._loop: asyncio.Task[None] | None = None

    async def submit(self, tasks: list[Task], abandoned: Cancellation) -> list[Answer]:
        """The answers of `tasks` (forecasts, or scores of a detection), in order, from the next forward pass that has
        room for them."""
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run())
        entry = _Queued(tasks, abandoned, asyncio.get_running_loop().create_future())
        self._queue.append(entry)
        self._queued.set()
        self._arrived.set()
        return await entry.answer  # cancelling the caller cancels `answer`, which takes it out of its pass

    async def _run(self) -> None:
        answered, pass_seconds = 0, 0.0
        while True:
            await self._queued.wait()
            if answered > 1:
                await self._gather(answered, pass_seconds)
            batch = self._next_batch()
            if not batch:
                continue
            tasks = [task for entry in batch for task in entry.tasks]
            started = time.monotonic()
            try:
                forecasts = await asyncio.to_thread(self.run_pass, tasks, partial(_nobody_waits, batch))
            except Exception as error:  # the pass failed for all its requests: each gets the error
                for entry in batch:
                    if not entry.answer.done():
                        entry.answer.set_exception(error)
                answered = 0
                continue
            pass_seconds, answered = time.monotonic() - started, len(batch)
            start = 0
            for entry in batch:
                if not entry.answer.done():
                    entry.answer.set_result(forecasts[start : start + len(entry.tasks)])
                start += len(entry.tasks)

    async def _gather(self, answered: int, pass_seconds: float) -> None:
        """Wait for the `answered` clients of the last pass to come back, beside the requests already queued: until
        that many more are queued or the next pass would be full, while arrivals keep coming within
        `GATHER_GAP_S` of each other, and at most `GATHER_SHARE * pass_seconds`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_SHARE * pass_seconds
        wanted = len(self._queue) + answered
        while len(self._queue) < wanted and self._queued_series() < self.max_batch_size:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(GATHER_GAP_S, left))
            except asyncio.TimeoutError:  # builtin TimeoutError from 3.11; the project supports 3.10
                return  # the burst is over

    def _queued_series(self) -> int:
        return sum(len(entry.tasks) for entry in self._queue)

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
