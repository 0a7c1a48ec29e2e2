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


def test_every_exception_is_exported_from_polychat_for_runtime_and_type_checkers() -> None:
    import ast
    import inspect

    import polychat.errors

    exceptions = {
        name
        for name in polychat.errors.__all__
        if inspect.isclass(getattr(polychat.errors, name)) and issubclass(getattr(polychat.errors, name), Exception)
    }
    assert {"MissingAPIKeyError", "PluginError", "ConfigFileError", "UnsupportedParameterError"} <= exceptions
    assert exceptions <= set(polychat.__all__)
    for name in exceptions:
        assert getattr(polychat, name) is getattr(polychat.errors, name), name
    # What mypy sees (the TYPE_CHECKING imports) is what runs (the lazy table), name for name.
    tree = ast.parse(Path(polychat.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    seen = {alias.asname or alias.name for n in block.body if isinstance(n, ast.ImportFrom) for alias in n.names}
    assert seen == set(polychat.__all__) - {"__version__"}


def test_exceptions_live_in_errors_and_keep_their_old_homes() -> None:
    from polychat import errors
    from polychat.config import ConfigFileError
    from polychat.providers.openai import MissingAPIKeyError
    from polychat.providers.plugins import PluginError

    assert ConfigFileError is errors.ConfigFileError and ConfigFileError.__module__ == "polychat.errors"
    assert MissingAPIKeyError is errors.MissingAPIKeyError and PluginError is errors.PluginError
    frame = errors.error_frame({"error": {"type": "overloaded_error", "message": "busy"}}, "p")
    assert isinstance(frame, errors.InternalServerError) and frame.status_code == 529 and frame.retryable


def _imports_of(path: Path) -> set[str]:
    """The polychat modules ``path`` imports (relative imports resolved), at any level of the file."""
    import ast

    src = Path(polychat.__file__).parent
    package = ".".join(("polychat", *path.parent.relative_to(src).parts))
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            found.add(".".join([*base, *(node.module.split(".") if node.module else [])]))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("polychat")}


def test_providers_never_import_the_routing_layer() -> None:
    providers = Path(polychat.__file__).parent / "providers"
    offenders = {
        str(path.relative_to(providers)): sorted(m for m in _imports_of(path) if m.startswith("polychat.routing"))
        for path in providers.rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    # the check itself sees relative imports
    assert "polychat.providers.base" in _imports_of(providers / "http.py")
