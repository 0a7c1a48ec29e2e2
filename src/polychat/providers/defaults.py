"""The members of the default chain: what ``Client()`` uses when no provider is given.

:func:`polychat.routing.retry.default_chain` tries them in order. Remote providers whose credentials are present
come first, in this order, then the embedded model last:

1. ``OpenaiChat`` — when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set (or the client got ``api_key`` /
   ``base_url``); with no model given it asks for ``gpt-4o-mini``;
2. ``Anthropic`` — when ``ANTHROPIC_API_KEY`` is set (or ``api_key={"anthropic": ...}``);
3. ``Gemini`` — when ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY`` is set (or ``api_key={"gemini": ...}``);
4. the OpenAI-compatible registry presets whose key variable is set (or given in the ``api_key`` dict), in
   registry order (OpenRouter, Groq, Mistral, DeepSeek, Together, Fireworks, xAI, Perplexity, Cerebras, Azure
   OpenAI — Azure only with ``AZURE_OPENAI_ENDPOINT`` too); local servers (vLLM, LM Studio, llama.cpp, Ollama) are
   never added, since nothing says one is running;
5. ``Local`` — the embedded SmolLM2 model, when the ``polychat[local]`` extra is installed, so an answer is
   possible with no key and no network. Without the extra and with no key either, building the chain raises a
   ``ConfigError`` saying what to install or which key to set.

A client-wide ``api_key`` string and ``base_url`` apply to OpenaiChat only. Each member asks for its own default
model when the call names none.
"""

from __future__ import annotations

import os
from typing import Any

from .base import Provider

#: What the default chain asks OpenAI for when the caller names no model.
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def default_members(*, api_key: Any = None, base_url: str | None = None) -> list[Provider]:
    from ..errors import ConfigError
    from .local import ENV_MODEL, Local
    from .local._install import INSTALL_HINT, missing
    from .openai import OpenaiChat

    members: list[Provider] = []
    openai_key = api_key.get("openai") if isinstance(api_key, dict) else api_key
    if openai_key or base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        members.append(OpenaiChat(api_key=openai_key, base_url=base_url, default_model=DEFAULT_OPENAI_MODEL))
    members.extend(_native_members(api_key))
    # Behind remote providers the embedded model is the last resort: it answers whatever model was asked (its
    # answers say model 'smollm2-135m'). Alone, an unknown model name is a clear 404.
    gone = missing(need_model=not os.environ.get(ENV_MODEL))
    if gone is None:
        members.append(Local(any_model=bool(members)))
    elif not members:
        raise ConfigError(
            f"No provider is configured, and the embedded model is not installed ({gone} missing). Install it with "
            f"{INSTALL_HINT}, or set a provider's key: OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY (more "
            "in the README's Providers table)."
        )
    return members


def _native_members(api_key: Any) -> list[Provider]:
    """The registry's native adapters that need a key and have one (OpenAI has its own rule above), then the
    presets whose credentials are present, in registry order."""
    from .http import HTTPProvider
    from .registry import NATIVE, credentialed, provider_class

    keys = api_key if isinstance(api_key, dict) else {}
    out: list[Provider] = []
    for name in NATIVE:
        if name == "openai":
            continue
        cls = provider_class(name)
        if not issubclass(cls, HTTPProvider) or cls.official_key_env() is None:
            continue  # the embedded model comes last; servers you run yourself are never guessed at
        key = keys.get(name)
        if key or cls.env_api_key():
            out.append(cls(api_key=key))
    out.extend(credentialed(keys))
    return out
