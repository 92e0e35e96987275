"""Property-based fuzzing of every endpoint crowdgate serves to Label Studio (issue #14, "Bad input").

The webhook receiver (``POST /hooks/labelstudio``, with a private Redis) and every ML backend route (``/health``,
``/``, ``/setup``, ``/predict``, ``/webhook``, ``/versions``, with basic auth on and off) get 1,000 requests each,
made by mutating the requests Label Studio 1.23.2 really sent (``tests/fixtures/labelstudio-1.23.2``): fields
replaced by the wrong type, removed or added, JSON nested thousands deep, integers over 4,300 digits, floats out of
range, lone surrogates, non-UTF-8 bytes, project ids like ``"²"`` or 256 digits, objects where strings go,
oversized bodies, wrong content types and malformed ``Authorization`` headers.

Every answer must be 2xx or 4xx with a JSON body, never a traceback or a path of the server; the answers that
can be known from the input are checked exactly (413, 415, 400/422, 401). Each webhook the receiver accepts is
also run through the scoring job, so nothing accepted breaks later. The ML backend runs its real ``Prelabeler``
(classifier lookup on disk, zero-shot's config reading and region building) with a hash in place of the sentence
embedding, so no model is loaded.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ml_backend import embeddings
from ml_backend.app import create_app as create_ml_app
from ml_backend.prelabeler import Prelabeler
from qa_hooks.app import create_app as create_hooks_app
from qa_hooks.events import parse_body
from qa_hooks.jobs import process_event
from tests.conftest import fixture_json
from tests.state_isolation import isolated_settings

ROOT = Path(__file__).resolve().parents[1]
SECRET = "fuzz-webhook-secret"
USER, PASSWORD = "fuzz-user", "fuzz-password"
GOOD_AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
# RFC 7235: the scheme is case-insensitive and one or more spaces may follow it.
GOOD_AUTHS = {GOOD_AUTH, "basic " + GOOD_AUTH[6:], "BASIC  " + GOOD_AUTH[6:]}
PREFIX = "fz"
HOOK_LIMIT = 64_000
ML_LIMIT = 200_000
FUZZ = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=list(HealthCheck))

WEBHOOKS = [fixture_json("webhook_annotation_created.json")] + [
    capture["body"] for action, capture in fixture_json("webhook_other_actions.json").items()
    if not action.startswith("_")
]
ML_REQUESTS = fixture_json("ml_backend_requests.json")["requests"]
ML_BODIES = {path: [r["json_body"] for r in ML_REQUESTS if r["path"] == path and r.get("json_body")]
             for path in ("/setup", "/predict", "/webhook")}
# Field names worth adding where they are missing: what the receiver and the backend read.
FIELDS = ["id", "action", "project", "task", "tasks", "annotation", "annotations", "result", "from_name", "to_name",
          "type", "value", "choices", "completed_by", "updated_at", "created_at", "unique_id", "lead_time",
          "was_cancelled", "ground_truth", "label_config", "control_weights", "overall", "labels", "data", "meta",
          "gold", "schema", "hostname", "model_version", "maximum_annotations", "title", "expert_instruction"]


@dataclass(frozen=True)
class Raw:
    """JSON text spliced into a body as is: what ``json.dumps`` cannot write (too deep, too long, not JSON)."""

    text: str
    kind: str  # "deep", "huge" or "invalid": the body cannot be strict JSON, so it must get 400/422


def _deep(depth: int, opener: str) -> Raw:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return Raw(opener * depth + "1" + closer * depth, "deep")


NASTY_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 2**63, 2**64, -(2**63) - 1, 1.5, -0.0, 1e308, -1e308, "", "x",
                     "²", "٣", "1.2", "2.abc", "2.", ".2", [], {}, [None], [1, "a"], {"id": "x"}, {"id": None},
                     {"x": {"y": []}}, "not xml", "<View>", "<View><Choices name='c' toName='t'/></View>",
                     "\ud800", "a\udfffb", "\udc00\ud800", "0000-13-45T99:99:99", "2026-11-22T04:17:12Z"]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.integers(min_value=200, max_value=300).map(lambda n: "9" * n + ".1763"),  # project "<256 digits>.<ts>"
    st.integers(min_value=19, max_value=400).map(lambda n: int("9" * n)),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner,
                                                                             max_size=3), max_leaves=8),
    st.integers(min_value=100, max_value=3000).map(lambda d: _deep(d, "[")),
    st.integers(min_value=100, max_value=3000).map(lambda d: _deep(d, '{"a":')),
    st.integers(min_value=4301, max_value=6000).map(lambda n: Raw("7" * n, "huge")),
    st.sampled_from([Raw("1e999", "huge"), Raw("-1e400", "huge"), Raw("1" + "0" * 400 + ".5", "huge"),
                     Raw("NaN", "invalid"), Raw("Infinity", "invalid"), Raw("-Infinity", "invalid")]),
)


@st.composite
def mutated_json(draw: st.DrawFn, bodies: list[Any]) -> tuple[bytes, set[str]]:
    """A captured body with 1 to 4 mutations at random places; the kinds of :class:`Raw` spliced into it."""
    body = copy.deepcopy(draw(st.sampled_from(bodies)))
    raws: list[Raw] = []

    def value() -> Any:
        picked = copy.deepcopy(draw(NASTY_VALUES))  # later mutations must not change the strategy's constants
        if isinstance(picked, Raw):
            raws.append(picked)
            return f"__raw_{len(raws) - 1}__"
        return picked

    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        parent, key = None, None
        node = body
        while isinstance(node, dict | list) and node and draw(st.integers(0, 4)) > 0:
            key = draw(st.sampled_from(sorted(node, key=str))) if isinstance(node, dict) else \
                draw(st.integers(0, len(node) - 1))
            parent, node = node, node[key]
        operation = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if parent is None:
            if operation == "add" and isinstance(body, dict):
                body[draw(st.sampled_from(FIELDS))] = value()
            elif operation == "replace" and draw(st.integers(0, 9)) == 0:
                body = value()  # a whole body that is not an object
            continue
        if operation == "delete":
            del parent[key]
        elif operation == "add" and isinstance(node, dict):
            node[draw(st.sampled_from(FIELDS))] = value()
        else:
            parent[key] = value()
    text = json.dumps(body)
    kinds = set()
    for i, raw in enumerate(raws):
        placeholder = f'"__raw_{i}__"'
        if placeholder in text:  # a later mutation may have removed it again
            kinds.add(raw.kind)
            text = text.replace(placeholder, raw.text)
    return text.encode(), kinds


@st.composite
def request_body(draw: st.DrawFn, bodies: list[Any], limit: int) -> tuple[bytes, str | None, str]:
    """(body, Content-Type, what the answer must be): "413", "415", "400/422" or "any"."""
    raw, kinds = draw(mutated_json(bodies))
    expect = "400/422" if kinds else "any"
    shape = draw(st.sampled_from(["json"] * 12 + ["latin1", "bad-bytes", "utf16", "truncated", "oversized", "bom"]))
    if shape == "latin1":
        raw = raw.replace(b'"', b'"\xe9', 1)
        expect = "400/422"
    elif shape == "bad-bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])) + raw[at:]
        expect = "400/422"
    elif shape == "utf16":
        raw = raw.decode().encode("utf-16")
        expect = "400/422"
    elif shape == "truncated" and len(raw) > 2:
        raw = raw[: draw(st.integers(1, len(raw) - 1))]
        expect = "400/422"
    elif shape == "bom":
        raw = b"\xef\xbb\xbf" + raw
        expect = "400/422"
    elif shape == "oversized":
        raw = raw + b" " * (limit + 1 - len(raw))  # trailing blanks: valid JSON, one byte over the limit
        expect = "413"
    content_type = draw(st.sampled_from(["application/json"] * 8 + [
        "application/json; charset=utf-8", "application/json; charset=UTF-8", None, "text/plain",
        "application/x-www-form-urlencoded", "application/json; charset=latin-1", "text/json", "application/xml"]))
    if content_type not in {"application/json", "application/json; charset=utf-8", "application/json; charset=UTF-8"} \
            and expect != "413":
        expect = "415"
    return raw, content_type, expect


def assert_clean(reply, expect: str = "any") -> None:
    """2xx/4xx with a JSON body that names nothing of the server; the status ``expect`` says, when it says one."""
    text = reply.get_data(as_text=True)
    event(f"status {reply.status_code}")  # --hypothesis-show-statistics shows how the answers spread
    assert reply.status_code < 500, (reply.status_code, text[:500])
    for leak in ("Traceback", 'File "', str(ROOT), sys.prefix, "site-packages", "crowdgate-test-state"):
        assert leak not in text, (leak, text[:500])
    if reply.status_code >= 400:
        assert reply.is_json and isinstance(reply.json.get("error"), str), text[:500]
    if expect == "413":
        assert reply.status_code == 413, text[:300]
    elif expect == "415":
        assert reply.status_code == 415, text[:300]
    elif expect == "400/422":
        assert reply.status_code in (400, 422), text[:300]


# -- the webhook receiver -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def receiver(redis_service):
    connection = redis.Redis.from_url(redis_service.url)
    for key in connection.scan_iter(f"{PREFIX}:*"):
        connection.delete(key)
    hook_settings = isolated_settings(redis_url=redis_service.url, webhook_secret=SECRET, key_prefix=PREFIX,
                                      max_webhook_bytes=HOOK_LIMIT, events_queue="fuzz-events")
    return create_hooks_app(hook_settings).test_client(), connection


@FUZZ
@given(request=request_body(WEBHOOKS, HOOK_LIMIT), secret=st.sampled_from([SECRET] * 20 + [None, "", SECRET + " "]))
def test_fuzzed_webhooks_get_4xx_and_nothing_accepted_breaks_the_job(receiver, request, secret):
    client, connection = receiver
    raw, content_type, expect = request
    headers = {} if secret is None else {"X-Crowdgate-Secret": secret}
    if content_type is not None:
        headers["Content-Type"] = content_type
    reply = client.post("/hooks/labelstudio", data=raw, headers=headers)
    if secret != SECRET:
        assert reply.status_code == 401
        return
    assert_clean(reply, expect)
    if reply.status_code == 200:
        # What the receiver queued, the job must be able to record and score.
        process_event(parse_body(raw).to_dict(), PREFIX, connection=connection)


# -- the ML backend -------------------------------------------------------------------------------------------


def _hashed_embedding(texts: list[str]) -> np.ndarray:
    """A unit vector per text from its hash: zero-shot's arithmetic without loading MiniLM."""
    rows = [np.frombuffer(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest(), dtype=np.uint8)
            for t in texts]
    vectors = np.array(rows, dtype=np.float32).reshape(len(texts), 32) - 127.5
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)


