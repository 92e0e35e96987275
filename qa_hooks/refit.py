"""The per-project Dawid–Skene refit job: one fit of every categorical label, stored, and what the services read.

Every ``CROWDGATE_REFIT_EVERY`` new labels of a project (later every ``CROWDGATE_REFIT_FRACTION`` growth of its
labels) the event path queues one RQ job, :func:`refit_project` (a dedup key keeps at most one queued per
project, so the webhook path never waits), and the cron refits every project with new labels. The job reads every
live categorical submission of the project in pipelined batches, fits :class:`SemiSupervisedDawidSkene`
warm-started from the stored fit, and stores a :class:`ProjectFit` (``Keys.truth_fit``: each annotator's
confusion matrix and expected counts, the class prior) and every task's posterior (``Keys.truth_posteriors``).

The model is Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using the EM
algorithm", Applied Statistics 28(1), with two additions:

- semi-supervised: gold answers enter as known truths (Wang et al. 2011 call it "EM with known labels"): a gold
  task's posterior is clamped to its answer in every M-step, so gold teaches the confusion matrices of everyone
  who labelled it, not only a separate gold accuracy;
- empirical Bayes: each worker's confusion rows have a Dirichlet prior centred on the pooled crowd's
  (Raykar et al. 2010, "Learning from crowds", JMLR 11), so a worker with few labels is the crowd's average, and
  the class prior has a heavy Dirichlet prior; tasks with one label (and no gold) are left out of the M-step:
  they say nothing about who is reliable.

A fit is checked against the label-flipped solution EM can slide into: the pooled crowd must give each true
class its own label more often than any other, the fit must agree with majority vote on most tasks, and where
there is gold, the fit's answers on the gold tasks (from the labels alone, before clamping) must be about as right
as majority vote's; otherwise EM restarts from the vote shares.

What uses the stored fit: the task's consensus and confidence and each annotator's peer score
(:func:`qa_hooks.scoring.score_task`), reliability and its interval (:meth:`qa_hooks.ledger.Ledger.reliabilities`),
the ``one_option`` signal's class prior, the stopping rule's worker models and matched threshold
(:mod:`routing.router`), and the skill used to pick an annotator (:mod:`routing.assignment`, through the
reliabilities). Between refits the posterior of a task is :meth:`ProjectFit.posterior` over its current labels
(annotators new since the fit count as the pooled crowd): the incremental update works from the last fit.
:class:`routing.stopping.OnlineWorkerEstimator` and ``bench/overlap.py`` run this same fit on the same schedule.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import redis
from redis.client import Pipeline
from rq import Queue

from core.keys import Keys
from core.settings import current
from qa_hooks.fit import FitSettings, ProjectFit, SemiSupervisedDawidSkene, stored_fit
from qa_hooks.ledger import Ledger
from qa_hooks.llm_annotator import LLMAnswer, calibrations, read_llm_answers
from qa_hooks.scoring import categorical, label_of
from qa_hooks.store import LuaScript, SubmissionStore

__all__ = [
    "ProjectLabels",
    "fit_labels",
    "llm_calibration",
    "maybe_enqueue_refit",
    "queue_due_check",
    "read_labels",
    "refit_all",
    "refit_job_id",
    "refit_project",
    "with_llm_answers",
]

log = logging.getLogger(__name__)

# A queued refit's dedup key outlives any sane queue wait; a lost job frees the project after this long.
QUEUED_TTL_S = 600
REFIT_JOB_TIMEOUT_S = 300
# Tasks read per call of the label script: each call holds Redis for a few milliseconds only.
READ_CHUNK = 500

# Every live label of some tasks, read and decoded inside Redis (one call per chunk of tasks rather than a command
# per submission, the refit's main cost): for each submission of each task (ARGV[6..]) that is neither skipped nor
# a ground-truth annotation, its task, annotator, updated_at and the single choice its result makes on the control
# ARGV[5] (as qa_hooks.scoring.label_of reads it). ARGV[1..4]: the (head, tail) parts of a submission's and of a
# task index's key; KEYS[1]: the project's shared trimmed results. Records of the old format (``json``) too.
_READ_LABELS = LuaScript("""
local out = {}
local function choice(result)
  if type(result) ~= 'table' then return nil end
  for _, region in ipairs(result) do
    if type(region) == 'table' and region['from_name'] == ARGV[5] and type(region['value']) == 'table' then
      local choices = region['value']['choices']
      if type(choices) == 'table' and #choices == 1 and type(choices[1]) ~= 'userdata' then
        return tostring(choices[1])
      end
    end
  end
  return nil
