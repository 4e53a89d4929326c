"""An ASGI middleware that refuses request bodies the API cannot or should not parse.

BentoML reads whole bodies into memory with no size limit, and sends bodies of any other media type to parsers
(multipart, form) that this JSON API does not use and that fail with a 500 on garbage. So before BentoML sees a
POST, the guard checks its framing (a request with both Content-Length and Transfer-Encoding is refused with 400:
a proxy and this server could disagree on where it ends, the root of request smuggling), its media type (JSON
only: 415 otherwise), reads its body up to a byte limit (413 past it), refuses arrays and objects nested more than
`MAX_JSON_DEPTH` levels (400: parsers recurse per level, and Python's raised RecursionError at about 1,000, which
escaped as a hung request and then a 500) and JSON objects that repeat a key (400: the JSON parser would silently
keep the last one), then replays the body it read. Malformed JSON is left to BentoML, whose 400 says where it
breaks. The body is checked in a worker thread: a large one takes a parse, which must not stall the event loop
(and with it every other request and `/livez`).
"""

from __future__ import annotations

import json
import re

import anyio
import numpy as np
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_MEDIA_TYPE = "application/json"
# The deepest nesting of arrays and objects a body may have: a request needs 5 levels (the request, its series
# list, a series, its variates, a variate's values), so 32 refuses nothing real. Checked without recursion (`_depth`).
MAX_JSON_DEPTH = 32
# What the nesting scan reads: a backslash escape (skipped, so that an escaped quote does not end a string), and the
# bytes other than quotes and brackets (dropped).
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))


class RequestGuard:
    """Refuse non-JSON POST bodies (415) and bodies over `max_body_bytes` (413) with a JSON message."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if "content-length" in headers and "transfer-encoding" in headers:
            await _refuse(send, 400, "the request has both Content-Length and Transfer-Encoding: send only one")
            return
        media_type = headers.get("content-type", JSON_MEDIA_TYPE).split(";")[0].strip().lower()
        if media_type != JSON_MEDIA_TYPE:
            await _refuse(send, 415, f"the body must be JSON: send Content-Type: {JSON_MEDIA_TYPE}, not {media_type!r}")
            return
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, 413, _too_large(limit))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await _refuse(send, 413, _too_large(limit))
                return
            if not message.get("more_body", False):
                break
        if problem := await anyio.to_thread.run_sync(_body_problem, bytes(body)):
            await _refuse(send, 400, problem)
            return
        await self.app(scope, _replay(bytes(body), receive), send)


def _body_problem(body: bytes) -> str | None:
    """Why the JSON `body` is refused (nested too deeply, a repeated key), or None."""
    if (depth := _depth(body)) > MAX_JSON_DEPTH:
        return (f"the JSON body nests arrays and objects {depth} levels deep, more than this server's limit of "
                f"{MAX_JSON_DEPTH} levels: a request needs 5 (docs/serving.md)")
    if repeated := _repeated_key(body):
        return f"the JSON body gives the key {repeated!r} more than once in one object: give it once"
    return None


def _depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in `body`, brackets inside strings not counted: a running count
    of its opening and closing brackets, without recursion, so that any depth costs one pass over the body."""
    marks = np.frombuffer(_ESCAPE.sub(b"", body).translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    quotes = marks == ord('"')
    in_string = np.logical_xor.accumulate(quotes)  # between an opening quote and its closing one
    brackets = marks[~in_string & ~quotes]
    if not len(brackets):
        return 0
    opening = (brackets == ord("[")) | (brackets == ord("{"))
    return int(np.cumsum(np.where(opening, 1, -1)).max())


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen[key] = value
    return seen


def _repeated_key(body: bytes) -> str | None:
    """The first key that a JSON object in `body` repeats; None when there is none or the body is not JSON."""
    try:
        json.loads(body, object_pairs_hook=_unique_keys)
    except _RepeatedKey as repeated:
        return str(repeated)
    except ValueError:  # malformed JSON: BentoML answers it with its own 400
        return None
    return None


def _too_large(limit: int) -> str:
    return (
        f"the request body is larger than this server's limit max_body_bytes={limit} bytes (set by "
        "TOTO_SERVE_MAX_BODY_BYTES): send fewer series or shorter contexts per request"
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that yields the already-read body once, then defers to the client's channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", JSON_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
