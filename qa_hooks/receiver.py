"""The blueprint that takes Label Studio's project webhooks.

Label Studio delivers a webhook inside the annotator's own submit request, waits 1 s and never retries,
so this handler only checks, persists and answers: all the work happens in an RQ job.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify, request
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.exceptions import RequestEntityTooLarge

from core.settings import Settings
from core.web_requests import BodyError, install_json_errors, read_limited, require_json
from qa_hooks.events import PayloadError, parse_body
from qa_hooks.inbox import Inbox
from qa_hooks.jobs import process_event

SECRET_HEADER = "X-Crowdgate-Secret"
log = logging.getLogger(__name__)
hooks = Blueprint("hooks", __name__)


def _settings() -> Settings:
    return current_app.extensions["crowdgate.hooks"]["settings"]


def _inbox() -> Inbox:
    return current_app.extensions["crowdgate.hooks"]["inbox"]


def _error(reason: str, status: int):
    return jsonify({"error": reason}), status


@hooks.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge):
    return _error(f"body larger than {_settings().max_webhook_bytes} bytes", 413)


def secret_matches(given: str, settings: Settings) -> bool:
    """``given`` equals the current secret or, during a rotation, the previous one: exactly (no trimming), in
    constant time (both are always compared), and never an empty one."""
    if not settings.webhook_secret:
        return False
    try:
        given_bytes = given.encode("latin-1")  # WSGI hands header bytes over as latin-1 text: the bytes sent
    except UnicodeEncodeError:
        given_bytes = given.encode("utf-8", "surrogateescape")
    matched = False
    for secret in (settings.webhook_secret, settings.webhook_secret_previous):
        equal = hmac.compare_digest(given_bytes, secret.encode("utf-8", "surrogateescape"))
        matched |= equal and bool(secret)
    return matched


@hooks.post("/hooks/labelstudio")
def receive():
    """401 wrong or missing secret, 413 body over the limit, 415 not JSON, 400 not strict JSON, 422 a JSON body
    the job could not process (the field is named), 503 Redis unavailable; 200 queued or duplicate."""
    started = time.perf_counter()
    settings = _settings()
    if not secret_matches(request.headers.get(SECRET_HEADER, ""), settings):
        return _error(f"missing or wrong {SECRET_HEADER} header", 401)
    limit = settings.max_webhook_bytes
    if request.content_length is not None and request.content_length > limit:
        return _error(f"body larger than {limit} bytes", 413)
    try:
        require_json(request)
        # Chunked bodies have no Content-Length: the limit holds for whatever the stream carries.
        event = parse_body(read_limited(request.stream, limit))
    except BodyError as exc:
        return _error(exc.reason, exc.status)
    except PayloadError as exc:
        return _error(exc.reason, exc.status)
    try:
        status, job_id = _inbox().put(event)
    except redis.RedisError as exc:
        log.error("could not persist %s for project %s: %s", event.action, event.project, exc)
        # Job and dedup marks go in one transaction: the event is queued whole or not at all, never half.
        return _error("crowdgate could not confirm the event was persisted (Redis unavailable): it is queued "
                      "whole or not at all, and reconciliation with Label Studio recovers it", 503)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return jsonify({"status": status, "job": job_id, "action": event.action, "ms": round(elapsed_ms, 2)}), 200


@hooks.get("/hooks/health")
def health():
    try:
        _inbox().redis.ping()
    except redis.RedisError as exc:
        return _error(f"redis unavailable: {exc}", 503)
    return jsonify({"status": "UP"})


def init_hooks(app, settings: Settings, job: Callable[..., Any] = process_event) -> None:
    """Attach the receiver and its Redis connection to ``app``; ``job`` is the RQ job run for each event."""
    if not settings.webhook_secret:
        log.warning("CROWDGATE_WEBHOOK_SECRET is empty: every webhook will be refused with 401")
    install_json_errors(app)
    # No client-side retries: resending a write whose first try may have landed is the inbox's decision.
    connection = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    inbox = Inbox(connection, settings.events_queue, settings.key_prefix, settings.dedup_ttl_s, job)
    app.extensions["crowdgate.hooks"] = {"settings": settings, "inbox": inbox}
    current = app.config.get("MAX_CONTENT_LENGTH")
    app.config["MAX_CONTENT_LENGTH"] = max(current or 0, settings.max_webhook_bytes)
    app.register_blueprint(hooks)
