"""The async I/O shells: the source that :mod:`polychat._sync` is generated from by ``scripts/unasync.py``.

Only loops around pure code live here (the failover loop, the HTTP request/response shells), written once for
async; ``scripts/unasync.py --check`` (CI and ``tests/test_unasync.py``) keeps the sync twins identical to them.
"""
