"""OpenAI-compatible services as data: one :class:`Preset` row each, turned into an :class:`OpenaiChat` subclass.

A row says where the service lives (``base_url``), which environment variable holds its key, a default model, what
it can do (capability flags) and its quirks: parameters it rejects (refused before sending, naming the parameter
and the service, unless the call says ``drop_unsupported=True``), values it rejects (``checks``), parameters it
spells differently (``rename``), no-op parameters it would choke on (``ignore``), extra query parameters and the
auth header. Adding a service is a few lines in :data:`PRESETS`; ``docs`` names the page the row was built from.

Use a preset as a class (``from polychat.providers.registry import Groq``; ``Client(provider=Groq)`` reads
``GROQ_API_KEY``; ``Client(api_key={"groq": ...})`` works because ``key_name`` is the preset's name) or build one:
``registry.provider("groq", api_key=..., default_model=...)``. :func:`provider` also knows the native adapters
(openai, anthropic, gemini, ollama, local) and third-party plugins (:mod:`polychat.providers.plugins`).

Azure OpenAI is a row too: ``base_url`` is ``{endpoint}/openai`` (``AZURE_OPENAI_ENDPOINT``), requests go to
``/deployments/{deployment}/chat/completions?api-version=...`` (``deployment=`` or, as the ``openai`` package does,
the request's model), with the key in an ``api-key`` header (``AZURE_OPENAI_API_KEY``) and ``api_version=`` /
``OPENAI_API_VERSION`` (default :data:`AZURE_API_VERSION`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

from msgspec.structs import replace

from .._http import WireRequest
from .._request import PARAMS
from ..errors import ConfigError, MissingAPIKeyError
from ._convert import Check, accepted_params, format_types, only, unsupported
from ._names import path_segment
from .base import Capabilities, Provider
from .openai import OpenaiChat

if TYPE_CHECKING:
    from .._request import ChatRequest

AZURE_API_VERSION = "2024-10-21"
_FULL = Capabilities(streaming=True, tools=True, vision=True, json_mode=True, system_role=True)
_TEXT = replace(_FULL, vision=False)
#: OpenAI-only parameters no compatible service honours.
_OPENAI_ONLY = frozenset({"audio", "modalities", "prediction", "web_search_options", "verbosity"})


@dataclass(frozen=True)
class Preset:
    name: str
    cls: str  # the class name, e.g. "Groq"
    base_url: str
    key_env: str | None = None
    key_required: bool = True
    default_model: str | None = None
    capabilities: Capabilities = _FULL
    unsupported: frozenset[str] = _OPENAI_ONLY
    checks: Mapping[str, Check] = field(default_factory=dict)
    rename: Mapping[str, str] = field(default_factory=dict)
    ignore: frozenset[str] = frozenset()
    auth: str = "bearer"  # or "api-key"
    chat_path: str = "/chat/completions"
    endpoint_env: str | None = None  # fills "{endpoint}" in base_url
    local: bool = False
    #: Send an assistant message's ``content: null`` (beside tool calls) as "" for servers that require a string.
    null_content: bool = False
    docs: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("openrouter", "OpenRouter", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY",
               default_model="openai/gpt-4o-mini", docs="https://openrouter.ai/docs/api-reference/overview"),
        Preset("groq", "Groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY",
               default_model="llama-3.3-70b-versatile",
               unsupported=_OPENAI_ONLY | {"logit_bias", "top_logprobs"}, ignore=frozenset({"store", "service_tier"}),
               docs="https://console.groq.com/docs/openai"),
        Preset("mistral", "Mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY",
               default_model="mistral-small-latest", unsupported=_OPENAI_ONLY | {"logit_bias", "top_logprobs"},
               rename={"seed": "random_seed", "max_completion_tokens": "max_tokens"},
               ignore=frozenset({"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"}),
               docs="https://docs.mistral.ai/api/"),
        Preset("deepseek", "DeepSeek", "https://api.deepseek.com", "DEEPSEEK_API_KEY",
               default_model="deepseek-chat", capabilities=_TEXT,
               unsupported=_OPENAI_ONLY | {"logit_bias", "seed"},
               checks={"response_format": format_types("text", "json_object")},
               docs="https://api-docs.deepseek.com/api/create-chat-completion"),
        Preset("together", "Together", "https://api.together.xyz/v1", "TOGETHER_API_KEY",
               default_model="meta-llama/Llama-3.3-70B-Instruct-Turbo",
               docs="https://docs.together.ai/docs/openai-api-compatibility"),
        Preset("fireworks", "Fireworks", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY",
               default_model="accounts/fireworks/models/llama-v3p1-8b-instruct",
               docs="https://docs.fireworks.ai/tools-sdks/openai-compatibility"),
        Preset("xai", "XAI", "https://api.x.ai/v1", "XAI_API_KEY", default_model="grok-3-mini",
               docs="https://docs.x.ai/docs/api-reference"),
        Preset("perplexity", "Perplexity", "https://api.perplexity.ai", "PERPLEXITY_API_KEY", default_model="sonar",
               capabilities=replace(_FULL, tools=False),
               unsupported=_OPENAI_ONLY | {"tools", "tool_choice", "parallel_tool_calls", "logit_bias", "top_logprobs"},
               checks={"response_format": format_types("text", "json_schema"), "n": only(1)},
               docs="https://docs.perplexity.ai/api-reference/chat-completions-post"),
        Preset("cerebras", "Cerebras", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY", default_model="llama3.1-8b",
               capabilities=_TEXT,
               unsupported=_OPENAI_ONLY | {"frequency_penalty", "presence_penalty", "logit_bias",
                                           "parallel_tool_calls", "service_tier"},
               docs="https://inference-docs.cerebras.ai/resources/openai"),
        Preset("azure", "AzureOpenAI", "{endpoint}/openai", "AZURE_OPENAI_API_KEY", auth="api-key",
               chat_path="/deployments/{deployment}/chat/completions", endpoint_env="AZURE_OPENAI_ENDPOINT",
               docs="https://learn.microsoft.com/azure/ai-foundry/openai/reference"),
        Preset("vllm", "VLLM", "http://localhost:8000/v1", "VLLM_API_KEY", key_required=False, local=True,
               docs="https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html"),
        Preset("lmstudio", "LMStudio", "http://localhost:1234/v1", key_required=False, local=True,
               docs="https://lmstudio.ai/docs/app/api/endpoints/openai"),
        Preset("llamacpp", "LlamaCpp", "http://localhost:8080/v1", "LLAMA_API_KEY", key_required=False, local=True,
               docs="https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md"),
        Preset("llama-cpp-python", "LlamaCppPython", "http://localhost:8000/v1", key_required=False, local=True,
               checks={"response_format": format_types("text", "json_object")}, null_content=True,
               docs="https://llama-cpp-python.readthedocs.io/en/latest/server/"),
        Preset("ollama-openai", "OllamaOpenAI", "http://localhost:11434/v1", "OLLAMA_API_KEY", key_required=False,
               local=True, unsupported=_OPENAI_ONLY | {"logit_bias", "tool_choice"}, checks={"n": only(1)},
               docs="https://github.com/ollama/ollama/blob/main/docs/openai.md"),
    )
}  # fmt: skip


class PresetChat(OpenaiChat):
    """OpenaiChat configured by a :class:`Preset` row (subclasses are made by :func:`preset_class`)."""

    preset: ClassVar[Preset]

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        deployment: str | None = None,
        api_version: str | None = None,
        **kwargs: Any,
    ) -> None:
        p = self.preset
        if "{endpoint}" in (base_url or p.base_url):
            endpoint = os.environ.get(p.endpoint_env or "", "").rstrip("/")
            base_url = (base_url or p.base_url).format(endpoint=endpoint) if endpoint else None
        super().__init__(api_key=api_key, base_url=base_url, **kwargs)
        for header in ("openai-organization", "openai-project"):
            self._base_headers.pop(header, None)
        self.deployment = deployment
        if deployment and self.default_model is None:
            self.default_model = deployment
        self.query: dict[str, str] = {}
        if p.auth == "api-key":
            self.query["api-version"] = api_version or os.environ.get("OPENAI_API_VERSION") or AZURE_API_VERSION

    def auth_headers(self) -> dict[str, str]:
        if self.api_key and self.preset.auth == "api-key":
            return {"api-key": self.api_key}
        return super().auth_headers()

    def check_ready(self) -> None:
        p = self.preset
        if "{endpoint}" in self.base_url:
            raise MissingAPIKeyError(
                f"{self.name} needs its endpoint: set {p.endpoint_env} or pass base_url=...",
                provider=self.name,
                retryable=False,
            )
        if p.key_required and not self.api_key:  # also at a custom base_url: the row says the service needs one
            raise MissingAPIKeyError(
                f"No API key for {self.name}: set {p.key_env} or pass api_key=...", provider=self.name, retryable=False
            )

    def adapt(self, request: ChatRequest) -> ChatRequest:
        """The request with this service's quirks applied (refusals raised before anything is sent)."""
        p = self.preset
        rules: dict[str, Check | None] = {k: None for k in PARAMS if k not in p.unsupported}
        rules.update(p.checks)
        params = accepted_params(request.params, rules, provider=self.name, drop=request.drop_unsupported)
        if not p.capabilities.vision:
            for i, msg in enumerate(request.messages):
                content = msg.get("content")
                for j, part in enumerate(content if isinstance(content, list) else []):
                    if part.get("type") == "image_url":
                        raise unsupported(f"messages[{i}].content[{j}]", "(an image) is not supported", self.name)
        params = {p.rename.get(k, k): v for k, v in params.items() if k not in p.ignore}
        messages = request.messages
        if p.null_content and any(m.get("role") == "assistant" and m.get("content") is None for m in messages):
            messages = [
                {**m, "content": ""} if m.get("role") == "assistant" and m.get("content") is None else m
                for m in messages
            ]
        return replace(request, params=params, messages=messages)

    def chat_request(self, request: ChatRequest, *, stream: bool) -> WireRequest:
        wire = super().chat_request(self.adapt(request), stream=stream)
        p = self.preset
        if p.chat_path != "/chat/completions" or self.query:
            param = "deployment" if self.deployment else "model"
            target = path_segment(self.deployment or self.resolve_model(request.model), provider=self.name, param=param)
            url = self.base_url + p.chat_path.format(deployment=target)
            wire = replace(wire, url=url, params={**self.query, **(wire.params or {})})
        return wire

    def models_request(self) -> WireRequest:
        wire = super().models_request()
        return replace(wire, params={**self.query}) if self.query else wire


