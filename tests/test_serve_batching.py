"""`serve.batching.ContinuousBatcher`: requests that arrive during a pass share the next one, each gets its own
answers in order, a request nobody waits for is left out, and one queued past the latency bound gets QueueTimeout.
After a pass of several requests, the next one waits for their clients to come back; after a lone one it does not.
(The real service under load is tested in tests/test_serve_load.py.)"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serve.batching import GATHER_GAP_S, ContinuousBatcher, QueueTimeout


class RecordingModel:
    """A forward pass that takes `seconds` and answers each task with its upper-cased name; records every pass."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.passes: list[list[str]] = []
        self.started: list[float] = []  # time.monotonic() at the start of each pass
        self.running = threading.Event()

    def __call__(self, tasks, cancel):
        self.started.append(time.monotonic())
        self.passes.append(list(tasks))
        self.running.set()
        time.sleep(self.seconds)
        return [task.upper() for task in tasks]


def run(coroutine):
    return asyncio.run(coroutine)


def first_then(model: RecordingModel, later: list[list[str]], max_batch_size: int) -> list[list[str]]:
    """Answers to a request of task "a", then to `later` requests queued while a's pass runs."""

    async def scenario():
        batcher = ContinuousBatcher(model, max_batch_size=max_batch_size, max_latency_s=30)
        first = asyncio.create_task(batcher.forecast(["a"], lambda: False))
        await asyncio.to_thread(model.running.wait)  # the first pass is running: the others queue meanwhile
        rest = [asyncio.create_task(batcher.forecast(tasks, lambda: False)) for tasks in later]
        return await asyncio.gather(first, *rest)

    return run(scenario())


def test_requests_arriving_during_a_pass_share_the_next_one_and_get_their_own_answers() -> None:
    model = RecordingModel(0.2)
    assert first_then(model, [["b", "c"], ["d"], ["e"]], max_batch_size=8) == [["A"], ["B", "C"], ["D"], ["E"]]
    assert model.passes == [["a"], ["b", "c", "d", "e"]]


def test_a_pass_takes_whole_requests_up_to_max_batch_size() -> None:
    model = RecordingModel(0.1)
    assert first_then(model, [["b", "c"], ["d", "e"]], max_batch_size=3) == [["A"], ["B", "C"], ["D", "E"]]
    assert model.passes == [["a"], ["b", "c"], ["d", "e"]]  # b, c, d, e would be 4 > 3 series


def test_requests_nobody_waits_for_are_left_out_and_late_ones_time_out() -> None:
    model = RecordingModel(0.3)

    async def scenario():
        batcher = ContinuousBatcher(model, max_batch_size=8, max_latency_s=0.2)
        first = asyncio.create_task(batcher.forecast(["a"], lambda: False))
        await asyncio.to_thread(model.running.wait)
        gone = asyncio.create_task(batcher.forecast(["b"], lambda: True))  # its client left
        late = asyncio.create_task(batcher.forecast(["c"], lambda: False))  # waits 0.3 s > 0.2 s
        await first
        with pytest.raises(QueueTimeout, match="TOTO_SERVE_MAX_LATENCY_MS"):
            await late
        gone.cancel()
        fresh = await batcher.forecast(["d"], lambda: False)  # the loop still serves new requests
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
            await batcher.forecast(["a"], lambda: False)
        return await batcher.forecast(["b"], lambda: False)

    assert run(scenario()) == ["B"]


def closed_loop(model: RecordingModel, clients: int, rounds: int, think_s: float) -> list[float]:
    """`clients` clients, each sending `rounds` requests one after the other (its first at once, each next one
    `think_s` times its number after its answer, as clients parsing answers in turn do); returns when each request
    was sent (time.monotonic())."""
    sent: list[float] = []

    async def client(batcher: ContinuousBatcher, number: int) -> None:
        for round_ in range(rounds):
            sent.append(time.monotonic())
            await batcher.forecast([f"{number}.{round_}"], lambda: False)
            await asyncio.sleep(think_s * number)

    async def scenario():
        batcher = ContinuousBatcher(model, max_batch_size=64, max_latency_s=30)
        await asyncio.gather(*(client(batcher, number) for number in range(clients)))

    run(scenario())
    return sent


def test_after_a_pass_of_several_requests_the_next_pass_waits_for_their_clients_to_come_back() -> None:
    # 4 clients; after each answer they come back 0-9 ms apart, well inside a quarter of a 0.2 s pass. Without
    # gathering, the first client back would start a pass alone and the rest ride the one after it: [4, 1, 3, 1, 3].
    model = RecordingModel(0.2)
    closed_loop(model, clients=4, rounds=3, think_s=0.003)
    assert [len(p) for p in model.passes] == [4, 4, 4]


def test_a_lone_client_never_waits_for_company() -> None:
    model = RecordingModel(0.05)
    sent = closed_loop(model, clients=1, rounds=5, think_s=0.0)
    assert [len(p) for p in model.passes] == [1] * 5
    waits = sorted(start - send for send, start in zip(sent, model.started))
    # Each request's pass starts at once (the hop to the pass's thread); gathering after a lone pass would hold
    # every request after the first for GATHER_GAP_S.
    assert waits[len(waits) // 2] < GATHER_GAP_S / 2
