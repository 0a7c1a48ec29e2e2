"""The registry of OpenAI-compatible presets, provider plugins, the default chain and the config-file types."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import polychat.Provider as seed_style
import polychat.providers as providers
from polychat import Client, errors
from polychat._request import build_request
from polychat.config import PROVIDER_TYPES, parse_config
from polychat.errors import MissingAPIKeyError
from polychat.providers import plugins, registry
from polychat.providers._convert import UnsupportedParameterError
from polychat.providers.anthropic import Anthropic
from polychat.providers.base import Provider
from polychat.providers.defaults import default_members
from polychat.providers.gemini import Gemini
from polychat.providers.http import HTTPProvider
from polychat.providers.openai import OpenaiChat
from tests.support.wire import Reply, WireServer

USER = [{"role": "user", "content": "Hi"}]
ENV_KEYS = [p.key_env for p in registry.PRESETS.values() if p.key_env] + [
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_API_VERSION",
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_KEYS:
        monkeypatch.delenv(var, raising=False)


def http(provider: Provider) -> HTTPProvider:
    """``provider``, which the test expects to speak HTTP (every preset and plugin here does)."""
    assert isinstance(provider, HTTPProvider), provider
    return provider


def sent(name: str, stream: bool = False, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    params = dict(kwargs)
    provider = http(registry.provider(name, **params.pop("init", {"api_key": "k"})))
    req, _ = build_request(params.pop("model", "m"), params.pop("messages", USER), stream, params)
    wire = provider.chat_request(req, stream=stream)
    return wire, json.loads(wire.content)


def test_every_preset_is_a_class_with_its_row() -> None:
    for name, p in registry.PRESETS.items():
        cls = registry.preset_class(name)
        assert issubclass(cls, OpenaiChat) and cls.__name__ == p.cls and cls.key_name == name
        assert getattr(registry, p.cls) is cls
        assert cls.capabilities is p.capabilities and p.docs.startswith("https://")
        if not p.local:
            inst = cls(api_key="k")
            assert inst.base_url == p.base_url.rstrip("/") or "{endpoint}" in p.base_url
        assert getattr(providers, p.cls) is cls and getattr(seed_style, p.cls) is cls


def test_key_from_environment_and_required(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAPIKeyError) as e:
        http(registry.provider("groq")).check_ready()
    assert "GROQ_API_KEY" in str(e.value)
    monkeypatch.setenv("GROQ_API_KEY", "gsk-secret-123")
    groq = registry.provider("groq")
    wire, _ = sent("groq", init={})
    assert wire.headers["authorization"] == "Bearer gsk-secret-123" and "gsk-secret-123" not in repr(groq)
    assert wire.url == "https://api.groq.com/openai/v1/chat/completions"
    http(registry.provider("lmstudio")).check_ready()  # local servers need no key


def test_openai_org_headers_do_not_leak_to_other_services(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-123")
    wire, _ = sent("together")
    assert "openai-organization" not in wire.headers


def test_quirks_rename_ignore_refuse_and_drop() -> None:
    _, body = sent("mistral", seed=7, max_completion_tokens=5, user="u")
    assert body["random_seed"] == 7 and body["max_tokens"] == 5 and "seed" not in body and "user" not in body
    with pytest.raises(UnsupportedParameterError) as e:
        sent("cerebras", presence_penalty=0.5)
    assert e.value.param == "presence_penalty" and "Cerebras" in str(e.value)
    _, body = sent("cerebras", presence_penalty=0.5, temperature=0.3, drop_unsupported=True)
    assert "presence_penalty" not in body and body["temperature"] == 0.3
    with pytest.raises(UnsupportedParameterError):
        sent("deepseek", response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}})
    _, body = sent("deepseek", response_format={"type": "json_object"})
    assert body["response_format"] == {"type": "json_object"}
    with pytest.raises(UnsupportedParameterError) as e:
        sent("perplexity", tools=[{"type": "function", "function": {"name": "f"}}])
    assert e.value.param == "tools"
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}]
    with pytest.raises(UnsupportedParameterError) as e:
        sent("cerebras", messages=image)
    assert e.value.param == "messages[0].content[0]"
    _, body = sent("llama-cpp-python", messages=[*USER, {"role": "assistant", "content": None, "tool_calls": []}])
    assert body["messages"][1]["content"] == ""


def test_azure_deployment_url_api_key_header_and_version(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MissingAPIKeyError) as e:
        http(registry.provider("azure", api_key="k")).check_ready()
    assert "AZURE_OPENAI_ENDPOINT" in str(e.value)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-secret-key")
    wire, _ = sent("azure", init={}, model="gpt-4o")
    assert wire.url == "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
    assert wire.params == {"api-version": registry.AZURE_API_VERSION}
    assert wire.headers["api-key"] == "az-secret-key" and "authorization" not in wire.headers
    wire, _ = sent("azure", init={"deployment": "prod east", "api_version": "2025-01-01"}, model="")
    assert wire.url.endswith("/deployments/prod%20east/chat/completions") and wire.params["api-version"] == "2025-01-01"
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-06-01")
    assert sent("azure", init={})[0].params["api-version"] == "2024-06-01"


def test_client_api_key_dict_and_drop_unsupported_end_to_end() -> None:
    with WireServer() as server:
        base = server.scenario("g", Reply.fixture("openai", "text.response.json"))
        groq = registry.preset_class("groq")

        class LocalGroq(groq):  # type: ignore[valid-type,misc]
            default_base_url = base

        with Client(provider=LocalGroq, api_key={"groq": "gsk-dict-key", "openai": "no"}, max_retries=0) as client:
            r = client.chat.completions.create(model="m", messages=USER, logit_bias={"1": 2}, drop_unsupported=True)
            assert r.content and r.provider == "LocalGroq"
            with pytest.raises(UnsupportedParameterError):
                client.chat.completions.create(model="m", messages=USER, logit_bias={"1": 2})
        (rec,) = server.requests("g")
        assert rec.headers["authorization"] == "Bearer gsk-dict-key" and "logit_bias" not in rec.json()


def test_provider_by_name_and_feature_table() -> None:
    assert isinstance(registry.provider("anthropic", api_key="k"), Anthropic)
    assert isinstance(registry.provider("gemini", api_key="k"), Gemini)
    with pytest.raises(errors.ConfigError) as e:
        registry.provider("grok")
    assert "did you mean" in str(e.value)
    table = registry.feature_table()
    for name in (*registry.NATIVE, *registry.PRESETS):
        assert f"| {name} (`{registry.provider_class(name).__name__}`) |" in table
    assert "| anthropic (`Anthropic`) | yes | yes | yes | yes | yes | yes | — |" in table


def test_readme_providers_table_is_the_registry_s() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert registry.feature_table() + "\n" in readme, "paste registry.feature_table() over the README's table"


def test_every_list_of_providers_comes_from_the_registry() -> None:
    every = registry.targets()
    assert set(every) == {*registry.NATIVE, *registry.PRESETS} and set(PROVIDER_TYPES) == set(every)
    for name, target in every.items():
        cls = registry.provider_class(name)
        assert target == f"{cls.__module__}:{cls.__name__}" or name in registry.PRESETS
        assert getattr(providers, cls.__name__) is cls and getattr(seed_style, cls.__name__) is cls
        assert cls.__name__ in providers.__all__ and cls.__name__ in seed_style.__all__
    assert "HTTPProvider" in providers.__all__ and "HTTPProvider" not in seed_style.__all__
    assert {"RetryProvider", "IterListProvider", "Provider"} <= set(seed_style.__all__)
    with pytest.raises(AttributeError):
        _ = providers.NoSuchProvider


def test_a_native_provider_needs_only_its_class_and_a_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    from polychat.providers.http import HTTPProvider

    class Acme(OpenaiChat):
        """Stands in for a new native module: only class attributes, no __init__ or check_ready of its own."""

        key_name = "acme"
        api_key_envs = ("ACME_API_KEY", "ACME_KEY")
        base_url_env = "ACME_BASE_URL"
        default_base_url = "https://api.acme.example/v1"

        def auth_headers(self) -> dict[str, str]:
            return {"x-acme-key": self.api_key} if self.api_key else {}

    module = type(sys)("acme_native")
    module.Acme = Acme  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "acme_native", module)
    monkeypatch.setitem(registry.NATIVE, "acme", "acme_native:Acme")
    for var in ("ACME_API_KEY", "ACME_KEY", "ACME_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    assert issubclass(Acme, HTTPProvider) and "acme" in registry.names()
    assert "| acme (`Acme`) |" in registry.feature_table() and "ACME_API_KEY / ACME_KEY" in registry.feature_table()
    assert providers.Acme is Acme
    with pytest.raises(MissingAPIKeyError) as e:
        http(registry.provider("acme")).check_ready()
    assert "ACME_API_KEY or ACME_KEY" in str(e.value) and "ACME_BASE_URL" in str(e.value)
    assert [p.name for p in default_members()] == ["Local"]  # no key: not in the default chain
    monkeypatch.setenv("ACME_KEY", "ak-second-variable")
    acme = registry.provider("acme")
    assert isinstance(acme, Acme) and acme.api_key == "ak-second-variable"
    wire, _ = sent("acme", init={})  # what goes on the wire: the key from the second variable, in Acme's header
    assert wire.headers["x-acme-key"] == "ak-second-variable" and "authorization" not in wire.headers
    assert [p.name for p in default_members()] == ["Acme"]
    monkeypatch.setenv("ACME_BASE_URL", "http://127.0.0.1:9/v1")
    assert registry.provider("acme", api_key="").base_url == "http://127.0.0.1:9/v1"
    http(registry.provider("acme", api_key="")).check_ready()  # a custom server: no key needed


def test_config_types_cover_every_adapter_and_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("anthropic", "gemini", "ollama", *registry.PRESETS):
        ptype = PROVIDER_TYPES[name]
        attr = ptype.target.partition(":")[2]
        assert ptype.http
        if name in registry.PRESETS:
            p = registry.PRESETS[name]
            assert attr == p.cls and ptype.key_env == (p.key_env if p.key_required else None)
    monkeypatch.setenv("MY_CLAUDE_KEY", "ck-123")
    cfg = parse_config(
        textwrap.dedent(
            """
            [providers.claude]
            type = "anthropic"
            api_key_env = "MY_CLAUDE_KEY"
            default_model = "claude-haiku-4-5"

            [providers.fast]
            type = "groq"
            base_url = "http://127.0.0.1:9/openai/v1"
            """
        )
    )
    claude = cfg.provider("claude")
    assert isinstance(claude, Anthropic) and claude.api_key == "ck-123" and claude.default_model == "claude-haiku-4-5"
    fast = cfg.provider("fast")
    assert type(fast).__name__ == "Groq" and http(fast).base_url == "http://127.0.0.1:9/openai/v1"


def test_default_chain_order(monkeypatch: pytest.MonkeyPatch) -> None:
    def names(**kw: Any) -> list[str]:
        return [p.name for p in default_members(**kw)]

    assert names() == ["Local"]
    monkeypatch.setenv("GEMINI_API_KEY", "g")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "a")
    monkeypatch.setenv("MISTRAL_API_KEY", "m")
    monkeypatch.setenv("GROQ_API_KEY", "q")
    monkeypatch.setenv("OPENAI_API_KEY", "o")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "z")  # no endpoint: not added
    assert names() == ["OpenaiChat", "Anthropic", "Gemini", "Groq", "Mistral"]  # the embedded model: only alone
    for var in ("GEMINI_API_KEY", "ANTHROPIC_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(var)
    members = default_members(api_key={"anthropic": "ka", "deepseek": "kd"})
    assert [p.name for p in members] == ["Anthropic", "DeepSeek"]
    assert http(members[0]).api_key == "ka" and http(members[1]).api_key == "kd"


# -- plugins -----------------------------------------------------------------------------------------------------


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake installed distribution declaring three ``polychat.providers`` entry points."""
    (tmp_path / "acme_polychat.py").write_text(
        textwrap.dedent(
            """
            from polychat.providers.openai import OpenaiChat

            class AcmeChat(OpenaiChat):
                key_name = "acme"
                default_base_url = "http://127.0.0.1:9/v1"

            not_a_provider = 42
            """
        )
    )
    (tmp_path / "acme_broken.py").write_text("raise RuntimeError('acme is broken')\n")
    info = tmp_path / "acme_polychat-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-polychat\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[polychat.providers]\n"
        "acme = acme_polychat:AcmeChat\n"
        "broken = acme_broken:Thing\n"
        "notprov = acme_polychat:not_a_provider\n"
        "anthropic = acme_polychat:AcmeChat\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.available(refresh=True)
    yield tmp_path
    for mod in ("acme_polychat", "acme_broken"):
        sys.modules.pop(mod, None)
    monkeypatch.undo()
    plugins.available(refresh=True)