@pytest.fixture(scope="module")
def ml_clients(redis_service, tmp_path_factory):
    """(client without auth, client with basic auth): the real protocol and Prelabeler, a private Redis."""
    patch = pytest.MonkeyPatch()
    patch.setattr(embeddings, "embed", _hashed_embedding)
    root = tmp_path_factory.mktemp("fuzz-models")
    clients = []
    for user, password in (("", ""), (USER, PASSWORD)):
        ml_settings = isolated_settings(redis_url=redis_service.url, key_prefix=PREFIX, ml_max_body_bytes=ML_LIMIT,
                                        ml_basic_auth_user=user, ml_basic_auth_password=password,
                                        model_dir=str(root), ml_queue="fuzz-ml")
        clients.append(create_ml_app(ml_settings, model=Prelabeler(model_root=root)).test_client())
    yield clients
    patch.undo()


AUTH_HEADERS = st.one_of(
    st.sampled_from(sorted(GOOD_AUTHS)),
    st.sampled_from([None, "", "Basic", "Basic ", "Basic !!!", "Basic é", "Basic ====", "Bearer abc", "Basic\tx",
                     "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),
                     "Basic " + base64.b64encode(USER.encode()).decode(),
                     "Basic " + base64.b64encode(f"{USER}:{PASSWORD} ".encode()).decode(),
                     "Basic " + base64.b64encode(f" {USER}:{PASSWORD}".encode()).decode(),
                     "Basic " + base64.b64encode(f"{USER}:".encode()).decode(),
                     "Basic " + base64.b64encode(f":{PASSWORD}".encode()).decode(),
                     "Basic " + "QQ" * 5000, GOOD_AUTH[:-2], GOOD_AUTH + "x", "Basic " + GOOD_AUTH[8:]]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=60).map(lambda t: "Basic " + t),
)


