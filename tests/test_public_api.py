"""The public surface: every advertised name resolves, imports stay lazy, and type checkers see the exports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polychat


def test_every_public_name_resolves() -> None:
    for name in polychat.__all__:
        assert getattr(polychat, name) is not None, name
    import polychat.Provider as seed_style

    for name in seed_style.__all__:
        assert getattr(seed_style, name) is not None, name


def test_every_exception_class_is_exported_at_the_top() -> None:
    # The README lists the whole tree under `from polychat import ...`; a class added to errors must be there too.
    from polychat import errors

    classes = [
        n
        for n in errors.__all__
        if isinstance(getattr(errors, n), type) and issubclass(getattr(errors, n), BaseException)
    ]
    assert "UnsupportedParameterError" in classes
    for name in classes:
        assert name in polychat.__all__, name
        assert getattr(polychat, name) is getattr(errors, name), name
    from polychat import UnsupportedParameterError

    assert issubclass(UnsupportedParameterError, polychat.BadRequestError)


def test_import_polychat_loads_no_transport_or_model() -> None:
    code = (
        "import sys, polychat\n"
        "heavy = [m for m in ('httpx', 'msgspec', 'llama_cpp', 'starlette', 'uvicorn', 'asyncio', 'aiohttp')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_sync_client_does_not_load_asyncio_or_llama() -> None:
    code = (
        "import sys\nfrom polychat import Client\nfrom polychat.Provider import OpenaiChat, RetryProvider\n"
        "Client(provider=RetryProvider([OpenaiChat], single_provider_retry=True, max_retries=5))\n"
        "print(','.join(m for m in ('llama_cpp', 'starlette', 'aiohttp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_mypy_strict_sees_the_exports(tmp_path: Path) -> None:
    snippet = tmp_path / "user_code.py"
    snippet.write_text(
        "from polychat import AsyncClient, Client, APIError, RetryProvider, ChatCompletion\n"
        "from polychat.client import Client as SeedClient\n"
        "from polychat.Provider import OpenaiChat\n"
        "client: Client = Client(provider=OpenaiChat)\n"
        "def show(r: ChatCompletion) -> str:\n"
        "    return r.choices[0].message.content or ''\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--ignore-missing-imports", str(snippet)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
