"""The forecasting HTTP service: `bentoml serve serve.service:TotoService` (what `make serve` runs).

`POST /forecast` takes the fields of a `ForecastRequest` and answers a `ForecastResponse` (docs/serving.md has
examples, also with BentoML's own `bentoml.SyncHTTPClient`):

1. BentoML parses the body into the strict pydantic model (400 naming the field when it does not fit); the
   request guard has already refused duplicated JSON keys, ambiguous framing, non-JSON and oversize bodies.
2. `find_problems` checks the server's limits and the timestamps (422 naming the field and the limit).
   The request's memory cost is computed from its shape (`ForecastEngine.request_cost`): one that can never fit
   the memory budget gets a 413 naming the budget, the cost and `TOTO_SERVE_MEMORY_BUDGET_BYTES`; the others wait
   their turn for the budget (`serve.budget`), first come, first served.
3. The request is split into one task per series and queued for the model (`serve.batching`): continuous batching
   merges the tasks of concurrent requests into one forward pass (at most `max_batch_size` series), started as
   soon as the previous pass ends; each request gets its own forecasts back, in order. A request queued longer
   than `max_latency_ms` gets 503. Each forward pass is split to fit the budget.
4. Work stops when nobody waits: a request whose client has gone (checked, once it runs past
   `client_check_after_s`, through the Starlette request of `bentoml.Context`) or that passed `timeout_s` is cancelled between decoding steps, which frees the model lock.

The checkpoint (`TOTO_SERVE_CHECKPOINT`: an embedded model name, a local folder or a Hugging Face repo id) loads in
a worker thread after start-up: `/livez` answers at once, and `/readyz` turns 200 once the model is loaded and has
run one small warm-up forecast (so the first client does not pay for lazy initialisation). `/livez` turns 503 if
loading failed. BentoML's `/metrics` (Prometheus; `toto_forecast_batch_series` counts the series of each forward pass) and
`/docs.json` (OpenAPI, completed by `serve.openapi`) are kept. Client errors (4xx) are logged as one warning line.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import bentoml
import torch
from starlette.requests import Request
from starlette.responses import JSONResponse

from serve.batching import ContinuousBatcher, QueueTimeout
from serve.budget import MemoryLedger
from serve.checks import Problem, find_problems, over_budget
from serve.engine import EngineSpec, ForecastEngine, SeriesTask, load_engine
from serve.guard import RequestGuard
from serve.logs import log_client_errors_as_warnings
from serve.model_process import ModelProcess, ModelProcessDied
from serve.openapi import DocumentedService
from serve.schemas import ForecastRequest, ForecastResponse, SeriesForecast, SeriesInput
from serve.settings import get_settings
from toto.inference.forecaster import Cancellation, ForecastCancelled
from toto.inference.memory import MemoryBudgetExceeded

log = logging.getLogger(__name__)
SETTINGS = get_settings()
BATCH_SERIES = bentoml.metrics.Histogram(
    name="toto_forecast_batch_series",
    documentation="Series forecast together in one forward pass",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
# How often a request running past `client_check_after_s` checks that its client is still connected.
CLIENT_POLL_S = 0.5
log_client_errors_as_warnings()


class OverMemory(Exception):
    """A forward pass that cannot be allocated (answered 413, never 500)."""


class Abandoned(Exception):
    """A forward pass cancelled because none of its requests waits for it any more."""


@dataclass
class Waiter:
    """Whether anybody still waits for a /forecast request: its client is connected and its deadline is ahead."""

    deadline: float
    gone: threading.Event = field(default_factory=threading.Event)
    client_left: bool = False

    def abandoned(self) -> bool:
        return self.gone.is_set() or time.monotonic() > self.deadline


@bentoml.service(
    name="toto",
    traffic={"timeout": SETTINGS.timeout_s},
    workers=1,
    service_class=DocumentedService,
)
class TotoService:
    """Probabilistic forecasts of time series with a Toto model."""

    def __init__(self) -> None:
        self.model_id = SETTINGS.checkpoint
        self.engine: ForecastEngine | None = None
        self.load_error: str | None = None
        self.ready = False
        self.loading: asyncio.Task[None] | None = None
        self.model_lock = threading.Lock()  # one forward pass at a time
        self.ledger = MemoryLedger(SETTINGS.memory_budget_bytes)
        self.batcher = ContinuousBatcher(self._run_pass, SETTINGS.max_batch_size, SETTINGS.max_latency_ms / 1e3)
        self.model_process: ModelProcess | None = None

    @bentoml.on_startup
    async def _start_loading(self) -> None:
        """Load in the background, so that /livez and /readyz answer while a large checkpoint loads."""
        self.loading = asyncio.create_task(self._load_and_warm_up())

    async def _load_and_warm_up(self) -> None:
        spec = EngineSpec(checkpoint=SETTINGS.checkpoint, device=None if SETTINGS.device == "auto" else SETTINGS.device,
                          dtype=getattr(torch, SETTINGS.dtype), samples_per_batch=SETTINGS.samples_per_batch,
                          memory_budget_bytes=SETTINGS.memory_budget_bytes)
        try:
            engine = await anyio.to_thread.run_sync(load_engine, spec)
        except Exception as error:  # a bad checkpoint must not kill the process silently: /livez reports it
            log.exception("cannot load checkpoint %r", self.model_id)
            self.load_error = f"cannot load checkpoint {self.model_id!r}: {type(error).__name__}: {error}"
            return
        engine.release_weights()  # the forward passes run in the model's own process (serve.model_process)
        self.model_process = ModelProcess(spec)
        patch = engine.patch_size
        self.engine = engine
        try:
            series = SeriesInput(variates={"warm-up": [float(i % 7) for i in range(2 * patch)]})
            task = SeriesTask(series=series, prediction_length=patch, num_samples=1, quantile_levels=[],
                              return_samples=False, row_seed=0)
            await self._forecast([task], lambda: False)  # loads the model in its process
        except Exception as error:
            log.exception("the model process could not load checkpoint %r", self.model_id)
            self.load_error = f"cannot load checkpoint {self.model_id!r} in the model process: {error}"
            self.engine = None
            return
        log.info("loaded checkpoint %r", self.model_id)
        self.ready = True

    @bentoml.on_shutdown
    def _stop_model_process(self) -> None:
        if self.model_process is not None:
            self.model_process.close()

    def __is_ready__(self) -> bool:
        """Loaded, and its model process too: after that process died, not until its replacement has loaded."""
        return self.ready and self.model_process.loaded

    def __is_alive__(self) -> bool:
        """Not once a checkpoint could not load: the first time, or in a model process that replaced a dead one."""
        return self.load_error is None and (self.model_process is None or self.model_process.load_failure is None)

    @bentoml.api(route="/forecast", input_spec=ForecastRequest, output_spec=ForecastResponse)
    async def forecast(self, ctx: bentoml.Context, **fields: Any) -> ForecastResponse:
        """Forecast one or many series: per series and variate the mean, median and requested quantiles."""
        request = ForecastRequest.model_construct(**fields)  # validated by BentoML against ForecastRequest
        # BentoML sends Responses as is, with the status set on ctx.
        if problems := find_problems(request, SETTINGS):
            return _answer(ctx, _error_response(422, problems))
        if self.engine is None:
            reason = self.load_error or "the model is still loading: retry when /readyz answers 200"
            return _answer(ctx, JSONResponse({"error": reason}, status_code=503))
        if problems := self.engine.problems(request):
            return _answer(ctx, _error_response(422, problems))
        try:
            cost = self.engine.request_cost(request)
        except MemoryBudgetExceeded as error:
            return _answer(ctx, _error_response(413, [over_budget(error.needed_bytes, SETTINGS)]))
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        waiter = Waiter(time.monotonic() + SETTINGS.timeout_s)
        watch = asyncio.create_task(_watch_client(ctx.request, waiter, asyncio.current_task()))
        try:
            async with self.ledger.reserve(cost):
                tasks = SeriesTask.split(request, seed)
                run = self.batcher.forecast if SETTINGS.batching else self._forecast
                forecasts = await run(tasks, waiter.abandoned)
        except (QueueTimeout, ModelProcessDied) as error:
            return _answer(ctx, JSONResponse({"error": str(error)}, status_code=503))
        except OverMemory as error:
            return _answer(ctx, JSONResponse({"error": str(error)}, status_code=413))
        except Abandoned:  # the pass saw the deadline pass (or the client leave) before BentoML cancelled us
            if waiter.client_left:
                return _answer(ctx, JSONResponse({"error": "the client closed the connection"}, status_code=499))
            return _answer(ctx, JSONResponse(
                {"error": f"not answered within timeout_s={SETTINGS.timeout_s} (TOTO_SERVE_TIMEOUT_S): the forecast "
                          "was cancelled; send a smaller request or raise the timeout"}, status_code=504))
        except asyncio.CancelledError:
            if not waiter.client_left:  # a timeout: BentoML answers 504
                raise
            asyncio.current_task().uncancel()
            return _answer(ctx, JSONResponse({"error": "the client closed the connection"}, status_code=499))
        finally:
            waiter.gone.set()
            watch.cancel()
        return ForecastResponse(
            model_id=self.model_id,
            prediction_length=request.prediction_length,
            num_samples=request.num_samples,
            seed=seed,
            forecasts=forecasts,
        )

    async def _forecast(self, tasks: list[SeriesTask], cancel: Cancellation) -> list[SeriesForecast]:
        """One request's forward pass, without batching, in a worker thread."""
        return await anyio.to_thread.run_sync(self._run_pass, tasks, cancel)

    def _run_pass(self, tasks: list[SeriesTask], cancel: Cancellation) -> list[SeriesForecast]:
        """A forward pass over `tasks`, in a worker thread (so that the event loop keeps accepting and queueing
        requests), one at a time. It fits what the memory budget leaves after the admitted requests' answers."""
        BATCH_SERIES.observe(len(tasks))
        with self.model_lock:
            try:
                return self.model_process.forecast(tasks, self.ledger.pass_limit_bytes, cancel)
            except ForecastCancelled as error:
                log.warning("a forward pass of %d series stopped: %s", len(tasks), error)
                raise Abandoned(str(error)) from error
            except MemoryBudgetExceeded as error:
                raise OverMemory(str(error)) from error
            except (MemoryError, torch.OutOfMemoryError, RuntimeError) as error:
                if not _is_allocation_failure(error):
                    raise
                raise OverMemory(f"this forecast could not be allocated ({error}): send a smaller request, or "
                                 "lower TOTO_SERVE_MEMORY_BUDGET_BYTES to what this machine has") from error


