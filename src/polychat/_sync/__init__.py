"""The sync I/O shells, generated from :mod:`polychat._async` by ``scripts/unasync.py``: do not edit them."""
