"""What every crowdgate endpoint needs of an incoming request, so bad input is a clean 4xx and never a 500.

- :func:`require_json` : the body is ``application/json`` (a ``charset`` parameter may only say UTF-8), else 415;
- :func:`read_limited`: at most ``limit`` bytes are read from the body stream, whatever ``Content-Length`` says
  or when there is none (chunked), else 413;
- :func:`parse_json`: strict UTF-8 JSON that every later step can handle: nesting at most :data:`MAX_DEPTH`
  deep, integers of at most :data:`MAX_INT_DIGITS` digits, finite numbers only (no ``NaN``/``Infinity``), no
  lone surrogates in any string (they cannot be encoded, so Redis, logs and Label Studio would choke on them),
  else 400;
- :func:`install_json_errors`: every HTTP error of the app is answered as JSON ``{"error": reason}``, and an
  unexpected exception as a bare 500 with no traceback or path in the body (it is logged instead).

Each failure is a :class:`BodyError` carrying the status to answer with.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import IO, Any

from flask import Flask, Request, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "BodyError", "install_json_errors", "parse_json", "read_limited",
           "require_json"]

MAX_DEPTH = 64  # Label Studio's payloads nest about 8 deep; recursive code later must never hit Python's limit
MAX_INT_DIGITS = 4300  # Python's own limit for int(str): a longer integer cannot even be printed back
_CHUNK = 64 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")
# A lone surrogate can only come from a \uD800-\uDFFF escape: the body itself was checked to be UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
log = logging.getLogger(__name__)


class BodyError(ValueError):
    """A request body crowdgate will not take; ``status`` is the HTTP code to answer with."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def require_json(request: Request) -> None:
    """415 unless the request says its body is JSON in UTF-8 (Label Studio sends ``application/json``)."""
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if request.mimetype != "application/json" or charset not in {"utf-8", "utf8"}:
        raise BodyError("Content-Type must be application/json (UTF-8)", 415)


def read_limited(stream: IO[bytes], limit: int) -> bytes:
    """The whole body of ``stream`` when it is at most ``limit`` bytes; a 413 :class:`BodyError` as soon as one
    byte more arrives, so a chunked body without ``Content-Length`` is held to the same limit."""
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= limit:
            chunk = stream.read(min(_CHUNK, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
    except RequestEntityTooLarge:  # the app-wide MAX_CONTENT_LENGTH, when it is the smaller limit
        pass
    raise BodyError(f"body larger than {limit} bytes", 413)


def parse_json(raw: bytes) -> Any:
    """``raw`` decoded as strict UTF-8 JSON (see the module docstring); a 400 :class:`BodyError` otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except RecursionError:
        raise BodyError(f"body is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BodyError(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    _check_tree(value, strings=_SURROGATE_ESCAPE.search(text) is not None)
    return value


def install_json_errors(app: Flask) -> None:
    """Answer every HTTP error (404, 405, 413, ...) as ``{"error": reason}`` and an unexpected exception as a
    plain 500 naming nothing of the server; the exception itself goes to the log."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(BodyError, _body_error)
    app.register_error_handler(Exception, _unexpected)


def _http_error(exc: HTTPException):
    return jsonify({"error": exc.description or exc.name}), exc.code or 500


def _body_error(exc: BodyError):
    return jsonify({"error": exc.reason}), exc.status


def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    log.exception("unexpected error answering a request")
    return jsonify({"error": "internal error"}), 500


def _parse_int(digits: str) -> int:
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        raise BodyError(f"body has an integer longer than {MAX_INT_DIGITS} digits")
    return int(digits)


def _parse_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise BodyError("body has a number too large for a 64-bit float")
    return value


def _parse_constant(name: str) -> float:
    raise BodyError(f"body has {name}, which is not JSON")


def _check_tree(value: Any, strings: bool) -> None:
    """Depth of every container, and (when ``strings``) no lone surrogate in any key or string; iterative, so a
    deep body cannot exhaust the stack here either."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > MAX_DEPTH:
                raise BodyError(f"body is nested deeper than {MAX_DEPTH} levels")
            for key, item in node.items():
                if strings and _SURROGATE.search(key):
                    raise BodyError("body has a lone UTF-16 surrogate in a string")
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            if depth > MAX_DEPTH:
                raise BodyError(f"body is nested deeper than {MAX_DEPTH} levels")
            stack.extend((item, depth + 1) for item in node)
        elif strings and isinstance(node, str) and _SURROGATE.search(node):
            raise BodyError("body has a lone UTF-16 surrogate in a string")
