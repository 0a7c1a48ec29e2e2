"""The HTTP shells every HTTP provider shares: send its wire request, read the answer, release the connection.

A provider (:class:`~polychat.providers.http.HTTPProvider`) builds the wire request and reads the answer with pure
functions; these shells are the only I/O between the two, so timeouts, proxies, error mapping and connection
release behave the same for every protocol. They send through the route's transport (:mod:`polychat._http`), and
catch only that transport's ``errors``, which its ``error()`` turns into polychat errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ..providers.base import Provider

if TYPE_CHECKING:
    from .._context import CallContext
    from .._http import AsyncResponse, AsyncTransport, WireRequest
    from .._request import ChatRequest
    from ..providers.http import HTTPProvider
    from ..types import ChatCompletion, ChatCompletionChunk, Model


async def complete(provider: HTTPProvider, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
    provider.check_ready()
    wire = provider.chat_request(request, stream=False)
    body = await send(provider, wire, ctx)
    completion = provider.parse_completion(body, request)
    completion.provider = provider.name
    return completion


async def stream(provider: HTTPProvider, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
    provider.check_ready()
    wire = provider.chat_request(request, stream=True)
    parser = provider.stream_parser(request)
    resp, transport = await open_response(provider, wire, ctx)
    try:
        try:
            async for data in resp.aiter_bytes():
                for chunk in parser.feed(data):
                    yield chunk
        except transport.errors as e:
            raise transport.error(e, provider=provider.name, url=wire.url, proxy=ctx.proxy_for(provider)) from e
        for chunk in parser.finish():
            yield chunk
    finally:
        await resp.aclose()


async def list_models(provider: HTTPProvider, ctx: CallContext) -> list[Model]:
    wire = provider.models_request()
    if wire is None:
        return await Provider.alist_models(provider, ctx)
    provider.check_ready()
    return provider.parse_models(await send(provider, wire, ctx))


async def open_response(
    provider: HTTPProvider, wire: WireRequest, ctx: CallContext
) -> tuple[AsyncResponse, AsyncTransport]:
    """Send ``wire`` over the route's transport and wait for the headers; an error status is raised here, with its
    body read if possible."""
    proxy = ctx.proxy_for(provider)
    transport = ctx.pool.async_transport(proxy, wire.url)
    try:
        resp = await transport.open(wire, ctx.timeout_for(provider), ctx.watch)
    except transport.errors as e:
        raise transport.error(e, provider=provider.name, url=wire.url, proxy=proxy) from e
    if resp.status_code >= 400:
        try:
            body = await resp.aread()
        except transport.errors:
            body = b""  # the status says enough; some proxies reset the connection after it
        finally:
            await resp.aclose()
        raise provider.response_error(resp, body, ctx, wire.url)
    return resp, transport


async def send(provider: HTTPProvider, wire: WireRequest, ctx: CallContext) -> bytes:
    """Send ``wire`` and read the whole answer."""
    resp, transport = await open_response(provider, wire, ctx)
    try:
        return await resp.aread()
    except transport.errors as e:
        raise transport.error(e, provider=provider.name, url=wire.url, proxy=ctx.proxy_for(provider)) from e
    finally:
        await resp.aclose()
