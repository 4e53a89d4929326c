"""The forecasting HTTP service: `bentoml serve serve.service:TotoService` (what `make serve` runs).

`POST /detect` scores every value of the series it is sent for anomalies (`DetectRequest`, docs/anomaly.md): the
same JSON style, limits (`max_detect_length` values per series), status codes and continuous batching as
`/forecast`, whose steps below it follows; its tasks ride the same forward passes' queue.

`POST /forecast` takes the fields of a `ForecastRequest` and answers a `ForecastResponse` (docs/serving.md has
examples, also with BentoML's own `bentoml.SyncHTTPClient`):

1. The body is parsed into the strict pydantic model (400 naming the field when it does not fit); the request
   guard has already refused duplicated JSON keys, JSON nested too deeply, ambiguous framing, non-JSON and
   oversize bodies.
2. `find_problems` checks the server's limits and the timestamps (422 naming the field and the limit).
   The request's memory cost is computed from its shape (`ForecastEngine.request_cost`): one that can never fit
   the memory budget gets a 413 naming the budget, the cost and `TOTO_SERVE_MEMORY_BUDGET_BYTES`; so does one whose
   estimated time (`ForecastEngine.request_work` tokens over the throughput measured at start-up) passes
   `timeout_s`. The others wait their turn for the budget (`serve.budget`), first come, first served.
   Steps 1 and 2 run in worker threads (the guard's, `serve.parsing`, `_admit_forecast`): a large request takes a
   while to parse and check, and the event loop keeps answering other requests and the probes meanwhile.
3. The request is split into one task per series and queued for the model (`serve.batching`): continuous batching
   merges the tasks of concurrent requests into one forward pass (at most `max_batch_size` series), started as
   soon as the previous pass ends; each request gets its own forecasts back, in order. A request queued longer
   than `max_latency_ms` gets 503. Each forward pass is split to fit the budget.
4. Work stops when nobody waits: a request whose client has gone (checked, once it runs past
   `client_check_after_s`, through the Starlette request of `bentoml.Context`) or that passed `timeout_s` is
   cancelled between decoding steps, which frees the model lock.

The checkpoint (`TOTO_SERVE_CHECKPOINT`: an embedded model name, a local folder or a Hugging Face repo id) loads in
a worker thread after start-up: `/livez` answers at once, and `/readyz` turns 200 once the model is loaded, has
run one small warm-up forecast (so the first client does not pay for lazy initialisation) and has measured its
throughput (`_measure_throughput`, unless `tokens_per_second` is set). `/livez` turns 503 if
loading failed. BentoML's `/metrics` (Prometheus; `toto_forecast_batch_series` counts the series of each forward
pass) and `/docs.json` (OpenAPI, completed by `serve.openapi`) are kept. Client errors (4xx) are logged as one
warning line. The forward passes run in the model's own process (`serve.model_process`), or in this one when
`model_process` is off.

`create_service(settings)` makes the BentoML service from one `ServeSettings` (BentoML fixes the traffic timeout and
the request guard's body limit when the service is made); `TotoService` is the one made from the environment, which
`bentoml serve` runs. Tests make their own, with `model_process=False`, and drive its ASGI app in process.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import bentoml
import torch
from starlette.requests import Request
from starlette.responses import JSONResponse

from serve.batching import ContinuousBatcher, QueueTimeout
from serve.budget import MemoryLedger
from serve.checks import Problem, detect_problems, find_problems, over_budget, over_time
from serve.engine import Answer, DetectTask, EngineSpec, ForecastEngine, RequestCost, SeriesTask, Task, load_engine
from serve.guard import RequestGuard
from serve.logs import log_client_errors_as_warnings
from serve.model_process import ForwardPasses, InProcessModel, ModelProcess, ModelProcessDied
from serve.openapi import DocumentedService
from serve.parsing import validated_off_the_loop
from serve.schemas import (
    DetectRequest,
    DetectResponse,
    ForecastRequest,
    ForecastResponse,
    SeriesForecast,
    SeriesInput,
    SeriesScores,
)
from serve.settings import ServeSettings, get_settings
from toto.inference.cancel import Cancellation, ForecastCancelled
from toto.inference.memory import MemoryBudgetExceeded
from toto.validation import InputError

log = logging.getLogger(__name__)
BATCH_SERIES = bentoml.metrics.Histogram(
    name="toto_forecast_batch_series",
    documentation="Series forecast together in one forward pass",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
# How often a request running past `client_check_after_s` checks that its client is still connected.
CLIENT_POLL_S = 0.5
# The throughput measurement at start-up: forecasts this many patches ahead, and a pass long enough to time.
CALIBRATION_STEPS = 16
CALIBRATION_S = 0.25
log_client_errors_as_warnings()


class OverMemory(Exception):
    """A forward pass that cannot be allocated (answered 413, never 500)."""


class Unprocessable(Exception):
    """A request the model's side found it cannot serve as it is (answered 422)."""


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