end
for i = 6, #ARGV do
  local task = ARGV[i]
  for _, uid in ipairs(redis.call('ZRANGE', ARGV[3] .. task .. ARGV[4], 0, -1)) do
    local row = redis.call('HMGET', ARGV[1] .. uid .. ARGV[2], 'annotator', 'updated_at', 'x', 'r', 'rk', 'json')
    local who, when, result = row[1], row[2], nil
    if row[6] then
      local sub = cjson.decode(row[6])
      if sub['was_cancelled'] ~= true and sub['ground_truth'] ~= true then
        who, when, result = tostring(sub['annotator']), tostring(sub['updated_at']), sub['result']
      end
    elseif who and not (row[3] and (string.find(row[3], 'c', 1, true) or string.find(row[3], 'g', 1, true))) then
      local text = row[4] or (row[5] and redis.call('HGET', KEYS[1], row[5]))
      if text then result = cjson.decode(text) end
    end
    local label = choice(result)
    if label then
      table.insert(out, task); table.insert(out, who); table.insert(out, when); table.insert(out, label)
    end
  end
end
return out
""")


def _connection(connection: redis.Redis | None) -> redis.Redis:
    """The given connection, or the running RQ job's."""
    if connection is not None:
        return connection
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError("no connection given and not running inside an RQ job")
    return job.connection


# -- reading a project's labels ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectLabels:
    """Every live categorical label of a project, and its gold, as the refit takes them."""

    classes: tuple[str, ...]
    tasks: list[int]
    workers: list[str]
    task: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    gold: dict[int, int]  # task code -> class code
    seq: int  # the project's write sequence before the read


def read_labels(connection: redis.Redis, prefix: str, project: int, chunk: int = READ_CHUNK) -> ProjectLabels | None:
    """Read a project's categorical labels (each annotator's latest, not skipped, not ground truth) and gold, the
    labels decoded inside Redis a chunk of tasks per call; None when its config is not one single-choice control."""
    keys = Keys(prefix)
    pipe = connection.pipeline(transaction=False)
    pipe.get(keys.write_seq(project))
    pipe.hget(keys.project_info(project), "label_config")
    pipe.smembers(keys.tasks(project))
    pipe.hgetall(keys.annotation_gold(project))
    pipe.hgetall(keys.meta_gold(project))
    seq_raw, config_raw, tasks_raw, annotation_gold, meta_gold = pipe.execute()
    cat = categorical(config_raw.decode()) if config_raw else None
    if cat is None:
        return None
    label_config = config_raw.decode()
    tasks = sorted(int(t) for t in tasks_raw)
    latest: dict[tuple[int, str], tuple[str, str]] = {}  # (task, annotator) -> (updated_at, label)
    sub_head, sub_tail = keys.submission_parts(project)
    index_head, index_tail = keys.task_submissions_parts(project)
    for start in range(0, len(tasks), chunk):
        part = tasks[start:start + chunk]
        flat = _READ_LABELS(connection, [keys.results(project)],
                            [sub_head, sub_tail, index_head, index_tail, cat.control, *part])
        for i in range(0, len(flat), 4):
            task, who, when, label = int(flat[i]), flat[i + 1].decode(), flat[i + 2].decode(), flat[i + 3].decode()
            if label not in cat.classes:
                continue
            kept = latest.get((task, who))
            if kept is None or when >= kept[0]:
                latest[(task, who)] = (when, label)
    class_index = {c: i for i, c in enumerate(cat.classes)}
    task_index = {t: i for i, t in enumerate(tasks)}
    gold: dict[int, int] = {}
    for raw_task in set(annotation_gold) | set(meta_gold):
        task = int(raw_task)
        answer = Ledger.gold_from(annotation_gold.get(raw_task), meta_gold.get(raw_task), label_config)
        label = label_of(answer, cat.control) if answer else None
        if label in class_index and task in task_index:
            gold[task_index[task]] = class_index[label]
    workers = sorted({who for _, who in latest}, key=lambda a: (len(a), a))
    worker_index = {w: i for i, w in enumerate(workers)}
    items = list(latest.items())
    return ProjectLabels(
        cat.classes, tasks, workers,
        np.fromiter((task_index[t] for (t, _), _ in items), dtype=np.int64, count=len(items)),
        np.fromiter((worker_index[w] for (_, w), _ in items), dtype=np.int64, count=len(items)),
        np.fromiter((class_index[lb] for _, (_, lb) in items), dtype=np.int64, count=len(items)),
        gold, int(seq_raw or 0))


