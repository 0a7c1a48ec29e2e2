"""The members of the default chain: what ``Client()`` uses when no provider is given.

:func:`polychat.routing.retry.default_chain` tries them in order: remote providers whose credentials are
present, in this order:

1. ``OpenaiChat`` — when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set (or the client got ``api_key`` /
   ``base_url``); with no model given it asks for ``gpt-4o-mini``;
2. ``Anthropic`` — when ``ANTHROPIC_API_KEY`` is set (or ``api_key={"anthropic": ...}``);
3. ``Gemini`` — when ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY`` is set (or ``api_key={"gemini": ...}``);
4. the OpenAI-compatible registry presets whose key variable is set (or given in the ``api_key`` dict), in
   registry order (OpenRouter, Groq, Mistral, DeepSeek, Together, Fireworks, xAI, Perplexity, Cerebras, Azure
   OpenAI — Azure only with ``AZURE_OPENAI_ENDPOINT`` too); local servers (vLLM, LM Studio, llama.cpp, Ollama) are
   never added, since nothing says one is running.

``Local`` — the embedded SmolLM2 model — is the chain only when none of these is configured: the offline default,
so an answer is possible with no key and no network (it needs the ``polychat[local]`` extra: without it, and with
no key either, building the chain raises a ``ConfigError`` saying what to install or which key to set). It is
*not* a silent last resort behind remote providers: someone whose key is wrong, or who asked for ``gpt-4o-mini``,
must learn that, not get an answer from a 135M model (that substitution is something the user asks for: a config
route or ``[defaults] fallback``, or ``Local(any_model=True)`` in a chain of one's own). Failing over between the
providers that *are* configured is the point of the chain.

A client-wide ``api_key`` string and ``base_url`` apply to OpenaiChat only. Each member asks for its own default
model when the call names none.
"""

from __future__ import annotations

import os
from typing import Any

from .._constants import DEFAULT_OPENAI_MODEL as DEFAULT_OPENAI_MODEL
from .base import Provider


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
    if not members:
        # The offline default. It serves its own model only: asked for another, it answers with a clear 404.
        gone = missing(need_model=not os.environ.get(ENV_MODEL))
        if gone is not None:
            raise ConfigError(
                f"No provider is configured, and the embedded model is not installed ({gone} missing). Install it "
                f"with {INSTALL_HINT}, or set a provider's key: OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY "
                "(more in the README's Providers table)."
            )
        members.append(Local())
    return members


def missing_credentials(name: str) -> str | None:
    """Why built-in remote provider ``name`` is not part of the default chain (e.g. ``"GROQ_API_KEY not set"``),
    or None when its credentials are present. Reads the environment only."""
    from .http import HTTPProvider
    from .registry import NATIVE, PRESETS, provider_class

    if name == "openai":
        ok = os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
        return None if ok else "OPENAI_API_KEY not set"
    if name in NATIVE:
        cls = provider_class(name)
        if not issubclass(cls, HTTPProvider) or cls.official_key_env() is None or cls.env_api_key():
            return None
        return f"{' or '.join(cls.api_key_envs)} not set"
    preset = PRESETS.get(name)
    if preset is None or not preset.key_env:
        return None
    if not os.environ.get(preset.key_env):
        return f"{preset.key_env} not set"
    if preset.endpoint_env and not os.environ.get(preset.endpoint_env):
        return f"{preset.endpoint_env} not set"
    return None


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
