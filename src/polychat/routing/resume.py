"""Resuming an interrupted stream on another provider, without repeating or splicing text silently.

Pure functions: the continuation request (assistant prefill where the provider supports it, otherwise the
partial answer plus an instruction to continue), and how much of the continuation merely repeats the partial
answer's tail and must be dropped.
"""

from __future__ import annotations

from msgspec.structs import replace

from .._request import ChatRequest

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without repeating any of it "
    "and without any preamble."
)
#: Most characters of the continuation held back to look for repetition (beyond that it streams on).
OVERLAP_WINDOW = 2000
#: Shortest repeated tail treated as overlap (shorter coincidences, like one space, are kept).
MIN_OVERLAP = 4


def continuation_request(request: ChatRequest, partial: str, *, prefill: bool) -> ChatRequest:
    """The request that continues ``partial``: as an assistant prefill when the provider takes one (its
    ``capabilities.prefill``, and it has not refused one in this call), else followed by an instruction to go on."""
    messages = [*request.messages, {"role": "assistant", "content": partial}]
    if not prefill:
        messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    # The continuation is a new request: a client's original body (NativeRequest) no longer describes it.
    return replace(request, messages=messages, native=None)


def window_for(partial: str) -> int:
    """How much of the continuation to hold back before :func:`overlap` can decide."""
    return min(len(partial), OVERLAP_WINDOW)


def overlap(partial: str, head: str) -> int:
    """How many leading characters of ``head`` (the continuation's start) repeat what ``partial`` already said."""
    if not partial or not head:
        return 0
    if head.startswith(partial):
        return len(partial)  # the model started over
    for k in range(min(len(partial), len(head)), MIN_OVERLAP - 1, -1):
        if partial.endswith(head[:k]):
            return k  # the model repeated the last words
    return 0