def ml_call(clients, draw_auth: bool, auth: str | None, method: str, path: str, **kwargs):
    """The request against the backend with auth off, or with auth on and the drawn header; checks the 401s."""
    client = clients[1] if draw_auth else clients[0]
    headers = dict(kwargs.pop("headers", {}) or {})
    if draw_auth and auth is not None:
        headers["Authorization"] = auth
    reply = client.open(path, method=method, headers=headers, **kwargs)
    authorised = not draw_auth or auth in GOOD_AUTHS
    if not authorised and reply.status_code != 405:  # a method the route lacks is refused before any auth
        assert reply.status_code == 401 and reply.json == {"error": "basic auth required"}, reply.data[:300]
    return reply, authorised


@pytest.mark.parametrize("path", ["/health", "/", "/versions"])
@FUZZ
@given(with_auth=st.booleans(), auth=AUTH_HEADERS, method=st.sampled_from(["GET"] * 6 + ["POST", "PUT", "DELETE"]),
       query=st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=20), max_size=3),
       body=st.one_of(st.none(), st.binary(max_size=200), mutated_json(WEBHOOKS).map(lambda m: m[0])),
       content_type=st.sampled_from([None, "application/json", "text/plain"]))
def test_fuzzed_get_routes_answer_cleanly(ml_clients, path, with_auth, auth, method, query, body, content_type):
    reply, authorised = ml_call(ml_clients, with_auth, auth, method, path, query_string=query, data=body,
                                content_type=content_type)
    assert_clean(reply)
    if authorised and method == "GET":
        assert reply.status_code == 200 and reply.json


@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook"])
@FUZZ
@given(with_auth=st.booleans(), auth=AUTH_HEADERS, data=st.data())
def test_fuzzed_post_routes_answer_cleanly(ml_clients, path, with_auth, auth, data):
    raw, content_type, expect = data.draw(request_body(ML_BODIES[path], ML_LIMIT))
    reply, authorised = ml_call(ml_clients, with_auth, auth, "POST", path, data=raw, content_type=content_type)
    if authorised:
        assert_clean(reply, expect)
        if path == "/predict" and reply.status_code == 200:
            tasks = json.loads(raw)["tasks"]
            assert len(reply.json["results"]) == len(tasks)  # exactly one prediction per task, whatever came
