#!/usr/bin/env python3
"""Generate polychat's sync I/O shells from the async ones, as httpcore does with its own ``scripts/unasync.py``.

Every module in ``src/polychat/_async/`` is a source; ``src/polychat/_sync/`` holds the same module with ``await``
dropped, ``async def`` / ``async for`` / ``async with`` made plain, and each async name in :data:`NAMES` swapped
for its sync twin, then import-sorted and formatted by the project's ruff. The generated files are committed, so a
reader (and mypy) sees real code; ``--check`` fails when one of them differs from what its source generates. It
runs in ``.ci/run`` and in ``tests/test_unasync.py``, so the sync and async paths cannot drift apart.

    python scripts/unasync.py          # rewrite src/polychat/_sync/ from src/polychat/_async/
    python scripts/unasync.py --check  # exit 1, showing the difference, when a generated file is stale
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "polychat" / "_async"
TARGET = ROOT / "src" / "polychat" / "_sync"

#: Async name -> its sync twin, replaced as whole identifiers (also in strings, comments and docstrings). The same
#: table drives tests/test_unasync.py's check of the sync/async pairs that live side by side (Stream / AsyncStream).
NAMES = {
    "_async": "_sync",
    "_async_events": "_sync_events",
    "_async_failover": "_sync_failover",
    "_async_http": "_sync_http",
    "AsyncAttempt": "SyncAttempt",
    "AsyncChat": "Chat",
    "AsyncClient": "Client",
    "AsyncCompletions": "Completions",
    "AsyncIterator": "Iterator",
    "AsyncModels": "Models",
    "AsyncResponse": "SyncResponse",
    "AsyncResponses": "Responses",
    "AsyncStream": "Stream",
    "AsyncTransport": "SyncTransport",
    "StopAsyncIteration": "StopIteration",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "aclose": "close",
    "acomplete": "complete",
    "aiter_bytes": "iter_bytes",
    "alist_models": "list_models",
    "anext": "next",
    "arace_complete": "race_complete",
    "arace_open": "race_open",
    "aread": "read",
    "asleep": "sleep",
    "astream": "stream",
    "async_transport": "sync_transport",
}

_KEYWORDS = [
    (re.compile(r"\basync def\b"), "def"),
    (re.compile(r"\basync (for|with)\b"), r"\1"),
    (re.compile(r"\bawait "), ""),
]
_NAME = re.compile(r"\b(" + "|".join(sorted(map(re.escape, NAMES), key=len, reverse=True)) + r")\b")


def header(source: Path) -> str:
    rel = _rel(source)
    return (
        f"# Generated from {rel} by scripts/unasync.py: do not edit.\n"
        "# Edit the async source, then run `python scripts/unasync.py` (tests/test_unasync.py fails until then).\n"
    )


def unasync(text: str) -> str:
    """The sync twin of async source ``text`` (before formatting)."""
    for pattern, repl in _KEYWORDS:
        text = pattern.sub(repl, text)
    return _NAME.sub(lambda m: NAMES[m.group(1)], text)


def _ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        raise SystemExit("unasync: ruff not found (run scripts/setup.sh --test, then use .venv/bin/python)")
    return found


def _ruff_pipe(args: list[str], text: str, target: Path) -> str:
    done = subprocess.run(
        [_ruff(), *args, "--stdin-filename", str(target), "-"],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"unasync: ruff {args[0]} failed on {target.name}:\n{done.stderr}")
    return done.stdout


def generate(source: Path) -> tuple[Path, str]:
    """The generated file's path and its text: renamed, imports sorted and pruned, formatted as ruff does."""
    target = TARGET / source.relative_to(SOURCE)
    text = header(source) + unasync(source.read_text())
    # Renaming can leave an import unused (AsyncIterator and Iterator both present) or out of order.
    text = _ruff_pipe(["check", "--fix-only", "--select", "I,F401", "--quiet"], text, target)
    return target, _ruff_pipe(["format", "--quiet"], text, target)


def _rel(path: Path) -> str:
    return Path(os.path.relpath(path, ROOT)).as_posix()


def sources() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*.py") if p.name != "__init__.py")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated file is stale")
    args = ap.parse_args(argv)
    stale = []
    for source in sources():
        target, text = generate(source)
        current = target.read_text() if target.exists() else ""
        if current == text:
            continue
        stale.append(target)
        rel = _rel(target)
        if args.check:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{rel} (committed)",
                f"{rel} (generated)",
            )
            sys.stdout.writelines(diff)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"unasync: wrote {rel}")
    expected = {TARGET / s.relative_to(SOURCE) for s in sources()} | {TARGET / "__init__.py"}
    orphans = sorted(p for p in TARGET.rglob("*.py") if p not in expected)
    for orphan in orphans:
        print(f"unasync: {_rel(orphan)} has no async source; delete it")
    if args.check and (stale or orphans):
        print(
            f"unasync: {len(stale) + len(orphans)} generated file(s) out of date; run `python scripts/unasync.py`",
            file=sys.stderr,
        )
        return 1
    return 1 if orphans else 0


if __name__ == "__main__":
    sys.exit(main())
