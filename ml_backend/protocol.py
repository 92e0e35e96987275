"""Label Studio's ML backend protocol, as Label Studio 1.23.2 speaks it (captured in tests/fixtures).

``GET /health``, ``POST /setup`` (sent before every predict batch: must be fast, so models load lazily),
``POST /predict`` (exactly one result per task, in order), ``POST /webhook`` (project events and
``START_TRAINING``) and ``GET /versions``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import xml.etree.ElementTree as ET
from typing import Any

import redis
from flask import Blueprint, current_app, jsonify, request
from rq import Queue, Retry

from core.keys import Keys
from core.label_config import LabelConfig, LabelConfigError
from core.settings import Settings, current
from core.web_requests import BodyError, install_json_errors, parse_json, read_limited, require_json
from ml_backend.bulk import prelabel_import
from ml_backend.new_tasks import difficulty_job, has_difficulty_model
from ml_backend.prelabeler import Prelabeler
from ml_backend.project_configs import ProjectConfigs
from ml_backend.training import train_job
from qa_hooks.llm_annotator import record_predictions

log = logging.getLogger(__name__)
protocol = Blueprint("ml_backend", __name__)
MAX_ID = 2**63 - 1  # Label Studio's ids are 64-bit database keys


def _state() -> dict[str, Any]:
    return current_app.extensions["crowdgate.ml"]


def _error(reason: str, status: int):
    return jsonify({"error": reason}), status


def project_id(value: Any) -> int | None:
    """Label Studio names the project ``"<id>.<timestamp>"`` in /setup and /predict, and by its integer id in
    /webhook; None when ``value`` is neither (ASCII digits only: ``"²".isdigit()`` is true) or out of range."""
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        value = int(head) if head.isascii() and head.isdigit() and len(head) <= 19 else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
        return value
    return None


def _project(value: Any) -> int | None:
    """The project a request names, None when it names none; a 422 when it names one unreadably."""
    if value is None:
        return None
    pid = project_id(value)
    if pid is None:
        raise BodyError(f"'project' must be an integer id (at most {MAX_ID}) or \"<id>.<timestamp>\"", 422)
    return pid


def basic_credentials(header: str) -> tuple[bytes, bytes]:
    """(user, password) of a ``Basic`` Authorization header; empty ones for any other or malformed header."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):  # ValueError: a header with non-ASCII characters
        return b"", b""
    user, _, password = decoded.partition(b":")
    return user, password


@protocol.before_request
def _check_basic_auth():
    settings: Settings = _state()["settings"]
    if not settings.ml_auth_required:
        return None
    user, password = basic_credentials(request.headers.get("Authorization", ""))
    # Both compared every time, in constant time: the answer says nothing about which one was wrong.
    ok = hmac.compare_digest(user, settings.ml_basic_auth_user.encode())
    ok &= hmac.compare_digest(password, settings.ml_basic_auth_password.encode())
    if not ok:
        response = jsonify({"error": "basic auth required"})
        response.headers["WWW-Authenticate"] = 'Basic realm="crowdgate"'
        return response, 401
    return None


def _json_object() -> dict[str, Any]:
    """The request's body as a JSON object: 415 not JSON, 413 over the limit (chunked too), 400 otherwise."""
    limit = _state()["settings"].ml_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise BodyError(f"body larger than {limit} bytes", 413)
    require_json(request)
    body = parse_json(read_limited(request.stream, limit))
    if not isinstance(body, dict):
        raise BodyError("body must be a JSON object", 400)
    return body


def _check_well_formed(label_config: str) -> None:
    """422 unless ``label_config`` is well-formed XML. Only the stdlib parser, and nothing kept: /setup must stay
    fast and small for any config, and the models parse (and cache) the config when they predict."""
    try:
        ET.fromstring(label_config)
    except ET.ParseError as exc:
        raise BodyError(f"'schema' is not a label config: XML error at line {exc.position[0]}, "
                        f"column {exc.position[1]}", 422) from None