def with_llm_answers(labels: ProjectLabels, answers: list[LLMAnswer]) -> ProjectLabels:
    """``labels`` with the LLM pre-labels' answers as one more annotator per model and prompt version
    (:mod:`qa_hooks.llm_annotator`): answers outside the classes or on unknown tasks are left out."""
    class_index = {c: i for i, c in enumerate(labels.classes)}
    task_index = {t: i for i, t in enumerate(labels.tasks)}
    kept = [a for a in answers if a.label in class_index and a.task in task_index]
    if not kept:
        return labels
    llm_workers = sorted({a.worker for a in kept})
    workers = [*labels.workers, *llm_workers]
    worker_index = {w: i for i, w in enumerate(workers)}
    return replace(
        labels, workers=workers,
        task=np.concatenate([labels.task, np.array([task_index[a.task] for a in kept], dtype=np.int64)]),
        worker=np.concatenate([labels.worker, np.array([worker_index[a.worker] for a in kept], dtype=np.int64)]),
        label=np.concatenate([labels.label, np.array([class_index[a.label] for a in kept], dtype=np.int64)]))


def llm_calibration(labels: ProjectLabels, answers: list[LLMAnswer]) -> dict[str, dict[str, Any]]:
    """Each LLM pseudo-worker's calibration on the project's gold (ECE and reliability-diagram bins)."""
    gold = {labels.tasks[t]: labels.classes[c] for t, c in labels.gold.items()}
    return {w: c.to_dict() for w, c in calibrations(answers, gold).items()}


# -- fitting and storing -------------------------------------------------------------------------------------------


def fit_labels(labels: ProjectLabels, previous: ProjectFit | None = None,
               settings: FitSettings | None = None) -> tuple[ProjectFit, np.ndarray]:
    """The refit of a project's labels, warm-started from ``previous`` when its classes match; returns the fit
    and the task posteriors (tasks × K, gold clamped)."""
    started = time.perf_counter()
    model = SemiSupervisedDawidSkene(len(labels.classes), settings)
    init = previous.warm_start(labels.workers) if previous is not None and previous.classes == labels.classes \
        else None
    model.fit(labels.task, labels.worker, labels.label, n_tasks=len(labels.tasks), n_workers=len(labels.workers),
              gold=labels.gold, init=init)
    fit = ProjectFit.from_model(model, labels.classes, labels.workers, n_labels=len(labels.label),
                                n_tasks=len(labels.tasks), n_gold=len(labels.gold), iterations=model.n_iter_,
                                restarted=model.restarted_, seconds=time.perf_counter() - started,
                                fitted_at=time.time())
    return fit, model.posteriors_



