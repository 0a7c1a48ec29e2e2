"""``polychat`` as a person uses it (issue 13): no silent model substitution, errors in one line in the command's
words, piped input, the length cap and the whole-call timeout, global options, providers and config show, and the
interactive session (context trimming, bracketed paste, the status line) in a real pseudo-terminal.

Same harness as ``test_cli.py``: a real subprocess in a clean environment whose proxy variables point at a dead
port; upstreams are the fault-injecting server (to see exactly what was sent) and the embedded model.
"""

# The fixtures of test_cli.py are imported and then used as test arguments of the same name: F811 by design.
# ruff: noqa: F811

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support.faults import FaultServer, Ok, Stall, Status
from tests.test_cli import (  # noqa: F401  (fixtures, used by name)
    LOCAL_AVAILABLE,
    Terminal,
    dead_proxy,
    env,
    fault_server,
    footer_line,
    needs_local,
    open_terminal,
    polychat,
    terminal,
    write_config,
)

SECRET = "sk-wrong-0123456789abcdef"


def direct(env: dict[str, str]) -> dict[str, str]:
    """The environment without its (dead) proxy variables."""
    return {k: v for k, v in env.items() if "proxy" not in k.lower()}


def fault_config(tmp_path: Path, fault: FaultServer, extra: str = "") -> Path:
    return write_config(
        tmp_path,
        f'[providers.work]\ntype = "openai"\nbase_url = "{fault.url}/s/work/v1"\nproxy = false\n'
        f'models = ["work-model"]\n' + extra,
    )


# -- never a different model without saying so ---------------------------------------------------------------------


def test_a_wrong_key_is_reported_in_one_line_not_answered_by_another_model(
    env: dict[str, str], fault_server: FaultServer
) -> None:
    base = fault_server.scenario("openai", Status(401, message="Incorrect API key provided"))
    wrong = {**direct(env), "OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": base}
    result = polychat(wrong, "chat", "What is the capital of France?")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr  # one line, once
    assert result.stderr.startswith("polychat: error: OpenaiChat rejected the API key (401)")
    assert "Local" not in result.stderr and SECRET not in result.stderr
    # the default chain asked OpenAI for its default model, the same one `-p openai` asks for
    assert fault_server.requests("openai")[-1].body["model"] == "gpt-4o-mini"
    polychat(wrong, "chat", "-p", "openai", "hi")
    assert fault_server.requests("openai")[-1].body["model"] == "gpt-4o-mini"


