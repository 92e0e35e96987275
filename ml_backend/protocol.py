"""Label Studio's ML backend protocol, as Label Studio 1.23.2 speaks it (captured in tests/fixtures).

``GET /health``, ``POST /setup`` (sent before every predict batch: must be fast, so models load lazily),
``POST /predict`` (exactly one result per task, in order), ``POST /webhook`` (project events and
``START_TRAINING``) and ``GET /versions``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify, request
from rq import Queue, Retry

from core.keys import Keys
from core.settings import Settings, current
from ml_backend.bulk import prelabel_import
from ml_backend.new_tasks import difficulty_job, has_difficulty_model
from ml_backend.prelabeler import Prelabeler
from ml_backend.training import train_job

log = logging.getLogger(__name__)
protocol = Blueprint("ml_backend", __name__)


def _state() -> dict[str, Any]:
    return current_app.extensions["crowdgate.ml"]


def _error(reason: str, status: int):
    return jsonify({"error": reason}), status


def project_id(value: Any) -> int | None:
    """Label Studio names the project ``"<id>.<timestamp>"`` in /setup and /predict."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        if head.isdigit():
            return int(head)
    return None


@protocol.before_request
def _check_basic_auth():
    settings: Settings = _state()["settings"]
    if not settings.ml_auth_required:
        return None
    header = request.headers.get("Authorization", "")
    user = password = ""
    if header.startswith("Basic "):
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    ok = hmac.compare_digest(user.encode(), settings.ml_basic_auth_user.encode())
    ok &= hmac.compare_digest(password.encode(), settings.ml_basic_auth_password.encode())
    if not ok:
        response = jsonify({"error": "basic auth required"})
        response.headers["WWW-Authenticate"] = 'Basic realm="crowdgate"'
        return response, 401
    return None


def _json_object() -> dict[str, Any] | None:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


@protocol.get("/health")
@protocol.get("/")
def health():
    return jsonify({"status": "UP", "model_class": "crowdgate", "model_version": _state()["model"].model_version})


@protocol.post("/setup")
def setup():
    body = _json_object()
    if body is None:
        return _error("body must be a JSON object", 400)
    pid = project_id(body.get("project"))
    schema = body.get("schema")
    if pid is not None and isinstance(schema, str):
        _state()["projects"][pid] = {"label_config": schema, "hostname": body.get("hostname")}
    model = _state()["model"]
    uid = body.get("project") if isinstance(body.get("project"), str) else None
    version = model.version_for(pid, schema if isinstance(schema, str) else None, uid)
    return jsonify({"model_version": version})


@protocol.post("/predict")
def predict():
    body = _json_object()
    if body is None:
        return _error("body must be a JSON object", 400)
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        return _error("'tasks' must be a list of task objects", 400)
    label_config = body.get("label_config")
    if not isinstance(label_config, str):
        # A predict without a prior /setup still works when the config comes along or was set up before.
        known = _state()["projects"].get(project_id(body.get("project")))
        label_config = known["label_config"] if known else None
    if not label_config:
        return _error("'label_config' is missing and this project was never set up", 400)
    model = _state()["model"]
    pid = project_id(body.get("project"))
    uid = body.get("project") if isinstance(body.get("project"), str) else None
    try:
        results = model.predict(tasks, label_config, project=pid, project_uid=uid)
    except Exception:
        # The model chain falls back on its own; should it still fail, Label Studio gets an empty prediction per
        # task rather than a 500, which would fail the whole batch for the annotator.
        log.exception("predict failed for project %s", pid)
        results = [{"result": [], "score": 0.0, "model_version": model.model_version} for _ in tasks]
    version = results[0]["model_version"] if results else model.model_version
    return jsonify({"results": results, "model_version": version})


