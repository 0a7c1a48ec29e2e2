"""Seed-style imports: ``from polychat.Provider import OpenaiChat, RetryProvider``.

Kept for code written against the older library's API; the real home of providers is :mod:`polychat.providers`.
"""

from __future__ import annotations

from typing import Any

from . import providers as _providers

__all__ = [
    "VLLM",
    "XAI",
    "Anthropic",
    "AzureOpenAI",
    "Cerebras",
    "DeepSeek",
    "Fireworks",
    "Gemini",
    "Groq",
    "IterListProvider",
    "LMStudio",
    "LlamaCpp",
    "LlamaCppPython",
    "Local",
    "Mistral",
    "Ollama",
    "OllamaOpenAI",
    "OpenRouter",
    "OpenaiChat",
    "Perplexity",
    "Provider",
    "RetryProvider",
    "Together",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(_providers, name)
    raise AttributeError(f"module 'polychat.Provider' has no attribute {name!r}")
