"""The config file: where it is found, what a good file gives, and a precise error for each kind of bad file."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from polychat._context import CallContext
from polychat._http import TransportPool
from polychat._request import ChatRequest
from polychat.config import (
    PROVIDER_TYPES,
    Config,
    ConfigFileError,
    ProviderType,
    config_location,
    find_line,
    load_config,
    parse_config,
)
from polychat.errors import ConfigError
from polychat.providers.base import Capabilities, Provider
from polychat.providers.openai import OpenaiChat
from polychat.routing.pinned import PinnedModel
from polychat.routing.retry import RetryProvider
from polychat.types import ChatCompletion, ChatCompletionChunk, ChoiceDelta, Model, StreamChoice

DATA = Path(__file__).parent / "data" / "config"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "POLYCHAT_CONFIG", "WORK_KEY", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


# -- where the file is -------------------------------------------------------------------------------------------


def test_location_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert config_location() == (tmp_path / "home" / ".config" / "polychat" / "config.toml", "default")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_location() == (tmp_path / "xdg" / "polychat" / "config.toml", "default")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")  # the XDG spec says: ignore relative paths
    assert config_location()[0] == tmp_path / "home" / ".config" / "polychat" / "config.toml"
    monkeypatch.setenv("POLYCHAT_CONFIG", str(tmp_path / "env.toml"))
    assert config_location() == (tmp_path / "env.toml", "POLYCHAT_CONFIG")
    assert config_location(tmp_path / "arg.toml") == (tmp_path / "arg.toml", "--config")
    assert config_location("~/x.toml")[0] == tmp_path / "home" / "x.toml"


def test_missing_default_file_is_an_empty_config() -> None:
    config = load_config()
    assert config.path is None
    assert config.declared == {} and config.routes == {}
    # the built-ins: every remote provider type with a key variable, and the embedded model
    assert {"openai", "anthropic", "gemini", "groq", "local"} <= set(config.specs)
    assert all(spec.builtin for spec in config.specs.values())
    assert config.client_kwargs() == {}
    assert config.resolve() == (None, "")
    assert config.models() == []


def test_default_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "polychat").mkdir(parents=True)
    write(tmp_path / "xdg" / "polychat", '[defaults]\nmodel = "m"\n')
    assert load_config().default_model == "m"


def test_missing_explicit_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"nope\.toml: config file not found \(given by --config\)"):
        load_config(tmp_path / "nope.toml")
    monkeypatch.setenv("POLYCHAT_CONFIG", str(tmp_path / "env.toml"))
    with pytest.raises(ConfigFileError, match=r"env\.toml: config file not found \(given by \$POLYCHAT_CONFIG\)"):
        load_config()


def test_directory_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="is a directory"):
        load_config(tmp_path)
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[defaults]\nmodel = "caf\xe9"\n')
    with pytest.raises(ConfigFileError, match=r"latin1\.toml:2: the file is not valid UTF-8"):
        load_config(path)


# -- a good file ---------------------------------------------------------------------------------------------------


def test_full_example_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORK_KEY", "sk-work-0123456789")
    config = load_config(DATA / "good.toml")
    assert config.path == str(DATA / "good.toml")
    assert config.default_model == "fast"
    assert config.default_provider is None
    kwargs = config.client_kwargs()
    assert kwargs["timeout"] == 60.0 and kwargs["max_retries"] == 2 and kwargs["first_token_timeout"] == 20.0
    assert repr(kwargs["proxies"]) == "ProxyConfig(all=socks5://127.0.0.1:1080)"
    assert config.models() == ["fast", "gpt-4o-mini", "gpt-4o"]

    work = config.provider("work")
    assert isinstance(work, OpenaiChat)
    assert work.name == "work"
    assert work.base_url == "http://127.0.0.1:8080/v1"
    assert work.api_key == "sk-work-0123456789"
    assert work.default_model == "gpt-4o-mini"
    assert work.timeout is not None and work.timeout.read == 30.0
    assert work.proxy is not None and work.proxy.url_for("https") == "http://user:pa%24s@127.0.0.1:3128"
    assert config.provider("work") is work  # built once

    routed = config.route("fast")
    assert routed is not None
    chain, model = routed
    assert model == "fast"
    assert isinstance(chain, RetryProvider)
    assert chain.name == "fast" and chain.max_retries == 1 and chain.shuffle is False
    first, second = chain.providers
    assert isinstance(first, PinnedModel) and first.inner is work and first.model == "gpt-4o-mini"
    assert isinstance(second, PinnedModel) and second.inner is config.provider("backup") and second.model == ""
    assert second.default_model == "gpt-4o"  # the provider's default, as the pinned empty model means
    assert config.route("fast") == routed  # cached: breaker and rng state persist across calls


def test_resolution_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(DATA / "good.toml")
    work, backup = config.provider("work"), config.provider("backup")
    assert config.route("work") == (work, "gpt-4o-mini")  # a provider name: its default model
    assert config.route("work:other-model") == (work, "other-model")
    assert config.route("gpt-4o") == (backup, "gpt-4o")  # listed in one provider's models
    assert config.route("llama3:8b") is None  # "llama3" is no provider: the colon belongs to the model
    assert config.route("") is None
    assert config.resolve() == config.route("fast")  # [defaults] model
    assert config.resolve("unclaimed") == (None, "unclaimed")  # the default chain
    assert config.resolve(None, "backup") == (backup, "gpt-4o")  # --provider alone: its default, not "fast"
    assert config.resolve("x", "work") == (work, "x")
    assert config.resolve(None, "fast") == config.route("fast")
    with pytest.raises(
        ConfigError, match="unknown provider 'nope'; known: openai, anthropic, gemini, local, work, backup, fast"
    ):
        config.resolve(None, "nope")


def test_model_listed_by_several_providers_is_a_chain() -> None:
    config = parse_config(
        '[providers.a]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\nmodels = ["m"]\n'
        '[providers.b]\ntype = "openai"\nbase_url = "http://127.0.0.1:2/v1"\nmodels = ["m", "n"]\n'
        "[defaults]\nmax_retries = 0\n"
    )
    routed = config.route("m")
    assert routed is not None
    chain, model = routed
    assert model == "m"
    assert isinstance(chain, RetryProvider) and chain.max_retries == 0
    assert [p.name for p in chain.providers] == ["a", "b"]
    assert config.route("n") == (config.provider("b"), "n")


def test_defaults_provider_takes_unclaimed_models() -> None:
    config = parse_config(
        '[defaults]\nprovider = "work"\n[providers.work]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
    )
    assert config.resolve("anything") == (config.provider("work"), "anything")
    assert config.resolve() == (config.provider("work"), "")


def test_keys_never_go_where_they_were_not_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-official-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    config = parse_config(
        '[providers.custom]\ntype = "openai"\nbase_url = "http://127.0.0.1:8/v1"\n'
        '[providers.official]\ntype = "openai"\n'
        '[providers.named]\ntype = "openai"\nbase_url = "http://127.0.0.1:7/v1"\napi_key_env = "WORK_KEY"\n'
    )
    custom = config.provider("custom")
    assert isinstance(custom, OpenaiChat) and custom.api_key == ""  # not OPENAI_API_KEY
    official = config.provider("official")
    assert isinstance(official, OpenaiChat)
    assert official.api_key == "sk-official-0123456789"
    assert official.base_url == "https://api.openai.com/v1"  # explicit config: OPENAI_BASE_URL is the built-in's
    named = config.provider("named")
    assert isinstance(named, OpenaiChat) and named.api_key == ""  # WORK_KEY unset: no key, not the official one
    assert config.unavailable("named") == "WORK_KEY not set"
    assert config.unavailable("custom") is None
    assert config.unavailable("openai") is None  # the built-in, from the environment
    builtin = config.provider("openai")
    assert isinstance(builtin, OpenaiChat) and builtin.base_url == "http://127.0.0.1:9/v1"


def test_unavailable_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(
        '[providers.w]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\napi_key_env = "WORK_KEY"\n'
        'default_model = "m"\n[routes.r]\nchain = ["w", "openai:gpt-4o"]\n'
        '[providers.missing]\ntype = "local"\nmodel_path = "/nonexistent/model.gguf"\n'
    )
    assert config.unavailable("openai") == "OPENAI_API_KEY not set"
    assert config.unavailable("w") == "WORK_KEY not set"
    assert config.unavailable("r") == "none of its providers is configured"
    assert config.unavailable("missing") == "no model file at /nonexistent/model.gguf"
    monkeypatch.setenv("WORK_KEY", "k" * 20)
    assert config.unavailable("w") is None and config.unavailable("r") is None


def test_route_skips_members_that_cannot_be_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        PROVIDER_TYPES, "ghost", ProviderType("polychat.providers.no_such_module:Ghost", frozenset({"type"}))
    )
    config = parse_config(
        '[providers.g]\ntype = "ghost"\n[providers.w]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'models = ["m"]\n[routes.r]\nchain = ["g:x", "w"]\n[routes.only]\nchain = ["g:x"]\n'
    )
    routed = config.route("r")
    assert routed is not None
    assert [p.name for p in routed[0].members()] == ["w"]
    with pytest.raises(ConfigError, match="route 'only': no provider of its chain is available"):
        config.route("only")
    with pytest.raises(ConfigError, match="provider 'g' \\(type 'ghost'\\) is not available"):
        config.provider("g")


def test_local_type_options(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    config = parse_config(f'[providers.tiny]\ntype = "local"\nmodel_path = "{model}"\nn_ctx = 512\n')
    assert config.specs["tiny"].options == {"model_path": str(model), "n_ctx": 512}
    assert config.redacted()["providers"]["tiny"] == {"type": "local", "model_path": str(model), "n_ctx": 512}
    assert config.unavailable("tiny") in (None, "llama-cpp-python is not installed")


def test_redacted_hides_keys_and_proxy_passwords(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[defaults]\nproxy = { https = "http://u:hunter2pw@127.0.0.1:3128", no_proxy = "localhost" }\n'
        '[providers.p]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1?key=querysecret"\n'
        'api_key = "sk-plaintext-0123456789"\nallow_plaintext_key = true\n'
        'proxy = "socks5://bob:p%40ss%3Aw@127.0.0.1:1080"\n',
    )
    with caplog.at_level(logging.WARNING, logger="polychat"):
        config = load_config(path)
    assert not caplog.records  # 0600: no warning about readable keys
    data = config.redacted()
    text = repr(data)
    for secret in ("hunter2pw", "sk-plaintext-0123456789", "p%40ss%3Aw", "p@ss:w", "querysecret"):
        assert secret not in text
    assert data["defaults"]["proxy"] == {"https": "http://u:***@127.0.0.1:3128", "no_proxy": "localhost"}
    assert data["providers"]["p"]["api_key"] == "***"
    assert data["providers"]["p"]["proxy"] == "socks5://bob:***@127.0.0.1:1080"
    assert data["providers"]["p"]["base_url"] == "http://127.0.0.1:1/v1?key=***"
    secrets = config.secrets()
    for secret in ("hunter2pw", "sk-plaintext-0123456789", "p%40ss%3Aw", "p@ss:w"):
        assert secret in secrets


def test_plaintext_key_in_a_readable_file_warns(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.p]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'api_key = "sk-plaintext-0123456789"\nallow_plaintext_key = true\n',
    )
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="polychat"):
        load_config(path)
    assert "others can read it; run: chmod 600" in caplog.text
    assert "sk-plaintext" not in caplog.text


def test_failover_settings_reach_routes_and_client() -> None:
    config = parse_config(
        "[defaults]\nidle_timeout = 5\nresume = true\n"
        '[providers.w]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\ndefault_model = "m"\n'
        '[routes.r]\nchain = ["w"]\nhedge_after = 1.5\nfirst_token_timeout = 3\n'
    )
    assert config.client_kwargs() == {"idle_timeout": 5.0, "resume": True}
    routed = config.route("r")
    assert routed is not None
    assert config.redacted()["routes"]["r"] == {
        "chain": ["w"],
        "shuffle": False,
        "hedge_after": 1.5,
        "first_token_timeout": 3.0,
    }


# -- each kind of bad file -------------------------------------------------------------------------------------

BAD = [
    # (file text, line, dotted key, message fragment)
    ("[defaults]\nmodle = 'x'\n", 2, "defaults.modle", "unknown key; did you mean 'model'?"),
    ("[defualts]\nmodel = 'x'\n", 1, "defualts", "unknown key; did you mean 'defaults'?"),
    ("[defaults]\ntimeout = 'slow'\n", 2, "defaults.timeout", "must be a positive number of seconds"),
    ("[defaults]\ntimeout = 0\n", 2, "defaults.timeout", "must be a positive number of seconds, got 0"),
    ("[defaults]\nmax_retries = -1\n", 2, "defaults.max_retries", "must be a whole number >= 0"),
    ("[defaults]\nmax_retries = true\n", 2, "defaults.max_retries", "must be a whole number >= 0"),
    ("[defaults]\nresume = 1\n", 2, "defaults.resume", "must be true or false"),
    ("[defaults]\nproxy = 'ftp://h:1'\n", 2, "defaults.proxy", "proxy scheme 'ftp'"),
    ("[defaults]\nproxy = true\n", 2, "defaults.proxy", "must be a proxy URL, a table"),
    ("[defaults]\nproxy = { htp = 'http://h:1' }\n", 2, "defaults.proxy", "unknown key(s) 'htp'"),
    ("[defaults]\nprovider = 'nope'\n", 2, "defaults.provider", "'nope' is neither a provider nor a route"),
    ("defaults = 3\n", 1, "defaults", "must be a table"),
    ("[providers.w]\nbase_url = 'http://h/v1'\n", 1, "providers.w", "missing key 'type'"),
    (
        "[providers.w]\ntype = 'openia'\n",
        2,
        "providers.w.type",
        "unknown provider type 'openia'; did you mean 'openai'?",
    ),
    ("[providers.w]\ntype = 'openai'\nbse_url = 'x'\n", 3, "providers.w.bse_url", "did you mean 'base_url'?"),
    ("[providers.w]\ntype = 'openai'\nbase_url = 'ftp://h'\n", 3, "providers.w.base_url", "http:// or https:// URL"),
    ("[providers.w]\ntype = 'openai'\nmodels = 'm'\n", 3, "providers.w.models", "must be a list of non-empty strings"),
    ("[providers.w]\ntype = 'openai'\ntimeout = -3\n", 3, "providers.w.timeout", "positive number of seconds"),
    ("[providers.w]\ntype = 'local'\nbase_url = 'http://h'\n", 3, "providers.w.base_url", "not used by providers"),
    ("[providers.w]\ntype = 'local'\nn_ctx = 0\n", 3, "providers.w.n_ctx", "must be a whole number >= 1"),
    (
        "[providers.w]\ntype = 'openai'\napi_key = 'sk-live-abcdef'\n",
        3,
        "providers.w.api_key",
        'refused: put it in an environment variable and write api_key_env = "W_API_KEY"',
    ),
    (
        "[providers.w]\ntype = 'openai'\napi_key_env = 'sk-live-abcdef'\n",
        3,
        "providers.w.api_key_env",
        "must be the NAME of an environment variable",
    ),
    (
        "[providers.w]\ntype = 'openai'\napi_key_env = 'K'\napi_key = 'x'\nallow_plaintext_key = true\n",
        4,
        "providers.w.api_key",
        "either api_key_env or api_key",
    ),
    ('[providers."my work"]\ntype = "openai"\n', 1, 'providers."my work"', "may use only letters, digits"),
    ("[providers]\nw = { type = 'openai', bse_url = 'x' }\n", 2, "providers.w.bse_url", "did you mean 'base_url'?"),
    ("[routes.r]\nchain = ['wrok:m']\n", 2, "routes.r.chain", "names provider 'wrok', which is not declared"),
    ("[routes.r]\nchian = ['local']\n", 2, "routes.r.chian", "unknown key; did you mean 'chain'?"),
    ("[routes.r]\nshuffle = true\n", 1, "routes.r", "missing key 'chain'"),
    ("[routes.r]\nchain = []\n", 2, "routes.r.chain", "must name at least one provider"),
    (
        "[providers.w]\ntype = 'openai'\nbase_url = 'http://127.0.0.1:1/v1'\n[routes.r]\nchain = ['w']\n",
        5,
        "routes.r.chain",
        "provider 'w' has no default model",
    ),
    ("[routes.local]\nchain = ['openai:m']\n", 1, "routes.local", "may not have the name of provider 'local'"),
    ("[routes.r]\nchain = ['local']\nhedge_after = 'soon'\n", 3, "routes.r.hedge_after", "positive number"),
]


@pytest.mark.parametrize(("text", "line", "key", "fragment"), BAD, ids=[b[2] + ":" + b[3][:20] for b in BAD])
def test_bad_file(tmp_path: Path, text: str, line: int, key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    err = info.value
    assert (err.path, err.line, err.key) == (str(path), line, key)
    assert str(err).startswith(f"{path}:{line}: {key}: ")
    assert fragment in str(err)
    assert "sk-live-abcdef" not in str(err)


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[defaults]\nmodel = "fast"\ntimeout = \n')
    with pytest.raises(ConfigFileError, match=rf"^{path}:3: not valid TOML: Invalid value \(column 11\)$"):
        load_config(path)
    path = write(tmp_path, "[a]\nx = 1\n[a]\n", "dup.toml")
    with pytest.raises(ConfigFileError, match=rf"^{path}:3: not valid TOML: Cannot declare"):
        load_config(path)


def test_find_line_forms() -> None:
    text = (
        "# comment [providers.w]\n"
        "[providers.'w']\n"
        'type = "openai"\n'
        "  \"base_url\" = 'x'\n"
        "[routes]\n"
        "fast.chain = ['a']\n"
        "slow = { chain = ['b'], shuffle = true }\n"
    )
    assert find_line(text, ("providers", "w")) == 2
    assert find_line(text, ("providers", "w", "base_url")) == 4
    assert find_line(text, ("routes", "fast", "chain")) == 6
    assert find_line(text, ("routes", "slow", "shuffle")) == 7
    assert find_line(text, ("nowhere", "x")) is None


def test_empty_config_object() -> None:
    config = Config({})
    assert config.redacted() == {}
    assert config.names()[:3] == ["openai", "anthropic", "gemini"] and config.names()[-1] == "local"
    assert config.listed_names() == ["openai", "anthropic", "gemini", "local"]  # presets show once their key is set


# -- PinnedModel -------------------------------------------------------------------------------------------------


class Recorder(Provider):
    """A real provider that answers with the model it was asked for, and remembers each request."""

    capabilities = Capabilities(tools=True, prefill=True)
    first_token_timeout = 7.0

    def __init__(self) -> None:
        super().__init__(name="rec", default_model="rec-default")
        self.seen: list[str] = []
        self.closed = False

    def complete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        self.seen.append(request.model)
        return ChatCompletion(model=request.model)

    def stream(self, request: ChatRequest, ctx: CallContext) -> Iterator[ChatCompletionChunk]:
        self.seen.append(request.model)
        try:
            for _ in range(3):
                yield ChatCompletionChunk(model=request.model, choices=[StreamChoice(delta=ChoiceDelta(content="x"))])
        finally:
            self.closed = True

    async def acomplete(self, request: ChatRequest, ctx: CallContext) -> ChatCompletion:
        return self.complete(request, ctx)

    async def astream(self, request: ChatRequest, ctx: CallContext) -> AsyncIterator[ChatCompletionChunk]:
        for chunk in self.stream(request, ctx):
            yield chunk

    def list_models(self, ctx: CallContext) -> list[Model]:
        return [Model(id="rec-default")]


def _ctx() -> CallContext:
    return CallContext(pool=TransportPool())


def test_pinned_model_replaces_the_model_everywhere() -> None:
    inner = Recorder()
    pinned = PinnedModel(inner, "gpt-4o-mini")
    request = ChatRequest(model="fast", messages=[{"role": "user", "content": "hi"}])
    assert pinned.complete(request, _ctx()).model == "gpt-4o-mini"
    chunks = pinned.stream(request, _ctx())
    assert next(chunks).model == "gpt-4o-mini"
    chunks.close()  # type: ignore[attr-defined]
    assert inner.closed  # closing the pinned stream closes the inner one at once
    assert request.model == "fast"  # the caller's request is untouched
    assert inner.seen == ["gpt-4o-mini", "gpt-4o-mini"]
    assert pinned.list_models(_ctx())[0].id == "rec-default"
    assert pinned.name == "rec" and pinned.members() == [inner]
    assert pinned.capabilities is inner.capabilities
    assert pinned.default_model == "gpt-4o-mini"
    assert pinned.first_token_timeout == 7.0  # per-provider settings read through
    assert pinned.breaker_key == inner.breaker_key
    default = PinnedModel(inner, "")
    assert default.default_model == "rec-default"
    assert default.complete(request, _ctx()).model == ""  # empty: the inner provider's default model


@pytest.mark.anyio
async def test_pinned_model_async() -> None:
    inner = Recorder()
    pinned = PinnedModel(inner, "m1")
    request = ChatRequest(model="alias", messages=[{"role": "user", "content": "hi"}])
    assert (await pinned.acomplete(request, _ctx())).model == "m1"
    models = [c.model async for c in pinned.astream(request, _ctx())]
    assert models == ["m1", "m1", "m1"]
    assert (await pinned.alist_models(_ctx()))[0].id == "rec-default"


def test_pinned_route_through_a_client() -> None:
    from polychat.client import Client

    inner = Recorder()
    chain = RetryProvider([PinnedModel(inner, "real-model")], name="alias")
    with Client() as client:
        stream = client.chat.completions.create(
            model="alias", messages=[{"role": "user", "content": "hi"}], stream=True, provider=chain
        )
        assert [c.model for c in stream] == ["real-model"] * 3


def test_server_table_is_checked_and_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_KEYS", "gw-key-one,gw-key-two")
    config = parse_config(
        '[server]\napi_keys_env = "GW_KEYS"\ncors_origins = ["https://app.example"]\nmax_body_bytes = 1024\n'
    )
    assert config.server == {"api_keys_env": "GW_KEYS", "cors_origins": ["https://app.example"], "max_body_bytes": 1024}
    assert {"gw-key-one", "gw-key-two"} <= set(config.secrets())
    with pytest.raises(ConfigError, match="gateway keys in the config file are refused"):
        parse_config('[server]\napi_keys = ["k1"]\n')
    shown = parse_config('[server]\napi_keys = ["plain-key-1"]\nallow_plaintext_key = true\n').redacted()
    assert "plain-key-1" not in repr(shown)
    with pytest.raises(ConfigError, match=r"server\.port"):
        parse_config("[server]\nport = 1\n")
