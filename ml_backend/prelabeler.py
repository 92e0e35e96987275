"""Pick, for each request, the best pre-labeller a project has: the LLM, its trained classifier, or zero-shot.

- An LLM (any OpenAI-compatible endpoint: ``OPENAI_BASE_URL`` + ``CROWDGATE_LLM_MODEL``) labels every config it
  can; a task it has no valid answer for in time falls back to the next model, so Label Studio always gets one
  result per task.
- Without an LLM, a Choices config gets the project's embedded classifier once ``crowdgate-ml`` has trained one
  (``ml_backend.training``), and zero-shot embedding similarity before that.
- Fields crowdgate writes into task data (``crowdgate_*``, e.g. the predicted difficulty) are removed before a
  model sees the task, so they change neither prompts nor cache keys.
- The LLM's prompt gets the project's guideline and a few gold items as examples, from what crowdgate recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import redis

from core.settings import Settings
from ml_backend import artifacts
from ml_backend.classifier import EmbeddingClassifier
from ml_backend.labeling import choice_region
from ml_backend.llm import LLMPredictor, LLMSettings
from ml_backend.zero_shot import ZeroShotChoices
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore

log = logging.getLogger(__name__)
CLASSIFIER = "classifier"
CROWDGATE_FIELD_PREFIX = "crowdgate_"


def model_task(task: dict[str, Any]) -> dict[str, Any]:
    """The task as a model should see it: without the fields crowdgate writes into its data."""
    data = task.get("data") or {}
    if not any(key.startswith(CROWDGATE_FIELD_PREFIX) for key in data):
        return task
    return {**task, "data": {k: v for k, v in data.items() if not k.startswith(CROWDGATE_FIELD_PREFIX)}}


class ProjectKnowledge:
    """What crowdgate's Redis knows of a project that a prompt can use: the annotation guideline Label Studio
    keeps as ``expert_instruction`` (recorded from webhook payloads) and gold items as worked examples."""

    def __init__(self, connection: redis.Redis, prefix: str = "cg", examples: int = Settings.llm_examples,
                 ttl_s: float = 60.0) -> None:
        self.store = SubmissionStore(connection, prefix)
        self.ledger = Ledger(connection, prefix)
        self.examples_wanted = examples
        self.ttl_s = ttl_s
        self._cache: dict[int, tuple[float, str, list]] = {}

    def context(self, project: int, label_config: str) -> tuple[str, list[tuple[dict[str, Any], list[dict]]]]:
        """(instructions, [(task, gold result), ...]) for ``project``, refreshed every ``ttl_s`` seconds."""
        cached = self._cache.get(project)
        if cached and time.monotonic() - cached[0] < self.ttl_s:
            return cached[1], cached[2]
        try:
            instructions = self.store.project_info(project).get("expert_instruction", "")
            examples = []
            for task in self.ledger.gold_tasks(project):
                if len(examples) >= self.examples_wanted:
                    break
                info = self.store.task_info(project, task)
                gold = self.ledger.gold(project, task, label_config)
                if info is not None and gold:
                    examples.append((model_task({"id": task, "data": info.data}), gold))
        except redis.RedisError as exc:
            log.warning("no instructions or examples for project %s (Redis unavailable: %s)", project, exc)
            return "", []
        self._cache[project] = (time.monotonic(), instructions, examples)
        return instructions, examples


class Prelabeler:
    """The model object behind ``/setup`` and ``/predict``."""

    def __init__(self, llm: LLMPredictor | None = None, zero_shot: ZeroShotChoices | None = None,
                 model_root: Path | None = None, knowledge: ProjectKnowledge | None = None) -> None:
        self.llm = llm
        self.zero_shot = zero_shot or ZeroShotChoices()
        self.model_root = model_root
        self.knowledge = knowledge
        self._classifiers: dict[int, tuple[str, EmbeddingClassifier]] = {}
        self._ignored: set[tuple[int, str, str, str | None]] = set()  # mismatched artifacts already logged
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Prelabeler:
        # The LLM is on when a model is named; OPENAI_BASE_URL / OPENAI_API_KEY say where and how.
        llm = LLMPredictor(LLMSettings.from_settings(settings)) if settings.llm_model else None
        knowledge = None
        if llm and settings.redis_url:
            connection = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
            knowledge = ProjectKnowledge(connection, settings.key_prefix, examples=settings.llm_examples)
        return cls(llm=llm, knowledge=knowledge, model_root=Path(settings.model_dir))

    @property
    def model_version(self) -> str:
        return self.llm.model_version if self.llm else self.zero_shot.model_version

    def classifier(self, project: int | None, label_config: str | None = None,
                   project_uid: str | None = None) -> EmbeddingClassifier | None:
        """The project's newest trained classifier, loaded once per version; None when there is none or when
        it was trained for another Label Studio project or label config (``artifacts.mismatch``)."""
        if project is None:
            return None
        version = artifacts.latest_version(project, CLASSIFIER, root=self.model_root)
        if version is None:
            return None
        with self._lock:
            cached = self._classifiers.get(project)
        if cached and cached[0] == version:
            model = cached[1]
        else:
            model = artifacts.load(project, CLASSIFIER, version, root=self.model_root)
            with self._lock:
                self._classifiers[project] = (version, model)
        if label_config is None:
            return model
        reason = artifacts.mismatch(model, label_config, project_uid)
        if reason is None:
            return model
        key = (project, version, artifacts.config_hash(label_config), project_uid)
        with self._lock:
            first = key not in self._ignored
            self._ignored.add(key)
        if first:
            log.warning("ignoring classifier %s of project %s: %s", version, project, reason)
        return None

    def version_for(self, project: int | None, label_config: str | None = None, project_uid: str | None = None) -> str:
        """What ``/setup`` answers: Label Studio asks for new predictions when this changes."""
        if self.llm:
            return self.llm.model_version
        try:
            model = self.classifier(project, label_config, project_uid)
        except Exception:  # an unreadable artifact must not fail /setup: zero-shot answers meanwhile
            log.exception("could not load the classifier of project %s", project)
            model = None
        return model.model_version if model else self.zero_shot.model_version

    def predict(self, tasks: list[dict[str, Any]], label_config: str, project: int | None = None,
                project_uid: str | None = None) -> list[dict[str, Any]]:
        """Exactly one prediction per task, in order.

        A model that fails hands its tasks down the chain (LLM, classifier, zero-shot); when even zero-shot
        fails a task gets an empty prediction, so Label Studio always gets an answer for every task.
        """
        tasks = [model_task(t) for t in tasks]
        results: list[dict[str, Any] | None] = [None] * len(tasks)
        if self.llm:
            try:
                instructions, examples = "", []
                if self.knowledge is not None and project is not None:
                    instructions, examples = self.knowledge.context(project, label_config)
                answers = self.llm.predict(tasks, label_config, project=str(project or ""),
                                           instructions=instructions, examples=examples)
                results = list(answers)
            except Exception:
                log.exception("LLM pre-labelling failed for project %s: falling back", project)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            fallback = self._embedded([tasks[i] for i in missing], label_config, project, project_uid)
            for i, prediction in zip(missing, fallback, strict=True):
                results[i] = prediction
        return [r for r in results if r is not None]

    def _embedded(self, tasks: list[dict[str, Any]], label_config: str, project: int | None,
                  project_uid: str | None) -> list[dict[str, Any]]:
        if not tasks:
            return []
        try:
            model = self.classifier(project, label_config, project_uid)
            if model is not None:
                return [
                    {
                        "result": [choice_region(label_config, model.control.name, list(p.choices))]
                        if p.choices else [],
                        "score": round(float(p.score), 4),
                        "model_version": model.model_version,
                    }
                    for p in model.predict(tasks)
                ]
        except Exception:
            log.exception("classifier of project %s failed: zero-shot answers instead", project)
        try:
            return self.zero_shot.predict(tasks, label_config)
        except Exception:
            log.exception("zero-shot pre-labelling failed for project %s: empty predictions", project)
            return [{"result": [], "score": 0.0, "model_version": self.zero_shot.model_version} for _ in tasks]