@protocol.get("/health")
@protocol.get("/")
def health():
    return jsonify({"status": "UP", "model_class": "crowdgate", "model_version": _state()["model"].model_version})


@protocol.post("/setup")
def setup():
    body = _json_object()
    pid = _project(body.get("project"))
    schema = body.get("schema")
    if schema is not None:
        if not isinstance(schema, str):
            return _error("'schema' must be the label config as an XML string", 422)
        _check_well_formed(schema)
        if pid is not None:
            hostname = body.get("hostname")
            _state()["projects"].put(pid, schema, hostname if isinstance(hostname, str) else None)
    model = _state()["model"]
    uid = body.get("project") if isinstance(body.get("project"), str) else None
    version = model.version_for(pid, schema, uid)
    return jsonify({"model_version": version})


@protocol.post("/predict")
def predict():
    body = _json_object()
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        return _error("'tasks' must be a list of task objects", 400)
    for i, task in enumerate(tasks):
        if task.get("data") is not None and not isinstance(task["data"], dict):
            return _error(f"tasks[{i}].data must be an object", 422)
    pid = _project(body.get("project"))
    label_config = body.get("label_config")
    if label_config is not None and not isinstance(label_config, str):
        return _error("'label_config' must be an XML string", 422)
    if label_config is None:
        # A predict without a prior /setup still works when the config comes along or was set up before.
        known = _state()["projects"].get(pid)
        label_config = known.label_config if known else None
    if not label_config:
        return _error("'label_config' is missing and this project was never set up", 400)
    try:
        LabelConfig.parse(label_config)  # the models parse it too, from the same cache
    except LabelConfigError as exc:
        reason = str(exc)
        return _error(reason if len(reason) <= 300 else reason[:300] + "…", 422)
    model = _state()["model"]
    uid = body.get("project") if isinstance(body.get("project"), str) else None
    try:
        results = model.predict(tasks, label_config, project=pid, project_uid=uid)
    except Exception:
        # The model chain falls back on its own; should it still fail, Label Studio gets an empty prediction per
        # task rather than a 500, which would fail the whole batch for the annotator.
        log.exception("predict failed for project %s", pid)
        results = [{"result": [], "score": 0.0, "model_version": model.model_version} for _ in tasks]
    trainer = _state()["trainer"]
    if trainer is not None and pid is not None:
        # The LLM's answers enter the project's refit as a pseudo-annotator (qa_hooks.llm_annotator); Redis
        # being down loses them, never the predictions.
        try:
            record_predictions(trainer.redis, _state()["settings"].key_prefix, pid, tasks, results, label_config)
        except redis.RedisError:
            log.warning("could not store the LLM answers of project %s", pid, exc_info=True)
    version = results[0]["model_version"] if results else model.model_version
    return jsonify({"results": results, "model_version": version})


@protocol.post("/webhook")
def webhook():
    body = _json_object()
    action = body.get("action")
    if not isinstance(action, str):
        return _error("missing field 'action'", 400)
    project = body.get("project")
    pid = _project(project.get("id") if isinstance(project, dict) else project)
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
    tasks = body.get("tasks")
    if tasks is not None and not isinstance(tasks, list):
        return _error("'tasks' must be a list of task objects", 422)
    if action == "TASKS_CREATED" and pid is not None and trainer is not None:
        ids = [t["id"] for t in tasks or [] if isinstance(t, dict) and isinstance(t.get("id"), int)
               and project_id(t["id"]) is not None]
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
        "projects": ProjectConfigs(),
        "trainer": trainer,
    }
    current = app.config.get("MAX_CONTENT_LENGTH")
    app.config["MAX_CONTENT_LENGTH"] = max(current or 0, settings.ml_max_body_bytes)
    install_json_errors(app)
    app.register_blueprint(protocol)