def test_plugins_are_found_lazily_and_loaded_on_use(plugin_dist: Path) -> None:
    found = plugins.available()
    assert {"acme", "broken", "notprov"} <= set(found)
    assert "acme_polychat" not in sys.modules, "discovery must not import plugins"
    assert "acme" in registry.names()
    acme = registry.provider("acme", api_key="k")
    assert type(acme).__name__ == "AcmeChat" and isinstance(acme, Provider)
    assert isinstance(registry.provider("anthropic", api_key="k"), Anthropic), "built-ins win over plugins"


def test_broken_plugins_say_which_and_why(plugin_dist: Path) -> None:
    with pytest.raises(plugins.PluginError) as e:
        registry.provider("broken")
    msg = str(e.value)
    assert "'broken'" in msg and "acme_broken:Thing" in msg and "acme-polychat" in msg and "acme is broken" in msg
    assert isinstance(e.value.__cause__, RuntimeError)
    with pytest.raises(plugins.PluginError) as e:
        plugins.load("notprov")
    assert "not a polychat Provider subclass" in str(e.value)
    with pytest.raises(errors.ConfigError):
        plugins.load("missing")


def test_a_refused_parameter_fails_over_to_a_provider_that_honours_it() -> None:
    from polychat.routing import CircuitBreaker, RetryProvider

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with WireServer() as server:
        pplx = server.scenario("pplx", Reply.fixture("openai", "text.response.json"))
        oai = server.scenario("oai", Reply.fixture("openai", "tool_call.response.json"))
        chain = RetryProvider(
            [registry.provider("perplexity", api_key="k", base_url=pplx), OpenaiChat(api_key="k", base_url=oai)],
            breaker=CircuitBreaker(),
        )
        with Client(provider=chain) as client:
            r = client.chat.completions.create(model="m", messages=USER, tools=tools)
        assert r.provider == "OpenaiChat" and r.choices[0].finish_reason == "tool_calls"
        assert server.requests("pplx") == [] and len(server.requests("oai")) == 1


