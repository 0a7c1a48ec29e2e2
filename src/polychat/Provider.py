"""Seed-style imports: ``from polychat.Provider import OpenaiChat, RetryProvider``.

Kept for code written against the older library's API; the real home of providers is :mod:`polychat.providers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import providers as _providers

if TYPE_CHECKING:
    # polychat.providers' typed names but its base classes for implementers, and the chains (tests/test_registry.py
    # checks this).
    from .providers import Anthropic as Anthropic
    from .providers import Gemini as Gemini
    from .providers import Local as Local
    from .providers import Ollama as Ollama
    from .providers import OpenaiChat as OpenaiChat
    from .providers import Provider as Provider
    from .routing.retry import IterListProvider as IterListProvider
    from .routing.retry import RetryProvider as RetryProvider

# Everything polychat.providers offers but its base classes for implementers.
_NOT_SEED = frozenset({"Capabilities", "HTTPProvider"})


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return [n for n in _providers.__all__ if n not in _NOT_SEED]
    if name not in _NOT_SEED:
        try:
            return getattr(_providers, name)
        except AttributeError:
            pass
    raise AttributeError(f"module 'polychat.Provider' has no attribute {name!r}")
