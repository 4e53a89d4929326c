"""`serve.batching.ContinuousBatcher`: requests that arrive during a pass share the next one, each gets its own
answers in order, a request nobody waits for is left out, and one queued past the latency bound gets QueueTimeout.
After a pass of several requests, the next one waits for their clients to come back; after a lone one it does not.
(The real service under load is tested in tests/test_serve_load.py.)"""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

import asyncio
import threading
import time

from serve.batching import GATHER_GAP_S, ContinuousBatcher, QueueTimeout


class RecordingModel:
    """A forward pass that answers each task with its upper-cased name and records every pass. It takes
    `pass_seconds` (the gathering rules below are a function of a pass's duration), and does not end before its
    `gate` is open: a test holds a pass there while it queues requests, instead of hoping they arrive in time."""

    def __init__(self, pass_seconds: float = 0.0) -> None:
        self.pass_seconds = pass_seconds
        self.passes: list[list[str]] = []
        self.started: list[float] = []  # time.monotonic() at the start of each pass
        self.running = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, tasks, cancel):
        self.started.append(time.monotonic())
        self.passes.append(list(tasks))
        self.running.set()
        self.gate.wait()
        time.sleep(self.pass_seconds)
        return [task.upper() for task in tasks]


def run(coroutine):
    return asyncio.run(coroutine)


async def hold_first_pass(model: RecordingModel, batcher: ContinuousBatcher) -> asyncio.Task:
    """Start a request of task "a" and return once its pass is running, held at the model's gate."""
    model.gate.clear()
    first = asyncio.create_task(batcher.submit(["a"], lambda: False))
    await asyncio.to_thread(model.running.wait)
    return first


def open_gate_after_queued(model: RecordingModel) -> None:
    """Open the gate once the tasks created so far have run up to their wait: asyncio runs ready callbacks in the
    order they were scheduled, and each new task's first step (queueing its request) was scheduled before this."""
    asyncio.get_running_loop().call_soon(model.gate.set)


def first_then(model: RecordingModel, later: list[list[str]], max_batch_size: int) -> list[list[str]]:
    """Answers to a request of task "a", then to `later` requests queued while a's pass runs."""

    async def scenario():
        batcher = ContinuousBatcher(model, max_batch_size=max_batch_size, max_latency_s=30)
        first = await hold_first_pass(model, batcher)
        rest = [asyncio.create_task(batcher.submit(tasks, lambda: False)) for tasks in later]
        open_gate_after_queued(model)
        return await asyncio.gather(first, *rest)

    return run(scenario())


def test_requests_arriving_during_a_pass_share_the_next_one_and_get_their_own_answers() -> None:
    model = RecordingModel()
    assert first_then(model, [["b", "c"], ["d"], ["e"]], max_batch_size=8) == [["A"], ["B", "C"], ["D"], ["E"]]
    assert model.passes == [["a"], ["b", "c", "d", "e"]]


def test_a_pass_takes_whole_requests_up_to_max_batch_size() -> None:
    model = RecordingModel()
    assert first_then(model, [["b", "c"], ["d", "e"]], max_batch_size=3) == [["A"], ["B", "C"], ["D", "E"]]
    assert model.passes == [["a"], ["b", "c"], ["d", "e"]]  # b, c, d, e would be 4 > 3 series


def test_requests_nobody_waits_for_are_left_out_and_late_ones_time_out() -> None:
    model = RecordingModel()
    max_latency_s = 0.2

    async def scenario():
        batcher = ContinuousBatcher(model, max_batch_size=8, max_latency_s=max_latency_s)
        first = await hold_first_pass(model, batcher)
        gone = asyncio.create_task(batcher.submit(["b"], lambda: True))  # its client left
        late = asyncio.create_task(batcher.submit(["c"], lambda: False))
        # The bound is a duration the batcher measures on its queue: c must wait past it while a's pass holds.
        await asyncio.sleep(1.5 * max_latency_s)
        model.gate.set()
        await first
        with pytest.raises(QueueTimeout, match="TOTO_SERVE_MAX_LATENCY_MS"):
            await late
        gone.cancel()
        fresh = await batcher.submit(["d"], lambda: False)  # the loop still serves new requests
        return fresh

    assert run(scenario()) == ["D"]
    assert model.passes == [["a"], ["d"]]


def test_a_failed_pass_fails_each_of_its_requests_and_the_next_pass_runs() -> None:
    calls = []

    def failing_once(tasks, cancel):
        calls.append(tasks)
        if len(calls) == 1:
            raise MemoryError("cannot allocate")
        return [task.upper() for task in tasks]

    async def scenario():
        batcher = ContinuousBatcher(failing_once, max_batch_size=8, max_latency_s=30)
        with pytest.raises(MemoryError):
            await batcher.submit(["a"], lambda: False)
        return await batcher.submit(["b"], lambda: False)

    assert run(scenario()) == ["B"]


def closed_loop(model: RecordingModel, clients: int, rounds: int, think_s: float) -> list[float]:
    """`clients` clients, each sending `rounds` requests one after the other (its first at once, each next one
    `think_s` times its number after its answer, as clients parsing answers in turn do); returns when each request
    was sent (time.monotonic())."""
    sent: list[float] = []

    async def client(batcher: ContinuousBatcher, number: int) -> None:
        for round_ in range(rounds):
            sent.append(time.monotonic())
            await batcher.submit([f"{number}.{round_}"], lambda: False)
            await asyncio.sleep(think_s * number)

    async def scenario():
        batcher = ContinuousBatcher(model, max_batch_size=64, max_latency_s=30)
        await asyncio.gather(*(client(batcher, number) for number in range(clients)))

    run(scenario())
    return sent


def test_after_a_pass_of_several_requests_the_next_pass_waits_for_their_clients_to_come_back() -> None:
    # 4 clients; after each answer they come back 0-9 ms apart, well inside a quarter of a 0.2 s pass. Without
    # gathering, the first client back would start a pass alone and the rest ride the one after it: [4, 1, 3, 1, 3].
    model = RecordingModel(pass_seconds=0.2)
    closed_loop(model, clients=4, rounds=3, think_s=0.003)
    assert [len(p) for p in model.passes] == [4, 4, 4]


def test_a_lone_client_never_waits_for_company() -> None:
    model = RecordingModel(pass_seconds=0.05)
    sent = closed_loop(model, clients=1, rounds=5, think_s=0.0)
    assert [len(p) for p in model.passes] == [1] * 5
    waits = sorted(start - send for send, start in zip(sent, model.started))
    # Each request's pass starts at once (the hop to the pass's thread); gathering after a lone pass would hold
    # every request after the first for GATHER_GAP_S.
    assert waits[len(waits) // 2] < GATHER_GAP_S / 2
