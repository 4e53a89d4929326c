"""The forecasting HTTP service: `bentoml serve serve.service:TotoService` (what `make serve` runs).

`POST /forecast` takes a `ForecastRequest` and answers a `ForecastResponse` (docs/serving.md has examples):

1. BentoML parses the body into the strict pydantic model (400 with the field's name when it does not fit).
2. `find_problems` checks the server's limits and the timestamps (422 naming the field and the limit).
3. The request is split into one `SeriesTask` per series and sent to the batchable `/forecast_batch` endpoint
   through BentoML's in-process client, so BentoML's adaptive batching merges the tasks of concurrent requests
   into one forward pass (at most `max_batch_size` series, waiting at most `max_latency_ms`).
4. The tasks' forecasts are put back together in the request's order.

The checkpoint (`TOTO_SERVE_CHECKPOINT`: an embedded model name, a local folder or a Hugging Face repo id) loads in
a background thread: `/livez` answers at once, `/readyz` turns 200 once the model is loaded, and `/livez` turns
503 if loading failed. BentoML's `/metrics` (Prometheus, including the adaptive batch size histogram) and
`/docs.json` (OpenAPI) are kept.
"""

from __future__ import annotations

import logging
import secrets
import threading

import bentoml
from bentoml.exceptions import ServiceUnavailable
from starlette.responses import JSONResponse

from serve.checks import Problem, SeriesTask, find_problems
from serve.engine import ForecastEngine
from serve.guard import RequestGuard
from serve.schemas import ForecastRequest, ForecastResponse
from serve.settings import get_settings
from toto.api import load_model

log = logging.getLogger(__name__)
SETTINGS = get_settings()
# /forecast re-encodes its body for /forecast_batch with every number as a float (1 -> 1.0, 1e9 -> 1000000000.0),
# up to about 4 times longer, so the internal hop gets a proportionally larger body limit.
BATCH_BODY_FACTOR = 4


@bentoml.service(name="toto", traffic={"timeout": SETTINGS.timeout_s}, workers=1)
class TotoService:
    def __init__(self) -> None:
        self.model_id = SETTINGS.checkpoint
        self.engine: ForecastEngine | None = None
        self.load_error: str | None = None
        threading.Thread(target=self._load, name="load-checkpoint", daemon=True).start()

    def _load(self) -> None:
        try:
            model = load_model(SETTINGS.checkpoint, None if SETTINGS.device == "auto" else SETTINGS.device)
            self.engine = ForecastEngine(model, SETTINGS.samples_per_batch)
            log.info("loaded checkpoint %r on %s", self.model_id, model.device)
        except Exception as error:  # a bad checkpoint must not kill the process silently: /livez reports it
            log.exception("cannot load checkpoint %r", self.model_id)
            self.load_error = f"cannot load checkpoint {self.model_id!r}: {type(error).__name__}: {error}"

    def __is_ready__(self) -> bool:
        return self.engine is not None

    def __is_alive__(self) -> bool:
        return self.load_error is None

    def _unavailable_reason(self) -> str | None:
        if self.engine is not None:
            return None
        return self.load_error or "the model is still loading: retry when /readyz answers 200"

    @bentoml.api(route="/forecast")
    async def forecast(self, request: ForecastRequest, /) -> ForecastResponse:
        """Forecast one or many series: per series and variate the mean, median and requested quantiles."""
        if problems := find_problems(request, SETTINGS):
            return _error_response(422, problems)  # type: ignore[return-value]  # BentoML sends Responses as is
        if reason := self._unavailable_reason():
            return JSONResponse({"error": reason}, status_code=503)  # type: ignore[return-value]
        seed = request.seed if request.seed is not None else secrets.randbelow(2**32)
        tasks = [
            SeriesTask.model_construct(**{**dict(request), "series": [series], "seed": seed, "series_index": i})
            for i, series in enumerate(request.series)
        ]
        answers = await self.to_async.forecast_batch(tasks=tasks)
        return ForecastResponse(
            model_id=self.model_id,
            prediction_length=request.prediction_length,
            num_samples=request.num_samples,
            seed=seed,
            forecasts=[answer.forecasts[0] for answer in answers],
        )

    @bentoml.api(
        route="/forecast_batch",
        batchable=SETTINGS.batching,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def forecast_batch(self, tasks: list[SeriesTask]) -> list[ForecastResponse]:
        """Single-series tasks (body: {"tasks": [...]}), merged across concurrent calls by adaptive batching.
        `/forecast` uses it; call `/forecast` instead unless you split requests yourself."""
        if reason := self._unavailable_reason():
            raise ServiceUnavailable(reason)
        forecasts = self.engine.forecast(tasks)
        return [
            ForecastResponse(
                model_id=self.model_id,
                prediction_length=task.prediction_length,
                num_samples=task.num_samples,
                seed=task.seed,
                forecasts=[forecast],
            )
            for task, forecast in zip(tasks, forecasts)
        ]


def _error_response(status: int, problems: list[Problem]) -> JSONResponse:
    """BentoML's error body shape: a one-line `error` and a `detail` list with one entry per problem."""
    return JSONResponse(
        {"error": "; ".join(p.msg for p in problems), "detail": [p.as_dict() for p in problems]}, status_code=status
    )


TotoService.add_asgi_middleware(
    RequestGuard,
    max_body_bytes=SETTINGS.max_body_bytes,
    limits={"/forecast_batch": BATCH_BODY_FACTOR * SETTINGS.max_body_bytes},
)
