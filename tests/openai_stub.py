"""A real HTTP server speaking enough of OpenAI's chat-completions API for the ``openai`` client.

It runs in a thread on a free port and is configurable per test: the answer (a function of the request),
latency, injected failures (429 with Retry-After, 500, 503; once or on every request), refusing
``response_format`` types the way llama.cpp refuses ``json_schema`` (HTTP 500), optional token
log-probabilities, whether ``n`` is honoured, and raw assistant messages (tool calls, no content). Every request
body and its headers are recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class RawMessage:
    """An answer given as the whole assistant message (e.g. ``tool_calls`` and no content), sent as it is."""

    message: dict[str, Any]
    finish_reason: str = "stop"


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+|\s+|[^\w\s]", text)


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message (the item being labelled)."""
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)
    return ""


def schema_of(body: dict[str, Any]) -> dict[str, Any] | None:
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_schema":
        return rf.get("json_schema", {}).get("schema")
    if rf.get("type") == "json_object":
        return rf.get("schema")
    return None


def default_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A schema-valid answer: the first option of every enum, empty lists, a short text."""

    def make(s: dict[str, Any]) -> Any:
        if "enum" in s:
            return s["enum"][0]
        t = s.get("type")
        if t == "object":
            return {k: make(v) for k, v in s.get("properties", {}).items()}
        if t == "array":
            item = s.get("items", {})
            return [] if item.get("type") == "object" else [make(item)]
        if t == "integer":
            return int(s.get("minimum", 1))
        if t == "number":
            return 1.0
        return "stub text"

    schema = schema_of(body) or {"type": "object", "properties": {}}
    return make(schema)


class OpenAIStub:
    """Start with ``with OpenAIStub() as stub:``; ``stub.base_url`` goes to ``OpenAI(base_url=...)``."""

    def __init__(
        self,
        answer: Answer | None = None,
        *,
        latency_s: float = 0.0,
        logprobs: bool = False,
        logprob: Callable[[str, str], float] | None = None,
        alternatives: Callable[[str, str], list[tuple[str, float]]] | None = None,
        honour_n: bool = True,
        refuse: tuple[str, ...] = (),
        refuse_status: int = 500,
        prompt_wrapper: str = "{json}",
        reject_params: tuple[str, ...] = (),
    ) -> None:
        self.answer = answer or default_answer
        self.latency_s = latency_s
        self.logprobs = logprobs
        self.logprob = logprob or (lambda token, content: -0.01)
        # (token, content) -> other tokens with their logprobs, listed as top_logprobs (the token itself too)
        self.alternatives = alternatives or (lambda token, content: [])
        self.honour_n = honour_n
        self.refuse = set(refuse)  # response_format types answered with refuse_status
        self.refuse_status = refuse_status
        self.prompt_wrapper = prompt_wrapper  # how a plain (unconstrained) answer is dressed up
        self.reject_params = set(reject_params)  # request fields answered with 400 (an older server)
        self.failures: deque[tuple[int, dict[str, str]]] = deque()
        self.always: tuple[int, dict[str, str]] | None = None  # a failure answered to every request
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # request headers, lower-case names, in the order of requests
        self.statuses: list[int] = []
        self.in_flight = 0
        self.peak_in_flight = 0  # most requests being served at once
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----- control ---------------------------------------------------------------------------------------

    def fail_next(self, *statuses: int, retry_after: str | None = None) -> None:
        """The next requests get these HTTP statuses, in order (429 carries Retry-After when given)."""
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        with self._lock:
            self.failures.extend((s, headers) for s in statuses)

    def fail_always(self, status: int | None, retry_after: str | None = None) -> None:
        """Every request gets ``status`` from now on (an outage, a hard rate limit); None ends it."""
        headers = {"retry-after": retry_after} if retry_after is not None else {}
        with self._lock:
            self.always = (status, headers) if status is not None else None

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def completions_ok(self) -> int:
        with self._lock:
            return sum(1 for s in self.statuses if s == 200)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                status, payload, headers = stub._handle(body, {k.lower(): v for k, v in self.headers.items()})
                self._send(status, payload, headers)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ----- behaviour -------------------------------------------------------------------------------------

    def _handle(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.requests.append(body)
            self.headers.append(headers)
            failure = self.failures.popleft() if self.failures else self.always
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return self._respond(body, failure)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _respond(
        self, body: dict[str, Any], failure: tuple[int, dict[str, str]] | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.latency_s:
            time.sleep(self.latency_s)
        rf_type = (body.get("response_format") or {}).get("type")
        if failure is not None:
            status, headers = failure
            return self._error(status, f"injected {status}", headers)
        rejected = sorted(k for k in self.reject_params if body.get(k))
        if rejected:
            return self._error(400, f"unsupported parameter(s): {rejected}", {})
        if rf_type in self.refuse:
            # llama.cpp-style refusal of a response_format it does not implement.
            return self._error(self.refuse_status, f"response_format type {rf_type} is not supported", {})
        n = int(body.get("n") or 1) if self.honour_n else 1
        choices = []
        completion_tokens = 0
        for i in range(n):
            raw = self.answer(body)
            if isinstance(raw, RawMessage):
                choices.append({"index": i, "message": {"role": "assistant", **raw.message},
                                "finish_reason": raw.finish_reason, "logprobs": None})
                continue
            if isinstance(raw, str):
                content = raw
            else:
                content = json.dumps(raw)
                if rf_type is None:
                    content = self.prompt_wrapper.format(json=content)
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": None,
            }
            tokens = _tokens(content)
            completion_tokens += len(tokens)
            if self.logprobs and body.get("logprobs"):
                entries = []
                for t in tokens:
                    lp = self.logprob(t, content)
                    top = [(t, lp), *self.alternatives(t, content)][: int(body.get("top_logprobs") or 0)]
                    if not body.get("top_logprobs"):
                        top = []
                    entries.append({
                        "token": t,
                        "logprob": lp,
                        "bytes": list(t.encode()),
                        "top_logprobs": [{"token": a, "logprob": v, "bytes": list(a.encode())} for a, v in top],
                    })
                choice["logprobs"] = {"content": entries}
            choices.append(choice)
        prompt_chars = sum(len(json.dumps(m.get("content"))) for m in body.get("messages", []))
        payload = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub-model"),
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_chars // 4,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_chars // 4 + completion_tokens,
            },
        }
        with self._lock:
            self.statuses.append(200)
        return 200, payload, {}

    def _error(self, status: int, message: str, headers: dict[str, str]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.statuses.append(status)
        return status, {"error": {"message": message, "type": "stub_error", "code": status}}, headers
