"""Byte-level tests of the SSE decoder: line endings, comments, multi-line data, splits at every byte."""

from __future__ import annotations

import itertools

import pytest

from polychat._sse import ServerSentEvent, SSEDecoder


def decode_all(*chunks: bytes) -> list[ServerSentEvent]:
    d = SSEDecoder()
    out: list[ServerSentEvent] = []
    for c in chunks:
        out.extend(d.feed(c))
    out.extend(d.flush())
    return out


STREAM = (
    b": keep-alive comment\n"
    b'data: {"a": 1}\n\n'
    b"event: update\r\n"
    b"id: 7\r\n"
    b"data: first line\r\n"
    b"data: second line\r\n\r\n"
    b"data:no-space\r\r"
    b"data: caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x98\x80\n\n"
    b"retry: 1500\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ServerSentEvent(data='{"a": 1}'),
    ServerSentEvent(data="first line\nsecond line", event="update", id="7"),
    ServerSentEvent(data="no-space", id="7"),
    ServerSentEvent(data="café ☕ 😀", id="7"),
    ServerSentEvent(data="[DONE]", id="7", retry=1500),
]


def test_whole_stream_in_one_read() -> None:
    assert decode_all(STREAM) == EXPECTED


def test_split_at_every_single_byte_boundary() -> None:
    for i in range(1, len(STREAM)):
        assert decode_all(STREAM[:i], STREAM[i:]) == EXPECTED, f"split at byte {i}"


def test_split_at_every_pair_of_boundaries() -> None:
    # Every way to cut the stream in three pieces: catches state carried across two reads (CR then LF, UTF-8).
    n = len(STREAM)
    for i, j in itertools.combinations(range(1, n), 2):
        assert decode_all(STREAM[:i], STREAM[i:j], STREAM[j:]) == EXPECTED, f"split at {i},{j}"


def test_one_byte_at_a_time() -> None:
    assert decode_all(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED


def test_multibyte_utf8_split_inside_character() -> None:
    emoji = "😀".encode()
    data = b"data: " + emoji + b"\n\n"
    for i in range(len(b"data: ") + 1, len(b"data: ") + len(emoji)):
        assert decode_all(data[:i], data[i:]) == [ServerSentEvent(data="😀")]


@pytest.mark.parametrize("ending", [b"\n", b"\r", b"\r\n"])
def test_each_line_ending(ending: bytes) -> None:
    data = b"data: x" + ending + b"data: y" + ending + ending
    assert decode_all(data) == [ServerSentEvent(data="x\ny")]


def test_crlf_split_between_reads_is_one_line_end() -> None:
    # "data: a\r" | "\n\r\n": the LF completing the CRLF must not count as an extra blank line.
    assert decode_all(b"data: a\r", b"\n", b"data: b\r\n\r\n") == [ServerSentEvent(data="a\nb")]


def test_comments_only_yield_nothing() -> None:
    assert decode_all(b": ping\n\n: ping\n\n") == []


def test_event_without_trailing_blank_line_is_flushed() -> None:
    d = SSEDecoder()
    assert d.feed(b"data: tail") == []
    assert d.flush() == [ServerSentEvent(data="tail")]


def test_field_without_colon_and_unknown_fields() -> None:
    assert decode_all(b"data\nfoo: bar\n\n") == [ServerSentEvent(data="")]


def test_only_first_space_after_colon_is_removed() -> None:
    assert decode_all(b"data:  two spaces\n\n") == [ServerSentEvent(data=" two spaces")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert decode_all(b"data: \xff\n\n") == [ServerSentEvent(data="\ufffd")]