class ForecastService:
    """Probabilistic forecasts of time series with a Toto model."""

    # BentoML makes the instance without arguments, so the settings are a class attribute, bound in the subclass
    # that `create_service` makes.
    settings: ClassVar[ServeSettings]

    def __init__(self) -> None:
        self.model_id = self.settings.checkpoint
        self.engine: ForecastEngine | None = None
        self.load_error: str | None = None
        self.ready = False
        self.loading: asyncio.Task[None] | None = None
        self.model_lock = threading.Lock()  # one forward pass at a time
        self.ledger = MemoryLedger(self.settings.memory_budget_bytes)
        self.batcher = ContinuousBatcher(self._run_pass, self.settings.max_batch_size,
                                         self.settings.max_latency_ms / 1e3)
        self.model: ForwardPasses | None = None
        # Tokens the model forwards per second here (`ForecastEngine.task_work`): set, or measured at start-up.
        self.tokens_per_second: float | None = self.settings.tokens_per_second

    @bentoml.on_startup
    async def _start_loading(self) -> None:
        """Load in the background, so that /livez and /readyz answer while a large checkpoint loads."""
        self.loading = asyncio.create_task(self._load_and_warm_up())

    async def _load_and_warm_up(self) -> None:
        settings = self.settings
        spec = EngineSpec(checkpoint=settings.checkpoint, device=None if settings.device == "auto" else settings.device,
                          dtype=getattr(torch, settings.dtype), samples_per_batch=settings.samples_per_batch,
                          memory_budget_bytes=settings.memory_budget_bytes)
        try:
            engine = await anyio.to_thread.run_sync(load_engine, spec)
        except Exception as error:  # a bad checkpoint must not kill the process silently: /livez reports it
            log.exception("cannot load checkpoint %r", self.model_id)
            self.load_error = f"cannot load checkpoint {self.model_id!r}: {type(error).__name__}: {error}"
            return
        if settings.model_process:
            engine.release_weights()  # the forward passes run in the model's own process (serve.model_process)
            self.model = ModelProcess(spec)
        else:
            self.model = InProcessModel(engine)
        patch = engine.patch_size
        try:
            series = SeriesInput(variates={"warm-up": [float(i % 7) for i in range(2 * patch)]})
            task = SeriesTask(series=series, prediction_length=patch, quantile_levels=[], return_samples=False,
                              row_seed=0)
            await self._run_alone([task], lambda: False)  # loads the model in its process
            if self.tokens_per_second is None:
                self.tokens_per_second = await self._measure_throughput(engine)
        except Exception as error:
            log.exception("the model process could not load checkpoint %r", self.model_id)
            self.load_error = f"cannot load checkpoint {self.model_id!r} in the model process: {error}"
            return
        log.info("loaded checkpoint %r; it forwards %.0f tokens/s here", self.model_id, self.tokens_per_second)
        self.engine = engine
        self.ready = True

    async def _measure_throughput(self, engine: ForecastEngine) -> float:
        """Tokens per second (`ForecastEngine.task_work`) of forward passes here: forecasts of the longest context
        the model reads (shorter where the memory budget cannot hold it), `CALIBRATION_STEPS` patches ahead with its
        default samples, over more and more series until a pass takes `CALIBRATION_S` (so that a fast device is not
        timed on its per-pass overheads alone). Measured once, on the machine as loaded as it is at start-up."""
        patch, settings = engine.patch_size, self.settings
        context, count = engine.pipeline.context_length, 1
        while True:
            series = SeriesInput(variates={"calibration": [float(i % 7) for i in range(context)]})
            tasks = [SeriesTask(series=series, prediction_length=CALIBRATION_STEPS * patch, quantile_levels=[],
                                return_samples=False, row_seed=row) for row in range(count)]
            started = time.perf_counter()
            try:
                await self._run_alone([*tasks], lambda: False)
            except OverMemory:
                if context <= patch:
                    raise
                context //= 2
                continue
            seconds = time.perf_counter() - started
            if seconds >= CALIBRATION_S or 2 * count > settings.max_batch_size:
                return sum(engine.task_work(task) for task in tasks) / seconds
            count *= 2

    @bentoml.on_shutdown
    def _stop_model_process(self) -> None:
        if self.model is not None:
            self.model.close()

    def __is_ready__(self) -> bool:
        """Loaded, and its model process too: after that process died, not until its replacement has loaded."""
        return self.ready and self.model is not None and self.model.loaded

    def __is_alive__(self) -> bool:
        """Not once a checkpoint could not load: the first time, or in a model process that replaced a dead one."""
        return self.load_error is None and (self.model is None or self.model.load_failure is None)

    @bentoml.api(route="/forecast", input_spec=validated_off_the_loop(ForecastRequest), output_spec=ForecastResponse)
    async def forecast(self, ctx: bentoml.Context, **fields: Any) -> ForecastResponse:
        """Forecast one or many series: per series and variate the mean, median and requested quantiles."""
        request = ForecastRequest.model_construct(**fields)  # validated against ForecastRequest (serve.parsing)
        # BentoML sends Responses as is, with the status set on ctx.
        admission = await anyio.to_thread.run_sync(self._admit_forecast, request)
        if isinstance(admission, JSONResponse):
            return _answer(ctx, admission)
        engine, cost = admission
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        answers = await self._run_tasks(ctx, list(SeriesTask.split(request, seed)), cost, "forecast")
        if isinstance(answers, JSONResponse):
            return _answer(ctx, answers)
        return ForecastResponse(
            model_id=self.model_id,
            prediction_length=request.prediction_length,
            num_samples=engine.num_samples(request),
            seed=seed,
            forecasts=[answer for answer in answers if isinstance(answer, SeriesForecast)],
        )

    def _admit_forecast(self, request: ForecastRequest) -> tuple[ForecastEngine, RequestCost] | JSONResponse:
        """The engine and the memory cost a /forecast request is admitted on, or the response refusing it: over a
        limit or timestamps off their grid (422), no model (503), options this model cannot honour (422), over the
        memory budget or an estimated time past the timeout (413). Run in a worker thread, as the request's
        validation (`serve.parsing`): building the time grids of thousands of timestamps must not stall the event
        loop."""
        settings = self.settings
        if problems := find_problems(request, settings):
            return _error_response(422, problems)
        if (engine := self.engine) is None or self.tokens_per_second is None:
            return self._not_loaded()
        if problems := engine.problems(request):
            return _error_response(422, problems)
        try:
            cost = engine.request_cost(request)
        except MemoryBudgetExceeded as error:
            return _error_response(413, [over_budget(error.needed_bytes, settings)])
        if (tokens := engine.request_work(request)) > self.tokens_per_second * settings.timeout_s:
            return _error_response(413, [over_time(tokens, self.tokens_per_second, settings)])
        return engine, cost

    @bentoml.api(route="/detect", input_spec=validated_off_the_loop(DetectRequest), output_spec=DetectResponse)
    async def detect(self, ctx: bentoml.Context, **fields: Any) -> DetectResponse:
        """Score every value of one or many series by how anomalous it is: per series and variate the anomaly score,
        whether it is flagged at the alert budget, and the predictive band (docs/anomaly.md)."""
        request = DetectRequest.model_construct(**fields)  # validated against DetectRequest (serve.parsing)
        admission = await anyio.to_thread.run_sync(self._admit_detection, request)
        if isinstance(admission, JSONResponse):
            return _answer(ctx, admission)
        answers = await self._run_tasks(ctx, list(DetectTask.split(request)), admission, "detection")
        if isinstance(answers, JSONResponse):
            return _answer(ctx, answers)
        return DetectResponse(model_id=self.model_id,
                              series=[answer for answer in answers if isinstance(answer, SeriesScores)])

    def _admit_detection(self, request: DetectRequest) -> RequestCost | JSONResponse:
        """The memory cost a /detect request is admitted on, or the response refusing it (422, 503, 413); in a worker
        thread, as `_admit_forecast`."""
        if problems := detect_problems(request, self.settings):
            return _error_response(422, problems)
        if (engine := self.engine) is None:
            return self._not_loaded()
        try:
            return engine.detect_cost(request)
        except MemoryBudgetExceeded as error:
            return _error_response(413, [over_budget(error.needed_bytes, self.settings)])

    def _not_loaded(self) -> JSONResponse:
        reason = self.load_error or "the model is still loading: retry when /readyz answers 200"
        return JSONResponse({"error": reason}, status_code=503)

    async def _run_tasks(self, ctx: bentoml.Context, tasks: list[Task], cost: RequestCost,
                         what: str) -> list[Answer] | JSONResponse:
        """Run an admitted request's tasks once the memory budget has room for `cost`: batched with other requests'
        (or alone), stopped when nobody waits. Returns their answers, or the error response to send."""
        settings = self.settings
        handler = asyncio.current_task()
        assert handler is not None  # a handler always runs in a task
        waiter = Waiter(time.monotonic() + settings.timeout_s)
        watch = asyncio.create_task(_watch_client(ctx.request, waiter, handler, settings.client_check_after_s))
        try:
            async with self.ledger.reserve(cost):
                run = self.batcher.submit if settings.batching else self._run_alone
                return await run(tasks, waiter.abandoned)
        except (QueueTimeout, ModelProcessDied) as error:
            return JSONResponse({"error": str(error)}, status_code=503)
        except OverMemory as error:
            return JSONResponse({"error": str(error)}, status_code=413)
        except Unprocessable as error:
            return _error_response(422, [Problem(("body",), str(error))])
        except Abandoned:  # the pass saw the deadline pass (or the client leave) before BentoML cancelled us
            if waiter.client_left:
                return JSONResponse({"error": "the client closed the connection"}, status_code=499)
            return JSONResponse(
                {"error": f"not answered within timeout_s={settings.timeout_s} (TOTO_SERVE_TIMEOUT_S): the {what} "
                          "was cancelled; send a smaller request or raise the timeout"}, status_code=504)
        except asyncio.CancelledError:
            if not waiter.client_left:  # a timeout: BentoML answers 504
                raise
            if sys.version_info >= (3, 11):  # 3.10 has no cancellation count to take back
                handler.uncancel()
            return JSONResponse({"error": "the client closed the connection"}, status_code=499)
        finally:
            waiter.gone.set()
            watch.cancel()

    async def _run_alone(self, tasks: list[Task], cancel: Cancellation) -> list[Answer]:
        """One request's forward pass, without batching, in a worker thread."""
        return await anyio.to_thread.run_sync(self._run_pass, tasks, cancel)

    def _run_pass(self, tasks: list[Task], cancel: Cancellation) -> list[Answer]:
        """A forward pass over `tasks`, in a worker thread (so that the event loop keeps accepting and queueing
        requests), one at a time. It fits what the memory budget leaves after the admitted requests' answers."""
        BATCH_SERIES.observe(len(tasks))
        assert self.model is not None  # passes run once the model is loaded
        with self.model_lock:
            try:
                return self.model.run(tasks, self.ledger.pass_limit_bytes, cancel)
            except ForecastCancelled as error:
                log.warning("a forward pass of %d series stopped: %s", len(tasks), error)
                raise Abandoned(str(error)) from error
            except MemoryBudgetExceeded as error:
                raise OverMemory(str(error)) from error
            except InputError as error:  # what only the model's side finds (a detection's timestamps)
                raise Unprocessable(str(error)) from error
            except (MemoryError, torch.OutOfMemoryError) as error:
                raise OverMemory(f"this forecast could not be allocated ({error}): send a smaller request, or "
                                 "lower TOTO_SERVE_MEMORY_BUDGET_BYTES to what this machine has") from error


