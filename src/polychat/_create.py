"""``polychat.create``: the seed's one-call helper that yields text parts.

On failure it logs the error (logger ``polychat``) and yields one empty string, as the seed documents; pass
``raise_errors=True`` to get the exception instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("polychat")


def create(
    model: str,
    messages: list[dict[str, Any]],
    stream: bool = True,
    *,
    raise_errors: bool = False,
    client: Any = None,
    **options: Any,
) -> Iterator[str]:
    """Yield the answer's text as it arrives (one part when ``stream=False``).

    ``options`` are those of ``client.chat.completions.create`` (``provider=``, ``proxy=``, ``temperature=``...).
    Bad arguments raise at once whatever ``raise_errors`` says: they are mistakes, not provider failures.
    """
    from .client import Client, Stream
    from .errors import APIError

    cli = client if client is not None else Client()
    try:
        response = cli.chat.completions.create(model=model, messages=messages, stream=stream, **options)
        if isinstance(response, Stream):
            with response:
                for chunk in response:
                    for choice in chunk.choices:
                        if choice.index == 0 and choice.delta.content:
                            yield choice.delta.content
        else:
            yield response.content
    except APIError as e:
        if raise_errors:
            raise
        log.error("polychat.create failed: %s", e)
        yield ""
    finally:
        if client is None:
            cli.close()
