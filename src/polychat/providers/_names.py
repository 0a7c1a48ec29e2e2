"""Names that end up inside an upstream URL's path (a Gemini model, an Azure deployment): checked, then quoted.

A client chooses a model, never an upstream path. A name containing ``/`` or ``\\``, a dot segment, ``?``, ``#``,
``%`` (an encoded separator would be decoded upstream) or a control character could steer the request to another
endpoint with the provider's key attached, so it is refused before anything is sent; every other character is
percent-quoted. The refusal is an :class:`~polychat.errors.UnsupportedParameterError`: a failover chain tries the
next provider (an OpenAI-compatible one takes ``org/model`` in the body), and the gateway answers 400.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from ..errors import UnsupportedParameterError

_FORBIDDEN = re.compile(r"[/\\?#%\x00-\x1f\x7f-\x9f\u2028\u2029]")


def path_segment(name: str, *, provider: str, param: str = "model") -> str:
    """``name`` percent-quoted as one URL path segment; raises if it is not a plain name."""
    bad = _FORBIDDEN.search(name)
    if bad is not None or name.strip() in ("", ".", ".."):
        what = f"contains {bad.group()!r}" if bad is not None else "is not a name"
        raise UnsupportedParameterError(
            f"Invalid argument {param}: {name!r} {what}; {provider} puts the {param} into the URL path, so it must "
            "be a plain name (no '/', '\\', '..', '?', '#', '%' or control characters)",
            param=param,
            provider=provider,
        )
    return quote(name, safe="")