@protocol.post("/webhook")
def webhook():
    body = _json_object()
    if body is None:
        return _error("body must be a JSON object", 400)
    action = body.get("action")
    if not isinstance(action, str):
        return _error("missing field 'action'", 400)
    project = body.get("project")
    pid = project_id(project.get("id") if isinstance(project, dict) else project)
    trainer = _state()["trainer"]
    if action == "START_TRAINING":
        if pid is None:
            return _error("START_TRAINING needs 'project' with an integer 'id'", 400)
        if trainer is None:
            return _error("training needs Redis (REDIS_URL) for its job queue", 503)
        try:
            job = trainer.start(pid)
        except redis.RedisError as exc:
            return _error(f"could not queue the training job: {exc}", 503)
        return jsonify({"status": "queued", "action": action, "job": job}), 201
    # Label Studio forwards every project event here; the webhook receiver in qa_hooks records them. Here new tasks
    # get a difficulty from the project's model and a large import is pre-labelled in the background, and
    # annotations count towards the next retraining.
    if action == "TASKS_CREATED" and pid is not None and trainer is not None:
        ids = [t["id"] for t in body.get("tasks") or [] if isinstance(t, dict) and isinstance(t.get("id"), int)]
        has_llm = getattr(_state()["model"], "llm", None) is not None
        queued: dict[str, str] = {}
        try:
            if ids and has_difficulty_model(pid, getattr(_state()["model"], "model_root", None)):
                queued["difficulty"] = trainer.difficulty(pid, ids)
            if has_llm and len(ids) >= _state()["settings"].prelabel_min_tasks:
                queued["prelabel"] = trainer.prelabel(pid, ids)
        except redis.RedisError as exc:
            return _error(f"could not queue work on the import: {exc}", 503)
        if queued:
            return jsonify({"status": "queued", "action": action, **queued}), 200
    if action in {"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED"} and pid is not None \
            and trainer is not None:
        try:
            job = trainer.count(pid, len(body["annotation"]) if isinstance(body.get("annotation"), list) else 1)
        except redis.RedisError:
            log.warning("could not count annotations towards retraining (Redis unavailable)")
            job = None
        return jsonify({"status": "counted", "action": action, "retraining": job}), 200
    return jsonify({"status": "ignored", "action": action}), 200


@protocol.get("/versions")
def versions():
    return jsonify({"versions": [_state()["model"].model_version]})


class Trainer:
    """Queues the backend's slow work: ``train_job`` on START_TRAINING and after every ``every`` annotations,
    ``difficulty_job`` for new tasks of a project with a difficulty model, ``prelabel_import`` after a large
    import."""

    def __init__(self, connection: redis.Redis, prefix: str, every: int, queue: str | None = None) -> None:
        # Without a queue name, the process's settings give it (CROWDGATE_ML_QUEUE), as the worker reads it.
        queue = queue or current().ml_queue
        self.redis = connection
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.every = every
        self.queue = Queue(queue, connection=connection)

    def start(self, project: int) -> str:
        job = self.queue.enqueue(train_job, project, self.prefix, job_timeout=1800, retry=Retry(max=2, interval=60),
                                 description=f"train project {project}")
        self.redis.set(self.keys.since_training(project), 0)
        return job.id

    def prelabel(self, project: int, task_ids: list[int]) -> str:
        job = self.queue.enqueue(prelabel_import, project, task_ids, job_timeout=6 * 3600,
                                 retry=Retry(max=2, interval=60), description=f"pre-label import of project {project}")
        return job.id

    def difficulty(self, project: int, task_ids: list[int]) -> str:
        job = self.queue.enqueue(difficulty_job, project, task_ids, self.prefix, job_timeout=1800,
                                 retry=Retry(max=2, interval=60),
                                 description=f"difficulty of new tasks of project {project}")
        return job.id

    def count(self, project: int, annotations: int) -> str | None:
        if self.redis.incrby(self.keys.since_training(project), annotations) < self.every:
            return None
        return self.start(project)


def init_ml_backend(app, settings: Settings, model: Any = None) -> None:
    """Attach the protocol to ``app``; ``model`` replaces the one the settings describe (tests). Without a Redis
    URL the backend predicts but cannot train."""
    trainer = None
    if settings.redis_url:
        connection = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        trainer = Trainer(connection, settings.key_prefix, settings.retrain_every, settings.ml_queue)
    app.extensions["crowdgate.ml"] = {
        "settings": settings,
        "model": model or Prelabeler.from_settings(settings),
        "projects": {},
        "trainer": trainer,
    }
    current = app.config.get("MAX_CONTENT_LENGTH")
    app.config["MAX_CONTENT_LENGTH"] = max(current or 0, settings.ml_max_body_bytes)
    app.register_blueprint(protocol)
