"""``[server.keys.NAME]``, ``redis_url`` and ``redis_failure`` in the config; the gateway's reading of key tokens
from the environment; ``polychat serve`` / ``polychat keys usage`` refusing what cannot work, with a clear message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from polychat.config import parse_config
from polychat.config._types import GatewayKeySpec
from polychat.errors import ConfigError
from polychat.server._settings import KeyEnvError, ServerSettings, merge_config, named_keys
from tests.support.gateway import run_serve

KEYS = """
[server]
redis_url = "redis://:hunter2-secret@127.0.0.1:6379/0"
redis_failure = "open"

[server.keys.team-a]
key_env = "TEAM_A_KEY"
models = ["fast"]
requests_per_minute = 60
tokens_per_minute = 20000
budget_tokens = 5000000

[server.keys.ops]
key_env = "OPS_KEY"
"""


def test_keys_are_checked_typed_and_shown_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(KEYS)
    keys = config.server["keys"]
    assert keys["team-a"] == GatewayKeySpec(
        name="team-a",
        key_env="TEAM_A_KEY",
        models=("fast",),
        requests_per_minute=60,
        tokens_per_minute=20000,
        budget_tokens=5000000,
    )
    assert keys["ops"].models is None and not keys["ops"].limited
    shown = config.redacted()["server"]
    assert shown["keys"]["team-a"]["models"] == ["fast"] and "name" not in shown["keys"]["team-a"]
    assert "hunter2" not in repr(shown) and shown["redis_failure"] == "open"
    monkeypatch.setenv("TEAM_A_KEY", "tok-team-a-123456")
    assert {"tok-team-a-123456", "hunter2-secret"} <= set(config.secrets())


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[server.keys.a]\nmodels = []\n", "missing key 'key_env'"),
        ('[server.keys.a]\nkey_env = "sk-live-123 456"\n', "NAME of an environment variable"),
        (
            '[server.keys.a]\nkey_env = "A"\nrequests_per_minute = 0\n',
            "requests_per_minute: must be a whole number >= 1",
        ),
        ('[server.keys.a]\nkey_env = "A"\nbudget_tokens = "lots"\n', "budget_tokens: must be a whole number"),
        ('[server.keys.a]\nkey_env = "A"\nrpm = 5\n', "unknown key"),
        ('[server]\nredis_failure = "maybe"\n', "must be one of 'closed', 'open'"),
        ('[server]\nredis_url = "http://:pw-123456@host"\n', "must be a redis://"),
    ],
)
def test_mistakes_name_the_line_and_key(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=r":[0-9]+: server") as e:
        parse_config(text, path="gw.toml")
    assert needle in str(e.value)
    assert "pw-123456" not in str(e.value)


def test_tokens_come_from_the_environment_and_must_be_set() -> None:
    config = parse_config(KEYS)
    with pytest.raises(KeyEnvError, match=r"TEAM_A_KEY .*is not set"):
        named_keys(config, {"OPS_KEY": "ops-token-1234"})
    with pytest.raises(KeyEnvError, match="same token"):
        named_keys(config, {"OPS_KEY": "same-token-1234", "TEAM_A_KEY": "same-token-1234"})
    found = named_keys(config, {"OPS_KEY": "ops-token-1234", "TEAM_A_KEY": "a-token-1234"})
    assert {spec.name for spec in found.values()} == {"team-a", "ops"}


def test_redis_url_precedence_and_it_never_travels_in_the_settings_json() -> None:
    config = parse_config(KEYS)
    from_config = merge_config(ServerSettings(), config, {})
    assert from_config.redis_url == "redis://:hunter2-secret@127.0.0.1:6379/0"
    assert from_config.redis_failure == "open"
    from_env = merge_config(ServerSettings(), config, {"POLYCHAT_REDIS_URL": "redis://127.0.0.1:7000/1"})
    assert from_env.redis_url == "redis://127.0.0.1:7000/1"
    given = merge_config(ServerSettings(redis_url="redis://127.0.0.1:7001/0"), config, {})
    assert given.redis_url == "redis://127.0.0.1:7001/0"
    assert "hunter2" not in from_config.to_env() and "hunter2" not in repr(from_config)


def test_serve_refuses_a_key_whose_variable_is_unset_and_a_bad_redis_url(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[server.keys.team-a]\nkey_env = "TEAM_A_KEY"\n')
    result = run_serve(["--config", str(path)])
    assert result.returncode == 2
    assert "TEAM_A_KEY (its key_env) is not set" in result.stderr
    result = run_serve(["--redis-url", "http://:pw-987654@x:1"])
    assert result.returncode == 2 and "--redis-url" in result.stderr and "pw-987654" not in result.stderr
