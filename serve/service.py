"""The forecasting HTTP service: `bentoml serve serve.service:TotoService` (what `make serve` runs).

`POST /forecast` takes a `ForecastRequest` and answers a `ForecastResponse` (docs/serving.md has examples):

1. BentoML parses the body into the strict pydantic model (400 naming the field when it does not fit).
2. `find_problems` checks the server's limits and the timestamps (422 naming the field and the limit).
3. The request is split into one task per series, and BentoML's adaptive batching dispatcher merges the tasks
   of concurrent requests into one forward pass (at most `max_batch_size` series, waiting at most
   `max_latency_ms`); each request gets its own forecasts back, in order.

Batching drives BentoML's `CorkDispatcher`, the class behind `@bentoml.api(batchable=True)`, directly rather
than through a batchable endpoint that `/forecast` would call over BentoML's in-process HTTP client: that client
(BentoML 1.4.40) closes its connection pool every 100 calls while other calls are in flight, which failed some
concurrent requests with a 500, and it would have encoded and parsed every request twice.

The checkpoint (`TOTO_SERVE_CHECKPOINT`: an embedded model name, a local folder or a Hugging Face repo id) loads in
a worker thread after start-up: `/livez` answers at once, and `/readyz` turns 200 once the model is loaded and the
dispatcher has timed its first forward passes on a burst of small synthetic tasks (left to real traffic, that
timing makes the first clients wait seconds for company that does not come). `/livez` turns 503 if loading
failed. BentoML's `/metrics` (Prometheus; `toto_forecast_batch_series` counts the series of each
forward pass) and `/docs.json` (OpenAPI) are kept.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Sequence
from itertools import accumulate

import anyio
import bentoml
from bentoml._internal.marshal.dispatcher import CorkDispatcher  # pinned by bentoml<1.5 in pyproject.toml
from bentoml.exceptions import ServiceUnavailable
from starlette.responses import JSONResponse

from serve.checks import Problem, find_problems
from serve.engine import ForecastEngine, SeriesTask
from serve.guard import RequestGuard
from serve.schemas import ForecastRequest, ForecastResponse, SeriesForecast, SeriesInput
from serve.settings import get_settings
from toto.api import load_model

log = logging.getLogger(__name__)
SETTINGS = get_settings()
BATCH_SERIES = bentoml.metrics.Histogram(
    name="toto_forecast_batch_series",
    documentation="Series forecast together in one forward pass",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
# More than the dispatcher's timing phase uses (8 calls of one task, then one each of 1, 2 and 3 tasks).
WARM_UP_TASKS = 16


@bentoml.service(name="toto", traffic={"timeout": SETTINGS.timeout_s}, workers=1)
class TotoService:
    def __init__(self) -> None:
        self.model_id = SETTINGS.checkpoint
        self.engine: ForecastEngine | None = None
        self.load_error: str | None = None
        self.ready = False
        self.loading: asyncio.Task[None] | None = None
        self.model_lock = threading.Lock()  # one forward pass at a time
        self.merge = None
        if SETTINGS.batching:
            dispatcher = CorkDispatcher(
                max_latency_in_ms=SETTINGS.max_latency_ms,
                max_batch_size=SETTINGS.max_batch_size,
                fallback=_overloaded,
                get_batch_size=len,
            )
            self.merge = dispatcher(self._forecast_merged)

    @bentoml.on_startup
    async def _start_loading(self) -> None:
        """Load in the background, so that /livez and /readyz answer while a large checkpoint loads."""
        self.loading = asyncio.create_task(self._load_and_warm_up())

    async def _load_and_warm_up(self) -> None:
        try:
            model = await anyio.to_thread.run_sync(
                load_model, SETTINGS.checkpoint, None if SETTINGS.device == "auto" else SETTINGS.device
            )
        except Exception as error:  # a bad checkpoint must not kill the process silently: /livez reports it
            log.exception("cannot load checkpoint %r", self.model_id)
            self.load_error = f"cannot load checkpoint {self.model_id!r}: {type(error).__name__}: {error}"
            return
        self.engine = ForecastEngine(model, SETTINGS.samples_per_batch)
        log.info("loaded checkpoint %r on %s", self.model_id, model.device)
        if self.merge is not None:
            patch = self.engine.patch_size
            series = SeriesInput(variates={"warm-up": [float(i % 7) for i in range(2 * patch)]})
            task = SeriesTask(series, patch, 1, [], False, 0)
            await asyncio.gather(*(self.merge([task]) for _ in range(WARM_UP_TASKS)))
        self.ready = True

    def __is_ready__(self) -> bool:
        return self.ready

    def __is_alive__(self) -> bool:
        return self.load_error is None

    @bentoml.api(route="/forecast")
    async def forecast(self, request: ForecastRequest, /) -> ForecastResponse:
        """Forecast one or many series: per series and variate the mean, median and requested quantiles."""
        if problems := find_problems(request, SETTINGS):
            return _error_response(422, problems)  # type: ignore[return-value]  # BentoML sends Responses as is
        if self.engine is None:
            reason = self.load_error or "the model is still loading: retry when /readyz answers 200"
            return JSONResponse({"error": reason}, status_code=503)  # type: ignore[return-value]
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        tasks = SeriesTask.split(request, seed)
        forecasts = await (self.merge(tasks) if self.merge else self._forecast(tasks))
        return ForecastResponse(
            model_id=self.model_id,
            prediction_length=request.prediction_length,
            num_samples=request.num_samples,
            seed=seed,
            forecasts=forecasts,
        )

    async def _forecast_merged(self, requests: Sequence[list[SeriesTask]]) -> list[list[SeriesForecast]]:
        """The dispatcher's callback: the tasks of several requests in one forward pass, split back per request."""
        forecasts = await self._forecast([task for tasks in requests for task in tasks])
        ends = list(accumulate(len(tasks) for tasks in requests))
        return [forecasts[end - len(tasks):end] for tasks, end in zip(requests, ends)]

    async def _forecast(self, tasks: list[SeriesTask]) -> list[SeriesForecast]:
        """Run the model in a worker thread, so that the event loop keeps accepting and queueing requests."""
        BATCH_SERIES.observe(len(tasks))

        def run() -> list[SeriesForecast]:
            with self.model_lock:
                return self.engine.forecast(tasks)

        return await anyio.to_thread.run_sync(run)


def _overloaded() -> list[SeriesForecast]:
    """Called by the dispatcher for a request it dropped because it could not be served within max_latency_ms."""
    raise ServiceUnavailable(f"the server is overloaded: no forward pass within max_latency_ms={SETTINGS.max_latency_ms}")


def _error_response(status: int, problems: list[Problem]) -> JSONResponse:
    """BentoML's error body shape: a one-line `error` and a `detail` list with one entry per problem."""
    return JSONResponse(
        {"error": "; ".join(p.msg for p in problems), "detail": [p.as_dict() for p in problems]}, status_code=status
    )


TotoService.add_asgi_middleware(RequestGuard, max_body_bytes=SETTINGS.max_body_bytes)
