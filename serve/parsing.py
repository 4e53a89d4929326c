"""Request bodies parsed and validated in a worker thread, not on the event loop.

BentoML parses an endpoint's body into its input model (`from_http_request`) on the event loop, and a large body
takes a while there: while it does, no other request is read or answered, and `/livez` looks dead to an
orchestrator. `validated_off_the_loop(model)` is the input descriptor BentoML would make for `model` (same name,
so the same OpenAPI document and error messages), whose body is validated in a worker thread instead. Only JSON
reaches it: the request guard (`serve.guard`) refuses every other media type.
"""

from __future__ import annotations

from typing import Any

import anyio
import bentoml
from pydantic import BaseModel, create_model
from starlette.requests import Request


class ValidatedInWorkerThread(bentoml.IODescriptor):
    """An input descriptor whose JSON body is validated (`model_validate_json`, as BentoML's JSON serde does) in a
    worker thread."""

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> bentoml.IODescriptor:
        body = await request.body()
        return await anyio.to_thread.run_sync(cls.model_validate_json, body or b"{}")


def validated_off_the_loop(model: type[BaseModel]) -> type[bentoml.IODescriptor]:
    """`model` as an endpoint's `input_spec`, its bodies validated in a worker thread."""
    descriptor: type[bentoml.IODescriptor] = create_model(  # BentoML's own name for the descriptor of `model`
        f"{model.__name__}IODescriptor", __base__=(ValidatedInWorkerThread, model)
    )
    return descriptor