_CLASSES: dict[str, type[PresetChat]] = {}


def preset_class(name: str) -> type[PresetChat]:
    """The OpenaiChat subclass for preset ``name`` (made once, then cached)."""
    cls = _CLASSES.get(name)
    if cls is None:
        p = PRESETS[name]
        attrs = {
            "preset": p,
            "key_name": p.name,
            "capabilities": p.capabilities,
            "api_key_envs": (p.key_env,) if p.key_env else (),
            "base_url_env": "",
            "key_required": p.key_required,
            "default_base_url": p.base_url,
            "default_model": p.default_model,
            "__module__": __name__,
            "__doc__": f"{p.cls}: the OpenAI-compatible API at {p.base_url} (key: {p.key_env or 'none'}). {p.docs}",
        }
        cls = _CLASSES[name] = cast("type[PresetChat]", type(p.cls, (PresetChat,), attrs))
    return cls


_BY_CLASS = {p.cls: p.name for p in PRESETS.values()}


def __getattr__(name: str) -> Any:
    if name in _BY_CLASS:
        return preset_class(_BY_CLASS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The native adapters by name: "module:Class", imported on first use.
NATIVE = {
    "openai": "polychat.providers.openai:OpenaiChat",
    "anthropic": "polychat.providers.anthropic:Anthropic",
    "gemini": "polychat.providers.gemini:Gemini",
    "ollama": "polychat.providers.ollama:Ollama",
    "local": "polychat.providers.local:Local",
}


def targets() -> dict[str, str]:
    """Every built-in provider: its name and its class as ``"module:Class"`` (nothing is imported)."""
    return {**NATIVE, **{name: f"{__name__}:{p.cls}" for name, p in PRESETS.items()}}


def class_names() -> dict[str, str]:
    """Built-in provider classes by class name (``"Groq"``), each as ``"module:Class"``."""
    return {target.rpartition(":")[2]: target for target in targets().values()}


def load(target: str) -> type[Provider]:
    """The class ``"module:Class"`` names."""
    from importlib import import_module

    module, _, attr = target.partition(":")
    cls: type[Provider] = getattr(import_module(module), attr)
    return cls


def names() -> list[str]:
    """Every provider name :func:`provider` knows: native adapters, presets, then installed plugins."""
    from . import plugins

    return [*NATIVE, *PRESETS, *(n for n in plugins.available() if n not in NATIVE and n not in PRESETS)]


def provider_class(name: str) -> type[Provider]:
    """The class for provider ``name``: a native adapter, a preset or a plugin (built-ins win over plugins)."""
    if name in NATIVE:
        return load(NATIVE[name])
    if name in PRESETS:
        return preset_class(name)
    from . import plugins

    if name in plugins.available():
        return plugins.load(name)
    hint = difflib.get_close_matches(name, names(), n=1)
    also = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"unknown provider {name!r}{also} (known: {', '.join(names())})")


