"""Sync and async cannot drift: the generated sync shells match their async sources, and the twins written side by
side (Stream / AsyncStream, complete / acomplete...) differ only by what scripts/unasync.py renames."""

from __future__ import annotations

import ast
import asyncio
import difflib
import importlib
import importlib.util
import inspect
import itertools
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from polychat import AsyncClient, Client
from polychat.providers import OpenaiChat
from tests.support.faults import FILLER, FaultServer, Stall

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "unasync.py"
MSGS = [{"role": "user", "content": "Hi"}]


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


# -- the pairs that live side by side: identical but for await, checked on the syntax tree ------------------------

#: Sync / async twins written by hand next to each other (too small, or too entangled with shared code, to be a
#: generated module of their own): after the generator's renaming, the async one must be the sync one, statement
#: for statement (docstrings and comments aside).
CLASS_PAIRS = [
    ("polychat._streams", "Stream", "AsyncStream"),
    ("polychat.client", "Completions", "AsyncCompletions"),
    ("polychat.client", "Chat", "AsyncChat"),
    ("polychat.client", "Models", "AsyncModels"),
    ("polychat.client", "Client", "AsyncClient"),
    ("polychat._responses", "Responses", "AsyncResponses"),
    ("polychat._responses", "_sync_events", "_async_events"),
]
#: Classes with both flavours as methods (``complete`` / ``acomplete``...): each async method against its twin.
MIXED = [
    ("polychat.routing.retry", "RetryProvider"),
    ("polychat.providers.http", "HTTPProvider"),
    ("polychat.routing.pinned", "PinnedModel"),
]
#: What one flavour has and the other cannot, and why.
UNPAIRED = {
    "Stream.__del__": "a dropped sync stream closes its connection; nothing can be awaited in __del__",
    "AsyncStream.__del__": "a dropped async stream can only end its record",
    "AsyncStream.close": "the openai package's name for aclose()",
    "HTTPProvider._asend": "Anthropic's token count, an async-only gateway endpoint, sends its own request",
}
#: Not mirrors but two mechanisms (so not diffed): a sync attempt's deadlines are fired by a watchdog thread that
#: shuts the socket down, an async attempt's by asyncio deadlines (routing/attempt.py: SyncAttempt, AsyncAttempt).


def _normalised(source: str, rename: ModuleType | None = None) -> str:
    """``source`` without docstrings, comments or the :data:`UNPAIRED` members, as ``ast.unparse`` writes it;
    with ``rename`` (the generator), renamed as the generator renames an async source."""
    body = ast.parse(textwrap.dedent(source)).body
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        inner = getattr(node, "body", None)
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or not inner:
            continue
        first = inner[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            inner.pop(0)
        if isinstance(node, ast.ClassDef):
            kept = [n for n in node.body if f"{node.name}.{getattr(n, 'name', '')}" not in UNPAIRED]
            node.body = kept or [ast.Pass()]
    text = ast.unparse(ast.Module(body=body, type_ignores=[]))
    return ast.unparse(ast.parse(rename.unasync(text))) if rename is not None else text


def _source(module: str, qualname: str) -> str:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return inspect.getsource(obj)


def _differ(sync_src: str, async_src: str, unasync: ModuleType) -> str:
    """ "" when the async source, renamed, is the sync source; else a diff of the two (normalised) sources."""
    want, got = _normalised(sync_src).splitlines(), _normalised(async_src, unasync).splitlines()
    return "\n".join(difflib.unified_diff(want, got, "sync", "async, renamed", lineterm="")) if want != got else ""


@pytest.mark.parametrize(("module", "sync", "async_"), CLASS_PAIRS, ids=[p[1] for p in CLASS_PAIRS])
def test_hand_written_twins_differ_only_by_await(unasync: ModuleType, module: str, sync: str, async_: str) -> None:
    diff = _differ(_source(module, sync), _source(module, async_), unasync)
    assert not diff, f"{module}.{async_} drifted from {sync}:\n{diff}"


@pytest.mark.parametrize(("module", "cls"), MIXED, ids=[m[1] for m in MIXED])
def test_both_flavours_of_a_provider_differ_only_by_await(unasync: ModuleType, module: str, cls: str) -> None:
    klass = getattr(importlib.import_module(module), cls)
    pairs = 0
    for name, member in vars(klass).items():
        twin = unasync.unasync(name)
        if twin == name or not callable(member) or f"{cls}.{name}" in UNPAIRED:
            continue
        assert twin in vars(klass), f"{cls}.{name} has no sync twin {twin}"
        diff = _differ(_source(module, f"{cls}.{twin}"), _source(module, f"{cls}.{name}"), unasync)
        assert not diff, f"{cls}.{name} drifted from {twin}:\n{diff}"
        pairs += 1
    assert pairs >= 3


def test_the_twin_check_sees_a_drift(unasync: ModuleType) -> None:
    sync = _source("polychat._streams", "Stream")
    drifted = _source("polychat._streams", "AsyncStream").replace("self._failed(e)", "pass", 1)
    assert "-            self._failed(e)\n+            pass" in _differ(sync, drifted, unasync)


# -- what the generated code keeps: a stream is read as it arrives, in both flavours -------------------------------


def _content(chunk: Any) -> str:
    return "".join(c.delta.content or "" for c in chunk.choices)


def test_a_sync_stream_hands_over_each_chunk_as_it_arrives(faults: FaultServer) -> None:
    # The server sends two words and then holds the rest back until released: reading them must not wait for it
    # (a stream that buffered would block here until idle_timeout turned it into an error).
    url = faults.scenario("held", Stall(after_chunks=2))
    with Client(provider=OpenaiChat(base_url=url), max_retries=0, idle_timeout=60) as client:
        stream = client.chat.completions.create(model="m", messages=MSGS, stream=True)
        words = [w for w in (_content(c) for c in itertools.islice(stream, 3)) if w]
        stream.close()
    faults.release()
    assert "".join(words) == " ".join(FILLER.split()[:2])


def test_an_async_stream_hands_over_each_chunk_as_it_arrives(faults: FaultServer) -> None:
    url = faults.scenario("held", Stall(after_chunks=2))

    async def read() -> list[str]:
        async with AsyncClient(provider=OpenaiChat(base_url=url), max_retries=0, idle_timeout=60) as client:
            stream = await client.chat.completions.create(model="m", messages=MSGS, stream=True)
            words: list[str] = []
            async for chunk in stream:
                if _content(chunk):
                    words.append(_content(chunk))
                if len(words) == 2:
                    break
            await stream.aclose()
            return words

    words = asyncio.run(read())
    faults.release()
    assert "".join(words) == " ".join(FILLER.split()[:2])
