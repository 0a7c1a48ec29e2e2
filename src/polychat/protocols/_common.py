"""What the protocol translations share: the call a request becomes, the error a bad field raises, ids, and the
server-sent event frame (Anthropic Messages and OpenAI Responses frame their streams the same way)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._json import dumps
from ..errors import InvalidRequestError
from ..types import ChatCompletionChunk, StreamChoice


@dataclass(eq=False, repr=False, slots=True)
class Call:
    """A request translated to polychat's call: ``create(model, messages, stream, **kwargs)``."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    kwargs: dict[str, Any]


def bad(param: str, message: str) -> InvalidRequestError:
    """The 400 for a field the caller got wrong; ``param`` names it (the protocols word ``message`` their way)."""
    return InvalidRequestError(message, param=param)


def new_id(prefix: str, digits: int = 32) -> str:
    """``prefix_`` and ``digits`` random hex digits (Anthropic's ids carry 24, OpenAI's 32)."""
    return prefix + "_" + uuid.uuid4().hex[:digits]


def sse_event(name: str, payload: Any) -> bytes:
    """One server-sent event: ``event: NAME`` and ``data: JSON``."""
    return b"event: " + name.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


def answer_choices(chunk: ChatCompletionChunk) -> Iterator[StreamChoice]:
    """The chunk's part of the one answer these protocols carry (choice 0: they have no ``n``)."""
    return (choice for choice in chunk.choices if choice.index == 0)