async def _watch_client(request: Request, waiter: Waiter, handler: asyncio.Task[Any], check_after_s: float) -> None:
    """Cancel `handler` once the client of `request` has disconnected (Starlette's `Request.is_disconnected`).

    Only requests still running after `check_after_s` (`client_check_after_s`) are watched: watching every request
    from the start (polling, or awaiting the disconnect message) made BentoML's adaptive batching 4-5x slower at 32
    clients (`benchmarks/bench_serve.py`, cause not found), while the requests worth stopping are the long ones.
    """
    await asyncio.sleep(check_after_s)
    while not await request.is_disconnected():
        await asyncio.sleep(CLIENT_POLL_S)
    waiter.client_left = True
    waiter.gone.set()
    handler.cancel()


def _answer(ctx: bentoml.Context, response: JSONResponse) -> Any:
    """`response` as the handler's answer: BentoML gives it the status set on `ctx`, so set it there too."""
    ctx.response.status_code = response.status_code
    return response


def _error_response(status: int, problems: list[Problem]) -> JSONResponse:
    """BentoML's error body shape: a one-line `error` and a `detail` list with one entry per problem."""
    return JSONResponse(
        {"error": "; ".join(p.msg for p in problems), "detail": [p.as_dict() for p in problems]}, status_code=status
    )


def create_service(settings: ServeSettings) -> bentoml.Service[ForecastService]:
    """The BentoML service answering with `settings`: its traffic timeout, its request guard's body limit and
    every setting its instance reads."""
    bound = type("TotoService", (ForecastService,), {"settings": settings, "__doc__": ForecastService.__doc__})
    service = bentoml.service(name="toto", traffic={"timeout": settings.timeout_s}, workers=1,
                              service_class=DocumentedService)(bound)
    service.add_asgi_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    return service


# What `bentoml serve serve.service:TotoService` (make serve) runs: the settings of the environment.
TotoService = create_service(get_settings())