def test_a_config_file_takes_a_plugin_as_its_type(plugin_dist: Path) -> None:
    config = parse_config(
        '[providers.a]\ntype = "acme"\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "ACME_KEY"\nmodels = ["m"]\n'
    )
    acme = config.provider("a")
    assert type(acme).__name__ == "AcmeChat"
    assert http(acme).base_url == "http://127.0.0.1:1/v1"
    assert config.redacted()["providers"]["a"]["type"] == "acme"
    with pytest.raises(errors.ConfigError, match=r"providers\.b\.type: provider plugin 'broken'.*acme is broken"):
        parse_config('[providers.b]\ntype = "broken"\n')
    with pytest.raises(errors.ConfigError, match=r"unknown provider type 'acm'; did you mean 'acme'\?"):
        parse_config('[providers.b]\ntype = "acm"\n')


def test_what_a_type_checker_sees_of_the_lazy_modules_is_what_they_give() -> None:
    """polychat.providers and polychat.Provider load their classes on first use; the names they import for type
    checkers only (so user code is checked against the real classes) are the base classes and the native adapters,
    the same as at run time."""
    import ast

    import polychat.Provider

    def checked(module: Any) -> dict[str, Any]:
        tree = ast.parse(Path(module.__file__).read_text())
        block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
        imports = [n for n in block.body if isinstance(n, ast.ImportFrom)]
        return {a.asname or a.name: getattr(module, a.asname or a.name) for n in imports for a in n.names}

    natives = {registry.load(target).__name__ for target in registry.NATIVE.values()}
    chains = {name for name, module in providers._BASE.items() if module.startswith("..routing")}
    typed = checked(providers)
    assert set(typed) == set(providers._BASE) - chains | natives  # providers never import routing/
    seed = checked(polychat.Provider)
    assert set(seed) == set(typed) - polychat.Provider._NOT_SEED | chains
    assert all(cls is getattr(providers, name) and cls.__name__ == name for name, cls in {**typed, **seed}.items())
