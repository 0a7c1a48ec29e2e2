"""``POST /v1/messages/count_tokens``: how many input tokens a Messages request would use.

When the model's route starts with an Anthropic provider, Anthropic counts (the client's body is sent as it is, model
aside): the exact figure. Other providers have no counting endpoint, so the gateway estimates — the translated
request's UTF-8 bytes divided by 4, rounded up (about right for English text with BPE tokenizers) — and says so in
the ``x-polychat-token-count: estimate`` header; the Anthropic count, when it fails, falls back to the estimate too.
Checks and errors are those of ``/v1/messages`` (keys in ``x-api-key`` or ``Authorization: Bearer``, Anthropic's
error shape).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from .._json import dumps
from ..errors import InvalidRequestError
from ..protocols import anthropic_messages as am
from ._errors import HTTPError, Scrubber, from_exception, make_error
from ._messages import anthropic_shape

if TYPE_CHECKING:
    from ._gateway import Gateway

log = logging.getLogger("polychat.server")

_HEADERS = {"x-content-type-options": "nosniff", "cache-control": "no-store"}
#: Bytes per token assumed by the estimate.
BYTES_PER_TOKEN = 4


def _answer(err: HTTPError) -> Response:
    shaped = anthropic_shape(err)
    headers = {**_HEADERS, **{k.decode(): v.decode() for k, v in shaped.headers}}
    return Response(shaped.body, status_code=shaped.status, media_type="application/json", headers=headers)


def estimate(call: am.ChatCall) -> int:
    """The estimate for a translated request: its messages' and tools' JSON bytes / 4, rounded up."""
    size = len(dumps([call.messages, call.kwargs.get("tools") or []]))
    return max(1, math.ceil(size / BYTES_PER_TOKEN))


async def count_tokens(gw: Gateway, request: Request) -> Response:
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization is None and headers.get("x-api-key") is not None:
        authorization = "Bearer " + headers["x-api-key"]
    err = gw.check_api(
        (headers.get("host") or "").encode("latin-1") or None,
        headers["origin"].encode("latin-1") if "origin" in headers else None,
        authorization.encode("latin-1") if authorization is not None else None,
    )
    if err is not None:
        return _answer(err)
    raw = await request.body()
    if len(raw) > gw.settings.max_body_bytes:
        limit = gw.settings.max_body_bytes
        return _answer(
            make_error(413, f"Request body too large: the limit is {limit} bytes.", code="request_too_large")
        )
    try:
        body = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as e:
        return _answer(make_error(400, f"We could not parse the JSON body of your request ({e}).", code="invalid_json"))
    if not isinstance(body, dict):
        return _answer(make_error(400, "The request body must be a JSON object.", code="invalid_json"))
    try:
        call = am.to_chat({**body, "max_tokens": 1, "stream": False})
    except InvalidRequestError as e:
        return _answer(from_exception(e, Scrubber()))
    forward = {k: v for k, v in headers.items() if k in ("anthropic-beta", "anthropic-version")}
    provider, routed = gw.route(call.model)
    counted = await _anthropic_count(gw, provider, routed, body, forward)
    out = {"input_tokens": counted if counted is not None else estimate(call)}
    extra = {} if counted is not None else {"x-polychat-token-count": "estimate"}
    return Response(dumps(out), media_type="application/json", headers={**_HEADERS, **extra})


async def _anthropic_count(
    gw: Gateway, provider: Any, model: Any, body: dict[str, Any], headers: dict[str, str]
) -> int | None:
    """Anthropic's count when the route starts with an Anthropic provider; None otherwise (or when it fails)."""
    if provider is None or not isinstance(model, str):
        return None
    members = provider.members()
    first = members[0] if members else None
    if first is None or first.capabilities.native_protocol != "anthropic":
        return None
    pinned = getattr(first, "model", None)
    _, ctx = gw.client._models_context(provider)
    try:
        return int(await first.acount_tokens(body, pinned or model, headers, ctx))
    except Exception as e:  # the estimate still answers; the operator sees why the exact count was not there
        log.info(
            "polychat: %s could not count tokens (%s); answering with an estimate", first.name, gw.scrub.logs(str(e))
        )
        return None
