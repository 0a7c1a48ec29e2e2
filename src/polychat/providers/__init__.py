"""Providers: each turns a normalised chat request into an answer from one model service.

Classes load lazily (``polychat.providers.Local`` imports llama.cpp only when used).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "Provider": ".base",
    "Capabilities": ".base",
    "HTTPProvider": ".http",
    "OpenaiChat": ".openai",
    "Local": ".local",
    "RetryProvider": "..routing.retry",
    "IterListProvider": "..routing.retry",
    # native adapters
    "Anthropic": ".anthropic",
    "Gemini": ".gemini",
    "Ollama": ".ollama",
    # OpenAI-compatible presets (classes made from rows of .registry)
    "OpenRouter": ".registry",
    "Groq": ".registry",
    "Mistral": ".registry",
    "DeepSeek": ".registry",
    "Together": ".registry",
    "Fireworks": ".registry",
    "XAI": ".registry",
    "Perplexity": ".registry",
    "Cerebras": ".registry",
    "AzureOpenAI": ".registry",
    "VLLM": ".registry",
    "LMStudio": ".registry",
    "LlamaCpp": ".registry",
    "LlamaCppPython": ".registry",
    "OllamaOpenAI": ".registry",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'polychat.providers' has no attribute {name!r}")
    value = getattr(import_module(mod, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
