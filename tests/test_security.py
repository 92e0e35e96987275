"""Let nobody in and tell nobody anything (issue #14, "Security").

- the webhook secret is required, exact (no trimming), compared in constant time, and during a rotation the
  previous one (``CROWDGATE_WEBHOOK_SECRET_PREVIOUS``) is accepted beside it;
- malformed ``Authorization`` headers on the ML backend get 401;
- the size limits hold for chunked bodies (no ``Content-Length``) under the real gunicorn;
- no secret, token or password appears in any log line or answer: the apps run with distinctive values through
  good and bad requests, and their logs (caplog, and the log file of a real ``crowdgate-web``) are searched.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import requests

import qa_hooks.receiver
from ml_backend import embeddings
from ml_backend.app import create_app as create_ml_app
from qa_hooks.app import create_app as create_hooks_app
from scripts.processes import free_port
from scripts.services import start_web
from tests.conftest import fixture_json
from tests.state_isolation import isolated_settings

SECRET = "cgsec-webhook-current-7f3a91d2"
PREVIOUS = "cgsec-webhook-previous-c28e44b0"
ML_USER = "cgsec-ml-user-51d07c"
ML_PASSWORD = "cgsec-ml-password-9be2a4"
LS_KEY = "cgsec-labelstudio-key-0a77e1"
OPENAI_KEY = "cgsec-openai-key-e613f5"
ACCESS_TOKEN = "cgsec-setup-access-token-3d19"  # what Label Studio sends in /setup
GOOD_AUTH = "Basic " + base64.b64encode(f"{ML_USER}:{ML_PASSWORD}".encode()).decode()
SECRETS = [SECRET, PREVIOUS, ML_USER, ML_PASSWORD, LS_KEY, OPENAI_KEY, ACCESS_TOKEN, GOOD_AUTH[6:]]
WEBHOOK = fixture_json("webhook_annotation_created.json")
SETUP = next(r["json_body"] for r in fixture_json("ml_backend_requests.json")["requests"] if r["path"] == "/setup")
PREDICT = next(r["json_body"] for r in fixture_json("ml_backend_requests.json")["requests"]
               if r["path"] == "/predict")


def hook(client, secret: str | None, body=WEBHOOK):
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Crowdgate-Secret"] = secret
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/hooks/labelstudio", data=data, headers=headers)


def _event(n: int) -> dict:
    body = json.loads(json.dumps(WEBHOOK))
    body["annotation"].update(id=500 + n, unique_id=f"security-{n}")
    return body


@pytest.fixture
def receiver(redis_service, redis_conn):
    settings = isolated_settings(redis_url=redis_service.url, webhook_secret=SECRET, webhook_secret_previous=PREVIOUS,
                                 key_prefix="sec")
    return create_hooks_app(settings).test_client()


# -- the webhook secret ---------------------------------------------------------------------------------------


def test_during_a_rotation_both_secrets_are_accepted_and_a_third_refused(receiver):
    assert hook(receiver, SECRET, _event(1)).status_code == 200
    assert hook(receiver, PREVIOUS, _event(2)).status_code == 200
    reply = hook(receiver, "cgsec-webhook-third-000000", _event(3))
    assert reply.status_code == 401 and reply.json == {"error": "missing or wrong X-Crowdgate-Secret header"}


@pytest.mark.parametrize("given", [f" {SECRET}", f"{SECRET} ", f"\t{SECRET}", f"{SECRET}\t", f" {PREVIOUS}",
                                   f"{PREVIOUS} ", SECRET.upper(), SECRET[:-1], SECRET + SECRET, f"{SECRET},{PREVIOUS}",
                                   "", None])
def test_the_secret_is_exact(receiver, given):
    assert hook(receiver, given).status_code == 401


def test_the_previous_secret_alone_opens_nothing(redis_service, redis_conn):
    """Without a current secret every webhook is refused, even one carrying the configured previous secret."""
    settings = isolated_settings(redis_url=redis_service.url, webhook_secret="", webhook_secret_previous=PREVIOUS,
                                 key_prefix="sec")
    client = create_hooks_app(settings).test_client()
    assert hook(client, PREVIOUS).status_code == 401
    assert hook(client, "").status_code == 401


def test_both_secrets_are_compared_in_constant_time_every_time(receiver, monkeypatch):
    """Whichever secret matches, or none, both comparisons run through hmac.compare_digest: how long the check
    takes says nothing about which secret was close."""
    calls: list[tuple[bytes, bytes]] = []
    real = qa_hooks.receiver.hmac.compare_digest

    def counting(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(qa_hooks.receiver.hmac, "compare_digest", counting)
    for given in (SECRET, PREVIOUS, "wrong", ""):
        calls.clear()
        hook(receiver, given, _event(10))
        assert sorted(b for _, b in calls) == sorted([SECRET.encode(), PREVIOUS.encode()]), given


# -- basic auth on the ML backend -----------------------------------------------------------------------------


def _hashed_embedding(texts: list[str]) -> np.ndarray:
    rows = [np.frombuffer(text.encode("utf-8", "surrogatepass").ljust(16, b".")[:16], dtype=np.uint8) for text in texts]
    vectors = np.array(rows, dtype=np.float32) + 1.0
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def ml_client(redis_service, monkeypatch, tmp_path):
    """The ML backend with basic auth, an LLM whose endpoint is down (so its error path runs) and the real
    zero-shot fallback on a hashed embedding (no model loaded)."""
    monkeypatch.setattr(embeddings, "embed", _hashed_embedding)
    settings = isolated_settings(redis_url=redis_service.url, key_prefix="sec", ml_basic_auth_user=ML_USER,
                                 ml_basic_auth_password=ML_PASSWORD, label_studio_api_key=LS_KEY,
                                 openai_api_key=OPENAI_KEY, llm_model="cgsec-model", llm_max_retries=0,
                                 openai_base_url=f"http://127.0.0.1:{free_port()}/v1", llm_deadline_s=5.0,
                                 model_dir=str(tmp_path))
    return create_ml_app(settings).test_client()


@pytest.mark.parametrize("header", ["Basic", "Basic ", "Basic !!!", "Basic é", "Basic ====", "Bearer " + ML_PASSWORD,
                                    "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),
                                    "Basic " + base64.b64encode(ML_USER.encode()).decode(),
                                    "Basic " + base64.b64encode(f"{ML_USER}:{ML_PASSWORD} ".encode()).decode(),
                                    "Basic " + base64.b64encode(f"{ML_USER}:".encode()).decode(),
                                    GOOD_AUTH[:-1], "Digest " + GOOD_AUTH[6:], "x" * 10_000])
@pytest.mark.parametrize("path", ["/", "/health", "/versions"])
def test_a_malformed_authorization_header_is_401(ml_client, path, header):
    reply = ml_client.get(path, headers={"Authorization": header})
    assert reply.status_code == 401 and reply.json == {"error": "basic auth required"}
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="crowdgate"'


def test_good_credentials_open_every_route(ml_client):
    auth = {"Authorization": GOOD_AUTH}
    for path in ("/", "/health", "/versions"):
        assert ml_client.get(path, headers=auth).status_code == 200
    assert ml_client.post("/setup", json=SETUP, headers=auth).status_code == 200
    assert ml_client.post("/webhook", json={"action": "PROJECT_UPDATED"}, headers=auth).status_code == 200


# -- nothing secret in logs or answers ------------------------------------------------------------------------


def _assert_nothing_secret(text: str, where: str) -> None:
    found = [secret for secret in SECRETS if secret in text]
    assert not found, f"{found} in {where}"


def test_no_secret_in_any_log_line_or_answer(receiver, ml_client, caplog):
    """Good and bad requests to both apps, including their error paths (Redis down, the LLM down): neither the
    captured log records nor the answers carry a secret, token or password."""
    caplog.set_level(logging.DEBUG)
    answers = []
    for given in (SECRET, PREVIOUS, SECRET + " ", "wrong", None):
        answers.append(hook(receiver, given, _event(20)))
    answers.append(hook(receiver, SECRET, b'{"action": '))
    answers.append(hook(receiver, SECRET, {**WEBHOOK, "project": {**WEBHOOK["project"], "label_config": "<x"}}))
    closed = isolated_settings(redis_url=f"redis://:{PREVIOUS}@127.0.0.1:{free_port()}/0", webhook_secret=SECRET,
                               key_prefix="sec")
    down = create_hooks_app(closed).test_client()
    answers += [hook(down, SECRET, _event(21)), down.get("/hooks/health")]  # 503: Redis unavailable
    assert [a.status_code for a in answers[-2:]] == [503, 503]

    auth = {"Authorization": GOOD_AUTH}
    setup = {**SETUP, "access_token": ACCESS_TOKEN}
    for headers in (auth, {"Authorization": "Basic " + base64.b64encode(f"{ML_USER}:{SECRET}".encode()).decode()},
                    {}):
        answers.append(ml_client.post("/setup", json=setup, headers=headers))
        answers.append(ml_client.post("/predict", json=PREDICT, headers=headers))  # the LLM is down: fallback
        answers.append(ml_client.post("/predict", json={**PREDICT, "label_config": "<x"}, headers=headers))
        answers.append(ml_client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 2}},
                                      headers=headers))
        answers.append(ml_client.get("/health", headers=headers))
    assert [a.status_code for a in answers[-15:]] == [200, 200, 422, 201, 200] + [401] * 10
    assert len(answers[-14].json["results"]) == len(PREDICT["tasks"])
    assert any("LLM" in r.getMessage() for r in caplog.records)  # the LLM's error path ran and logged
    for reply in answers:
        _assert_nothing_secret(reply.get_data(as_text=True) + str(dict(reply.headers)), "an answer")
    _assert_nothing_secret(caplog.text, "the log")
    for record in caplog.records:  # what a handler with another format would show (args, exception text)
        _assert_nothing_secret(f"{record.getMessage()} {record.args} {record.exc_text or ''}", "a log record")


# -- the real server: chunked bodies and its log file ---------------------------------------------------------


def _chunks(size: int, head: bytes = b""):
    """``size`` bytes as a generator, so requests sends them chunked, without a Content-Length."""
    yield head
    left = size - len(head)
    while left > 0:
        step = min(left, 1 << 20)
        yield b" " * step
        left -= step


@pytest.fixture(scope="module")
def web(redis_service, log_dir):
    env = {**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": "secweb",
           "CROWDGATE_WEBHOOK_SECRET": SECRET, "CROWDGATE_WEBHOOK_SECRET_PREVIOUS": PREVIOUS,
           "CROWDGATE_ML_BASIC_AUTH_USER": ML_USER, "CROWDGATE_ML_BASIC_AUTH_PASSWORD": ML_PASSWORD,
           "LABEL_STUDIO_API_KEY": LS_KEY, "OPENAI_API_KEY": OPENAI_KEY, "CROWDGATE_LOG_LEVEL": "DEBUG",
           "LABEL_STUDIO_URL": f"http://127.0.0.1:{free_port()}"}
    service = start_web(env, log_dir, workers=1)
    yield service
    service.stop()


def test_chunked_bodies_are_held_to_the_size_limits(web):
    """Without a Content-Length the receiver and /predict still read at most their limit plus one byte: 413."""
    url = f"{web.url}/hooks/labelstudio"
    headers = {"X-Crowdgate-Secret": SECRET, "Content-Type": "application/json"}
    limit = 10 * 1024 * 1024
    small = json.dumps(_event(30)).encode()
    reply = requests.post(url, data=_chunks(len(small) + 100, small), headers=headers, timeout=60)
    assert reply.status_code == 200, reply.text  # trailing blanks: still one valid JSON body
    assert requests.post(url, data=_chunks(limit, small), headers=headers, timeout=60).status_code == 200
    for size in (limit + 1, 30 * 1024 * 1024):
        reply = requests.post(url, data=_chunks(size, small), headers=headers, timeout=60)
        assert reply.status_code == 413 and reply.json() == {"error": f"body larger than {limit} bytes"}
    ml_limit = 64 * 1024 * 1024
    body = json.dumps(PREDICT).encode()
    reply = requests.post(f"{web.url}/predict", data=_chunks(ml_limit + 1, body), timeout=120,
                          headers={"Authorization": GOOD_AUTH, "Content-Type": "application/json"})
    assert reply.status_code == 413 and reply.json() == {"error": f"body larger than {ml_limit} bytes"}


def test_no_secret_in_the_web_servers_log(web):
    good = {"X-Crowdgate-Secret": SECRET, "Content-Type": "application/json"}
    session = requests.Session()
    answers = [
        session.post(f"{web.url}/hooks/labelstudio", json=_event(40), headers=good, timeout=10),
        session.post(f"{web.url}/hooks/labelstudio", json=_event(41), headers={"X-Crowdgate-Secret": PREVIOUS},
                     timeout=10),
        session.post(f"{web.url}/hooks/labelstudio", json=_event(42), headers={"X-Crowdgate-Secret": SECRET + "x"},
                     timeout=10),
        session.post(f"{web.url}/hooks/labelstudio", data=b"\xff{", headers=good, timeout=10),
        session.get(f"{web.url}/health", headers={"Authorization": GOOD_AUTH}, timeout=10),
        session.get(f"{web.url}/health", headers={"Authorization": "Basic é" + ML_PASSWORD}, timeout=10),
        session.get(f"{web.url}/versions", auth=(ML_USER, SECRET), timeout=10),
        session.post(f"{web.url}/setup", json={**SETUP, "access_token": ACCESS_TOKEN}, timeout=10,
                     headers={"Authorization": GOOD_AUTH}),
        session.post(f"{web.url}/setup", json={**SETUP, "schema": "<View", "access_token": ACCESS_TOKEN},
                     timeout=10, headers={"Authorization": GOOD_AUTH}),
        session.post(f"{web.url}/predict", json={**PREDICT, "label_config": "<x"}, timeout=10,
                     headers={"Authorization": GOOD_AUTH}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 401, 400, 200, 401, 401, 200, 422, 422]
    for reply in answers:
        _assert_nothing_secret(reply.text + str(dict(reply.headers)), f"the answer to {reply.request.url}")
    log = Path(web.log_path).read_text(errors="replace")
    assert "POST /hooks/labelstudio" in log  # the access log is there to be searched
    _assert_nothing_secret(log, str(web.log_path))