def refit_project(project: int, prefix: str = "cg", connection: redis.Redis | None = None,
                  settings: FitSettings | None = None) -> dict[str, Any]:
    """The RQ job: refit one project and store the fit and the posteriors; returns what it did.

    A fit is stored only if no fit of a later write was stored meanwhile (the cron's and an event's refit may
    overlap). The dedup key is cleared when the job is done; a job that fails leaves it to expire, so a refit that
    keeps failing is retried every ``QUEUED_TTL_S`` and not on every event.
    """
    connection = _connection(connection)
    keys = Keys(prefix)
    config = current()
    started = time.perf_counter()
    labels = read_labels(connection, prefix, project)
    if labels is None or not len(labels.label):
        # Nothing to fit (not one single-choice control, or no label yet): due again after as many new writes.
        seq = int(connection.get(keys.write_seq(project)) or 0) if labels is None else labels.seq
        pipe = connection.pipeline(transaction=True)
        pipe.hset(keys.truth_fit(project), mapping={"seq": seq, "next_seq": seq + config.refit_every})
        pipe.delete(keys.refit_queued(project))
        pipe.execute()
        return {"project": project, "refitted": False, "reason": "no categorical labels", "seq": seq}
    answers = read_llm_answers(connection, prefix, project)
    labels = with_llm_answers(labels, answers)
    calibration = json.dumps(llm_calibration(labels, answers), separators=(",", ":"))
    read_s = time.perf_counter() - started
    fit, posteriors = fit_labels(labels, stored_fit(connection, prefix, project), settings)
    next_seq = labels.seq + max(config.refit_every, math.ceil(config.refit_fraction * fit.n_labels))
    rounded = np.round(posteriors, 5)
    mapping = {task: json.dumps(row.tolist()) for task, row in zip(labels.tasks, rounded, strict=True)}
    stored = {"done": False}

    def write(pipe: Pipeline) -> None:
        newer = pipe.hget(keys.truth_fit(project), "seq")
        pipe.multi()
        if newer is None or int(newer) <= labels.seq:
            pipe.hset(keys.truth_fit(project), mapping={"model": fit.to_json(), "seq": labels.seq,
                                                        "next_seq": next_seq, "llm_calibration": calibration})
            pipe.hincrby(keys.truth_fit(project), "version", 1)
            pipe.delete(keys.truth_posteriors(project))
            if mapping:
                pipe.hset(keys.truth_posteriors(project), mapping=mapping)
            stored["done"] = True
        pipe.delete(keys.refit_queued(project))

    connection.transaction(write, keys.truth_fit(project))
    log.info("refit project %s: %d labels, %d gold, %d iterations in %.3f s%s", project, fit.n_labels, fit.n_gold,
             fit.iterations, fit.seconds, "" if stored["done"] else " (a later fit was stored meanwhile)")
    return {"project": project, "refitted": stored["done"], "labels": fit.n_labels, "tasks": fit.n_tasks,
            "gold": fit.n_gold, "iterations": fit.iterations, "restarted": fit.restarted,
            "fit_s": round(fit.seconds, 4), "read_s": round(read_s, 4), "seq": labels.seq, "next_seq": next_seq}


def queue_due_check(pipe: Any, prefix: str, project: int) -> None:
    """Queue the three reads :func:`maybe_enqueue_refit` decides on (the write sequence, the next fit's, whether
    one is queued already); pass it their replies."""
    keys = Keys(prefix)
    pipe.get(keys.write_seq(project))
    pipe.hget(keys.truth_fit(project), "next_seq")
    pipe.exists(keys.refit_queued(project))


def refit_job_id(prefix: str, project: int, seq: Any) -> str:
    """The RQ job id of the refit queued at write ``seq`` (what ``Keys.refit_queued`` holds)."""
    return f"{prefix}-refit-{project}-{seq}"


def maybe_enqueue_refit(connection: redis.Redis, prefix: str, project: int, seq: Any, next_seq: Any,
                        queued: Any = 0, queue_name: str | None = None, every: int | None = None) -> bool:
    """Queue :func:`refit_project` when the project's write sequence reached the next fit's (the first fit after
    ``every`` writes), unless one is already queued (a dedup key with a TTL); never waits for the refit."""
    config = current()
    seq = int(seq or 0)
    due_at = int(next_seq) if next_seq is not None else (every or config.refit_every)
    if seq < due_at or int(queued or 0):
        return False  # not due, or queued already (no round trip either way)
    if not connection.set(Keys(prefix).refit_queued(project), seq, nx=True, ex=QUEUED_TTL_S):
        return False
    Queue(queue_name or config.events_queue, connection=connection).enqueue(
        refit_project, project, prefix=prefix, job_id=refit_job_id(prefix, project, seq),
        job_timeout=REFIT_JOB_TIMEOUT_S, result_ttl=3600, failure_ttl=24 * 3600)
    return True


def refit_all(prefix: str = "cg", connection: redis.Redis | None = None) -> dict[int, dict[str, Any]]:
    """The cron's refit: every project whose writes went past its last fit's (or that has none)."""
    connection = _connection(connection)
    keys = Keys(prefix)
    done: dict[int, dict[str, Any]] = {}
    for project in SubmissionStore(connection, prefix).projects():
        pipe = connection.pipeline(transaction=False)
        pipe.get(keys.write_seq(project))
        pipe.hget(keys.truth_fit(project), "seq")
        seq, fitted = pipe.execute()
        if seq is not None and (fitted is None or int(seq) > int(fitted)):
            try:
                done[project] = refit_project(project, prefix, connection)
            except redis.ConnectionError:
                raise  # Redis is gone: the next run retries every project
            except Exception as exc:  # one project's failure must not stop the others' refits
                log.exception("refit of project %s failed", project)
                done[project] = {"project": project, "refitted": False, "error": f"{type(exc).__name__}: {exc}"}
    return done