def provider(name: str, **overrides: Any) -> Provider:
    """An instance of provider ``name`` built with ``overrides`` (``api_key``, ``base_url``, ``default_model``...)."""
    return provider_class(name)(**overrides)


def credentialed(api_key: Any = None) -> list[Provider]:
    """Remote presets whose key is present (``api_key`` dict entry or environment variable), in registry order.

    Azure also needs its endpoint. Local servers are never added: nothing says one is running.
    """
    out: list[Provider] = []
    for p in PRESETS.values():
        if p.local or not p.key_env:
            continue
        key = api_key.get(p.name) if isinstance(api_key, dict) else None
        if not (key or os.environ.get(p.key_env)):
            continue
        if p.endpoint_env and not os.environ.get(p.endpoint_env):
            continue
        out.append(preset_class(p.name)(api_key=key) if key else preset_class(p.name)())
    return out


def feature_table() -> str:
    """A markdown table of what each provider supports, from the capability flags: the README's, word for word
    (a test holds them together; paste this over it when the registry changes)."""
    rows = [(n, provider_class(n)) for n in (*NATIVE, *PRESETS)]
    head = "| provider | streaming | tools | vision | JSON mode | system role | prefill | offline | key |"
    lines = [head, "|" + "---|" * 9]

    def mark(flag: bool) -> str:
        return "yes" if flag else "—"

    for n, cls in rows:
        c = cls.capabilities
        envs: tuple[str, ...] = getattr(cls, "api_key_envs", ())
        key = " / ".join(envs)
        optional = not getattr(cls, "key_required", False)
        key_text = (f"{key} (optional)" if optional else key) if key else "none"
        flags = (c.streaming, c.tools, c.vision, c.json_mode, c.system_role, c.prefill, c.offline)
        lines.append(f"| {n} (`{cls.__name__}`) | " + " | ".join(mark(f) for f in flags) + f" | {key_text} |")
    return "\n".join(lines)