async def _watch_client(request: Request, waiter: Waiter, handler: asyncio.Task[Any]) -> None:
    """Cancel `handler` once the client of `request` has disconnected (Starlette's `Request.is_disconnected`).

    Only requests still running after `client_check_after_s` are watched: watching every request from the start
    (polling, or awaiting the disconnect message) made BentoML's adaptive batching 4-5x slower at 32 clients
    (`benchmarks/bench_serve.py`, cause not found), while the requests worth stopping are the long ones.
    """
    await asyncio.sleep(SETTINGS.client_check_after_s)
    while not await request.is_disconnected():
        await asyncio.sleep(CLIENT_POLL_S)
    waiter.client_left = True
    waiter.gone.set()
    handler.cancel()


def _is_allocation_failure(error: BaseException) -> bool:
    """Out of memory: Python's MemoryError, torch's on accelerators, and its CPU allocator's RuntimeError."""
    return not isinstance(error, RuntimeError) or isinstance(error, torch.OutOfMemoryError) or (
        "can't allocate memory" in str(error))


def _answer(ctx: bentoml.Context, response: JSONResponse) -> Any:
    """`response` as the handler's answer: BentoML gives it the status set on `ctx`, so set it there too."""
    ctx.response.status_code = response.status_code
    return response


def _error_response(status: int, problems: list[Problem]) -> JSONResponse:
    """BentoML's error body shape: a one-line `error` and a `detail` list with one entry per problem."""
    return JSONResponse(
        {"error": "; ".join(p.msg for p in problems), "detail": [p.as_dict() for p in problems]}, status_code=status
    )


TotoService.add_asgi_middleware(RequestGuard, max_body_bytes=SETTINGS.max_body_bytes)
