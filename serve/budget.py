"""The service's memory budget: admitted requests reserve their cost in bytes, the others wait their turn.

A request reserves what its answer holds until it is sent (`RequestCost.result_bytes`) plus the largest forward
pass it needs on its own (`working_bytes`). Forward passes run one at a time (the model lock) and each is planned to
fit what the budget leaves after the answers of every admitted request (`pass_limit_bytes`), which is at least the
largest `working_bytes` among them. So the answers and the pass running together never exceed the budget. Requests
are admitted first come, first served: a large request is not overtaken forever by small ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from serve.engine import RequestCost


class MemoryLedger:
    """Bytes of `budget_bytes` reserved by the requests admitted now; one event loop uses it."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.reserved_bytes = 0
        self.result_bytes = 0
        self._waiting: deque[tuple[RequestCost, asyncio.Future[None]]] = deque()

    @property
    def pass_limit_bytes(self) -> int:
        """What a forward pass may use now: the budget less the answers of the admitted requests."""
        return self.budget_bytes - self.result_bytes

    @contextlib.asynccontextmanager
    async def reserve(self, cost: RequestCost) -> AsyncIterator[None]:
        """Wait until `cost` fits next to the admitted requests (in arrival order), hold it for the block."""
        if cost.total_bytes > self.budget_bytes:
            raise ValueError(f"a cost of {cost.total_bytes} bytes can never fit the budget of {self.budget_bytes}")
        if not self._waiting and self.reserved_bytes + cost.total_bytes <= self.budget_bytes:
            self._take(cost)
        else:
            entry = (cost, asyncio.get_running_loop().create_future())
            self._waiting.append(entry)
            try:
                await entry[1]
            except BaseException:  # cancelled (timeout, client gone) while waiting, or just after being admitted
                if entry[1].done() and not entry[1].cancelled():
                    self._give_back(cost)
                else:
                    self._waiting.remove(entry)
                    self._admit_waiting()
                raise
        try:
            yield
        finally:
            self._give_back(cost)

    def _take(self, cost: RequestCost) -> None:
        self.reserved_bytes += cost.total_bytes
        self.result_bytes += cost.result_bytes

    def _give_back(self, cost: RequestCost) -> None:
        self.reserved_bytes -= cost.total_bytes
        self.result_bytes -= cost.result_bytes
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        while self._waiting and self.reserved_bytes + self._waiting[0][0].total_bytes <= self.budget_bytes:
            cost, future = self._waiting.popleft()
            self._take(cost)
            future.set_result(None)
