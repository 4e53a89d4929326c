"""An ASGI middleware that refuses request bodies the API cannot or should not parse.

BentoML 1.4 reads whole bodies into memory with no size limit, and sends bodies of any other media type to parsers
(multipart, form) that this JSON API does not use and that fail with a 500 on garbage. So before BentoML sees a
POST, the guard checks its media type (JSON only: 415 otherwise) and reads its body up to a byte limit (413 past it),
then replays the body it read.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_MEDIA_TYPE = "application/json"


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
        await self.app(scope, _replay(bytes(body), receive), send)


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
