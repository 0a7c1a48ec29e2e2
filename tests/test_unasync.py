"""The sync I/O shells are generated from the async ones (scripts/unasync.py); these tests keep them in step."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "unasync.py"


@pytest.fixture(scope="module")
def unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_sync_shells_are_what_the_async_sources_generate() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_async_source_has_its_generated_twin(unasync: ModuleType) -> None:
    sources = unasync.sources()
    assert {p.name for p in sources} >= {"failover.py", "http.py"}
    for source in sources:
        twin = unasync.TARGET / source.relative_to(unasync.SOURCE)
        assert twin.read_text().startswith(f"# Generated from {source.relative_to(ROOT).as_posix()}")


def test_check_fails_and_shows_the_difference_when_a_generated_file_was_edited(
    unasync: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "_sync"
    target.mkdir()
    for source in unasync.sources():
        text = (unasync.TARGET / source.relative_to(unasync.SOURCE)).read_text()
        (target / source.name).write_text(text.replace("plan.succeeded(", "plan.failed(", 1))
    (target / "__init__.py").write_text("")
    monkeypatch.setattr(unasync, "TARGET", target)
    assert unasync.main(["--check"]) == 1
    out = capsys.readouterr()
    assert "-        plan.failed(" in out.out and "+        plan.succeeded(" in out.out
    assert "out of date" in out.err


def test_the_generated_code_has_no_async_left(unasync: ModuleType) -> None:
    for source in unasync.sources():
        path = unasync.TARGET / source.relative_to(unasync.SOURCE)
        code = path.read_text().split("\n", 2)[2]  # below the header, which names the async source
        for word in ("async ", "await ", "AsyncIterator", "asyncio"):
            assert word not in code, f"{path.name} still says {word!r}"
