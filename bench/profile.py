"""Profile polychat's request path against the bench upstream with pyinstrument (installed in ``.venv-peers``).

Run with the project's interpreter so the profiled code is the installed polychat::

    .venv/bin/python bench/profile.py [--mode sync|async] [--stream] [--n 3000] [--raw]

``--raw`` profiles the raw-httpx baseline instead, for comparison. The report (text) goes to stdout; an HTML
report to ``bench/results/profile-<mode>-<kind>.html``. pyinstrument is found in ``bench/.venv-peers`` (appended
to ``sys.path``, so the project's own packages win).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.append(str(BENCH))
sys.path.extend(glob.glob(str(BENCH / ".venv-peers" / "lib" / "python3*" / "site-packages")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("sync", "async"), default="sync")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--raw", action="store_true", help="profile raw httpx instead of polychat")
    ap.add_argument("--interval", type=float, default=0.0001)
    args = ap.parse_args()

    import contenders
    from pyinstrument import Profiler

    up = subprocess.Popen(
        [str(BENCH / ".venv-peers" / "bin" / "python"), str(BENCH / "upstream.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert up.stdout is not None
    port = int(up.stdout.readline().split()[1])
    c = contenders.RawHttpx() if args.raw else contenders.Polychat()
    c.setup(f"http://127.0.0.1:{port}/v1")
    loop = asyncio.new_event_loop()
    try:
        # warm-up
        if args.mode == "sync":
            contenders.lat_sync(c, args.stream, 200)
        else:
            loop.run_until_complete(contenders.lat_async(c, args.stream, 200))
        prof = Profiler(interval=args.interval, async_mode="enabled")
        prof.start()
        if args.mode == "sync":
            contenders.lat_sync(c, args.stream, args.n)
        else:
            loop.run_until_complete(contenders.lat_async(c, args.stream, args.n))
        prof.stop()
        loop.run_until_complete(c.aclose())
    finally:
        loop.close()
        assert up.stdin is not None
        up.stdin.close()
        up.wait()
    print(prof.output_text(unicode=True, color=False, show_all=False))
    kind = "stream" if args.stream else "nonstream"
    out = BENCH / "results" / f"profile-{'raw-' if args.raw else ''}{args.mode}-{kind}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(prof.output_html())


if __name__ == "__main__":
    main()
