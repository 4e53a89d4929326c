"""The service's OpenAPI document (`/docs.json`), completed where BentoML's generated one falls short.

BentoML documents each endpoint's body and a 200, with `info.version` "None" when the service runs from source.
`DocumentedService` (given to `@bentoml.service(service_class=...)`) adds what this service really answers:
the package version, the error statuses `/forecast` returns (400, 413, 415, 422, 503) with their body schema
(`error` a string, `detail` a list of problems), `seed` and `num_samples` as nullable, as the request model accepts,
and exclusive bounds (quantile levels strictly between 0 and 1) in OpenAPI 3.0's form.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import bentoml

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What is wrong, in one line."},
        "detail": {
            "type": "array",
            "description": "One entry per problem: where (loc), what (msg) and the server limit if any.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                    "msg": {"type": "string"},
                    "limit": {"type": "integer"},
                },
            },
        },
    },
}
ERROR_STATUSES = {
    "400": "The body does not fit the request schema (the field and the reason are in `detail`).",
    "413": "The body is larger than the server's max_body_bytes, or the request's memory cost or estimated time is "
           "more than the server's memory budget or timeout.",
    "415": "The body is not JSON.",
    "422": "The request is well formed but over a server limit, or its timestamps cannot be continued.",
    "503": "The model is not loaded (yet), or the server is overloaded.",
}
# Request fields that accept null, per route; BentoML's OpenAPI 3.0 document drops the null of `int | None`.
NULLABLE_FIELDS = {"/forecast": ("seed", "num_samples"), "/detect": ("alerts_per_day", "false_alarm_rate",
                                                                   "steps_ahead")}


def package_version() -> str:
    try:
        return version("open-toto")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


class CompletedSpec:
    """BentoML's OpenAPI specification object, whose dict form (what /docs.json sends) is completed."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def asdict(self) -> dict[str, Any]:
        return complete(self.spec.asdict())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.spec, name)


class DocumentedService(bentoml.Service):
    """A BentoML service whose OpenAPI document lists its version, error responses and nullable fields."""

    @property
    def openapi_spec(self) -> Any:
        return CompletedSpec(super().openapi_spec)


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the error responses of /forecast and /detect and their nullable fields to an OpenAPI document (as a
    dict)."""
    document["info"]["version"] = package_version()
    for route, nullable in NULLABLE_FIELDS.items():
        operation = document["paths"][route]["post"]
        for status, description in ERROR_STATUSES.items():
            operation["responses"][status] = {
                "description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}},
            }
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        for field in nullable:
            body["properties"][field]["nullable"] = True
    _exclusive_bounds_as_openapi_30(document)
    return document


def _exclusive_bounds_as_openapi_30(schema: object) -> None:
    """pydantic writes JSON Schema 2020's numeric `exclusiveMinimum: 0`; OpenAPI 3.0 (BentoML's document) wants
    `minimum: 0, exclusiveMinimum: true`. Rewritten in place, through the whole document."""
    if isinstance(schema, dict):
        for bound, keyword in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            value = schema.get(bound)
            if isinstance(value, int | float) and not isinstance(value, bool):
                schema[keyword], schema[bound] = value, True
        for value in schema.values():
            _exclusive_bounds_as_openapi_30(value)
    elif isinstance(schema, list):
        for value in schema:
            _exclusive_bounds_as_openapi_30(value)