@needs_local
def test_substitution_is_what_the_config_asks_for(
    env: dict[str, str], tmp_path: Path, fault_server: FaultServer
) -> None:
    base = fault_server.scenario("openai", Status(401, message="Incorrect API key provided"))
    wrong = {**direct(env), "OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": base}
    path = write_config(tmp_path, '[defaults]\nfallback = "local"\n')
    result = polychat(wrong, "chat", "--config", str(path), "Say hi.", "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert footer_line(result.stderr).startswith("[Local · smollm2-135m · ")
    # ...and the person still learns that their first provider refused the key, once
    assert result.stderr.count("OpenaiChat failed (AuthenticationError") == 1, result.stderr
    assert SECRET not in result.stderr


@needs_local
def test_an_unknown_model_is_a_usage_error_and_no_model_answers_offline(env: dict[str, str]) -> None:
    result = polychat(env, "chat", "-m", "gpt-4o-mini", "hi")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("polychat: error: no configured provider serves the model 'gpt-4o-mini' (Local ")
    assert "the embedded model serves only 'smollm2-135m'" in result.stderr and "polychat providers" in result.stderr
    offline = polychat(env, "chat", "hi", "--max-tokens", "4")
    assert offline.returncode == 0, offline.stderr
    assert footer_line(offline.stderr).startswith("[Local · smollm2-135m · ")


# -- options, input, limits ---------------------------------------------------------------------------------------


def test_global_options_work_before_the_command(env: dict[str, str], tmp_path: Path, fault_server: FaultServer) -> None:
    fault_server.scenario("work", Ok(text="from work"))
    path = fault_config(tmp_path, fault_server)
    result = polychat(env, "--config", str(path), "chat", "-p", "work", "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from work\n"
    shown = polychat(env, "--config", str(path), "config", "show")
    assert f"# polychat config: {path}" in shown.stdout
    after = polychat(env, "chat", "-p", "work", "hi", "--config", str(path))
    assert after.returncode == 0 and after.stdout == "from work\n"


def test_piped_text_follows_the_prompt_and_the_answer_is_capped(
    env: dict[str, str], tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.scenario("work", Ok(text="summary"))
    path = fault_config(tmp_path, fault_server)
    result = polychat(env, "chat", "--config", str(path), "-p", "work", "Summarise:", input="line one\nline two\n")
    assert result.returncode == 0, result.stderr
    body = fault_server.requests("work")[-1].body
    assert body["messages"] == [{"role": "user", "content": "Summarise:\n\nline one\nline two"}]
    assert body["max_tokens"] == 512  # a person is waiting: the default cap
    dash = polychat(env, "chat", "--config", str(path), "-p", "work", "-", input="only this\n")
    assert dash.returncode == 0, dash.stderr
    assert fault_server.requests("work")[-1].body["messages"][-1]["content"] == "only this"
    for lifted in ("0", "none"):
        polychat(env, "chat", "--config", str(path), "-p", "work", "--max-tokens", lifted, "hi")
        assert "max_tokens" not in fault_server.requests("work")[-1].body
    polychat(env, "chat", "--config", str(path), "-p", "work", "--max-tokens", "7", "hi")
    assert fault_server.requests("work")[-1].body["max_tokens"] == 7


def test_timeout_bounds_the_whole_answer(env: dict[str, str], tmp_path: Path, fault_server: FaultServer) -> None:
    # bytes keep flowing (keep-alive comments, one chunk) but the answer never ends: no single read times out
    fault_server.scenario("work", Stall(after_chunks=1, keepalive=0.2))
    path = fault_config(tmp_path, fault_server)
    result = polychat(env, "chat", "--config", str(path), "-p", "work", "--timeout", "2", "hi", timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("polychat: error: no complete answer within --timeout 2s (from work"), result.stderr
    assert result.stderr.count("\n") == 1


def test_option_mistakes_speak_in_options(env: dict[str, str]) -> None:
    for args, needle in (
        (["--timeout", "0"], "--timeout: must be a number of seconds above 0"),
        (["--timeout", "soon"], "--timeout: expected a number of seconds"),
        (["--max-tokens", "-3"], "--max-tokens: must be 0 (no limit) or more"),
        (["--max-tokens", "lots"], "--max-tokens: expected a whole number of tokens"),
    ):
        result = polychat(env, "chat", *args, "hi")
        assert result.returncode == 2, (args, result.stderr)
        assert needle in result.stderr, (args, result.stderr)
        assert "httpx" not in result.stderr and "Local(" not in result.stderr


def test_a_dead_proxy_from_the_environment_is_named(
    env: dict[str, str], dead_proxy: str, fault_server: FaultServer
) -> None:
    base = fault_server.scenario("openai", Ok())
    result = polychat({**env, "OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": base}, "chat", "hi", "--timeout", "60")
    assert result.returncode == 1
    assert f"via proxy {dead_proxy} (from HTTPS_PROXY)" in result.stderr or f"via proxy {dead_proxy} (from" in (
        result.stderr
    ), result.stderr
    assert result.stderr.count("polychat: error:") == 1


# -- providers and config show --------------------------------------------------------------------------------------


def test_providers_shows_what_chat_would_try(env: dict[str, str]) -> None:
    keyed = {**env, "ANTHROPIC_API_KEY": "ak-0123456789", "GEMINI_API_KEY": "gk-0123456789", "GROQ_API_KEY": "q-1"}
    rows = {r["name"]: r for r in json.loads(polychat(keyed, "providers", "--json").stdout)}
    assert rows["anthropic"]["configured"] and rows["gemini"]["configured"] and rows["groq"]["configured"]
    assert rows["anthropic"]["builtin"] and "claude" in rows["anthropic"]["models"][0]
    assert "mistral" not in rows  # presets without a key are not listed
    plain = {r["name"]: r for r in json.loads(polychat(env, "providers", "--json").stdout)}
    assert plain["anthropic"]["reason"] == "ANTHROPIC_API_KEY not set"
    assert plain["gemini"]["reason"] == "GEMINI_API_KEY or GOOGLE_API_KEY not set"
    shown = polychat(keyed, "config", "show").stdout
    assert re.search(r"# default chain +Anthropic → Gemini → Groq  \(providers whose keys are set", shown), shown
    # -p anthropic goes to Anthropic (here: a dead base URL, reported as such, naming it)
    dead = {**direct(keyed), "ANTHROPIC_BASE_URL": "http://127.0.0.1:9"}
    result = polychat(dead, "chat", "-p", "anthropic", "hi")
    assert result.returncode == 1 and "Anthropic" in result.stderr and "127.0.0.1:9" in result.stderr


def test_config_show_without_a_file_gives_the_effective_defaults(env: dict[str, str]) -> None:
    result = polychat(env, "config", "show")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"# no config file at {env['XDG_CONFIG_HOME']}/polychat/config.toml: built-in defaults" in out
    for pattern in (
        r"# model +each provider's default model  \(built in\)",
        r"# default chain +Local  \(no key set: offline; see: polychat providers\)",
        r"# timeout +600s per read, 5s to connect  \(built in\)",
        r"# chat --max-tokens +512  \(built in; 0 or none: no limit\)",
    ):
        assert re.search(pattern, out), (pattern, out)


def test_config_show_with_a_default_provider_does_not_show_the_default_chain(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[routes.fast]\nchain = ["local"]\n\n[defaults]\nprovider = "fast"\n')
    result = polychat(env, "config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert re.search(r"# provider +fast  \(from config.toml; --provider overrides it\)", result.stdout), result.stdout
    assert "default chain" not in result.stdout  # a chat without --provider never uses it


def test_providers_check_reports_a_failing_primary_of_a_route(
    env: dict[str, str], tmp_path: Path, fault_server: FaultServer
) -> None:
    fault_server.scenario("work", Ok(text="OK"))
    denied = fault_server.scenario("denied", Status(401, message="bad key"))
    path = fault_config(
        tmp_path,
        fault_server,
        f'[providers.primary]\ntype = "openai"\nbase_url = "{denied}"\nproxy = false\ndefault_model = "p"\n'
        '[routes.r]\nchain = ["primary", "work:work-model"]\n',
    )
    result = polychat(env, "providers", "--check", "--json", "--config", str(path))
    assert result.returncode == 1
    checks = {row["name"]: row["check"] for row in json.loads(result.stdout)}
    assert checks["work"]["ok"] is True
    assert checks["r"]["ok"] is False and checks["r"]["error"].startswith("primary: ")
    probe = fault_server.requests("work")[-1].body
    assert probe["max_tokens"] == 1  # the one-token request the help describes


# -- the interactive session --------------------------------------------------------------------------------------


def test_a_bracketed_paste_is_one_message(
    env: dict[str, str], tmp_path: Path, fault_server: FaultServer, terminal: list[Terminal]
) -> None:
    fault_server.scenario("work", Ok(text="got it"))
    path = fault_config(tmp_path, fault_server)
    t = open_terminal(terminal, env, "chat", "--config", str(path), "-p", "work")
    t.expect("> ")
    t.send("\x1b[200~first line\nsecond line\nthird line\x1b[201~\r")
    t.expect("[work · ")
    t.expect("> ")
    t.send("\x04")
    assert t.wait() == 0
    sent = [r.body["messages"] for r in fault_server.requests("work")]
    assert sent == [[{"role": "user", "content": "first line\nsecond line\nthird line"}]]


@needs_local
def test_the_session_drops_the_oldest_turns_when_the_context_is_full(
    env: dict[str, str], tmp_path: Path, terminal: list[Terminal]
) -> None:
    path = write_config(tmp_path, '[providers.tiny]\ntype = "local"\nn_ctx = 160\n')
    t = open_terminal(terminal, env, "chat", "--config", str(path), "-p", "tiny", "--max-tokens", "4")
    t.expect("> ")
    long = " ".join(["apple"] * 60)
    t.send(long + "\r")
    # the status line says what the wait is: the model reading the prompt
    t.expect("reading the prompt (tiny)")
    t.expect("[tiny · ")
    t.expect("> ")
    t.send(long + "\r")
    t.expect("dropped the oldest turn")
    t.expect("[tiny · ")
    t.expect("> ")
    t.send("\x04")
    assert t.wait() == 0
    assert "polychat: error" not in t.output
