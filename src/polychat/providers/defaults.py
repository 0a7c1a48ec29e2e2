"""The default chain: what ``Client()`` uses when no provider is given.

Remote providers whose credentials are present come first, in this order, then the embedded model last:

1. ``OpenaiChat`` — when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set (or the client got ``api_key`` /
   ``base_url``); with no model given it asks for ``gpt-4o-mini``;
2. ``Local`` — the embedded SmolLM2 model, always, so an answer is possible with no key and no network.
"""

from __future__ import annotations

import os
from typing import Any

from .base import Provider

#: What the default chain asks OpenAI for when the caller names no model.
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def default_members(*, api_key: Any = None, base_url: str | None = None) -> list[Provider]:
    from .local import Local
    from .openai import OpenaiChat

    members: list[Provider] = []
    openai_key = api_key.get("openai") if isinstance(api_key, dict) else api_key
    if openai_key or base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        members.append(OpenaiChat(api_key=openai_key, base_url=base_url, default_model=DEFAULT_OPENAI_MODEL))
    members.append(Local())
    return members


def default_chain(*, api_key: Any = None, base_url: str | None = None) -> Provider:
    from ..routing.retry import RetryProvider

    members = default_members(api_key=api_key, base_url=base_url)
    if len(members) == 1:
        return members[0]
    return RetryProvider(members, max_retries=1, name="default")
