"""Providers: each turns a normalised chat request into an answer from one model service.

Classes load lazily (``polychat.providers.Local`` imports llama.cpp only when used). Which names exist is the
registry's business (:mod:`.registry`: native adapters and OpenAI-compatible presets), not a list kept here.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # What a type checker sees of the lazy names below: the base classes and the native adapters, so user code is
    # checked against their real signatures. (OpenAI-compatible presets are built from data at run time: ``Any``;
    # the chains live in routing/, which providers never import: polychat.Provider types them.)
    # tests/test_registry.py holds this list equal to _BASE and registry.NATIVE.
    from .anthropic import Anthropic as Anthropic
    from .base import Capabilities as Capabilities
    from .base import Provider as Provider
    from .gemini import Gemini as Gemini
    from .http import HTTPProvider as HTTPProvider
    from .local import Local as Local
    from .ollama import Ollama as Ollama
    from .openai import OpenaiChat as OpenaiChat

# Names that are not providers of the registry (which lists every built-in provider class: see registry.targets).
_BASE = {
    "Provider": ".base",
    "Capabilities": ".base",
    "HTTPProvider": ".http",
    "RetryProvider": "..routing.retry",
    "IterListProvider": "..routing.retry",
}


def __getattr__(name: str) -> Any:
    if name == "__all__":
        value: Any = sorted({*_BASE, *_registry().class_names()})
    elif name in _BASE:
        value = getattr(import_module(_BASE[name], __name__), name)
    else:
        target = _registry().class_names().get(name)
        if target is None:
            raise AttributeError(f"module 'polychat.providers' has no attribute {name!r}")
        value = _registry().load(target)
    globals()[name] = value
    return value


def _registry() -> Any:
    return import_module(".registry", __name__)


def __dir__() -> list[str]:
    return list(__getattr__("__all__"))
