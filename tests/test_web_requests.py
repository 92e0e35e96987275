"""core.web_requests: the limits of what a request body may be, exactly at their edges."""

from __future__ import annotations

import io
import json

import pytest

from core.web_requests import MAX_DEPTH, MAX_INT_DIGITS, BodyError, parse_json, read_limited


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_nesting_up_to_the_limit_parses_and_one_more_is_400():
    assert parse_json(nested(MAX_DEPTH)) is not None
    assert parse_json(b'{"a": ' * (MAX_DEPTH - 1) + b"[]" + b"}" * (MAX_DEPTH - 1))
    for raw in (nested(MAX_DEPTH + 1), nested(100_000), b'{"a": ' * MAX_DEPTH + b"[]" + b"}" * MAX_DEPTH):
        with pytest.raises(BodyError, match="nested deeper") as caught:
            parse_json(raw)
        assert caught.value.status == 400


def test_integers_up_to_python_s_own_limit_parse_and_longer_ones_are_400():
    assert parse_json(b"9" * MAX_INT_DIGITS) == int("9" * MAX_INT_DIGITS)
    assert parse_json(b"-" + b"9" * MAX_INT_DIGITS) < 0
    with pytest.raises(BodyError, match="longer than"):
        parse_json(b"[" + b"9" * (MAX_INT_DIGITS + 1) + b"]")


@pytest.mark.parametrize("raw", [b"1e309", b"-1e309", b"1" + b"0" * 400 + b".0", b"NaN", b"Infinity", b"-Infinity"])
def test_numbers_a_float_cannot_hold_are_400(raw):
    with pytest.raises(BodyError):
        parse_json(b'{"x": ' + raw + b"}")


def test_surrogate_pairs_are_text_but_lone_surrogates_are_400():
    assert parse_json(json.dumps({"smile": "\U0001f600"}).encode()) == {"smile": "\U0001f600"}
    for text in ('"\\ud800"', '"a\\udfffb"', '{"\\udc00": 1}', '["\\ud83d"]'):
        with pytest.raises(BodyError, match="surrogate"):
            parse_json(text.encode())


@pytest.mark.parametrize("raw", [b"\xff", "café".encode("latin-1"), '"x"'.encode("utf-16"), b'"\xed\xa0\x80"'])
def test_bodies_that_are_not_utf8_are_400(raw):
    with pytest.raises(BodyError, match="not UTF-8") as caught:
        parse_json(raw)
    assert caught.value.status == 400


def test_the_stream_is_read_up_to_the_limit_and_not_one_byte_more():
    assert read_limited(io.BytesIO(b"x" * 100), 100) == b"x" * 100
    stream = io.BytesIO(b"x" * 1000)
    with pytest.raises(BodyError) as caught:
        read_limited(stream, 100)
    assert caught.value.status == 413 and stream.tell() == 101
