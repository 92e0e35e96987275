"""What the consensus export needs, read from crowdgate's Redis alone (Label Studio may be down).

One pipeline for the project (its stored info, gold, tasks), then one pipeline per ``TASKS_PER_READ`` tasks
(each task's stored data, score and route, and the chunk's refit posteriors), then the consensus submissions
of non-categorical tasks in pipelines of the same size. Nothing here writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import redis

from core.keys import Keys
from crowdgate.export.snapshot import ProjectState, TaskState
from qa_hooks.fit import stored_fit
from qa_hooks.ledger import Ledger
from qa_hooks.scoring import categorical
from qa_hooks.store import SubmissionStore
from routing.state import RoutingState

__all__ = ["TASKS_PER_READ", "known_projects", "read_state"]

TASKS_PER_READ = 1000


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _s(value: bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def known_projects(connection: redis.Redis, prefix: str) -> list[int]:
    return sorted(int(p) for p in connection.smembers(Keys(prefix).projects()))


def read_state(connection: redis.Redis, prefix: str, project: int) -> ProjectState:
    """Every task crowdgate scored in ``project``, with what the export builds its rows from."""
    keys, store, ledger, routing = Keys(prefix), SubmissionStore(connection, prefix), Ledger(connection, prefix), \
        RoutingState(connection, prefix)
    pipe = connection.pipeline(transaction=False)
    store.queue_project_info(pipe, project)
    pipe.smembers(keys.tasks(project))
    pipe.hgetall(keys.annotation_gold(project))
    pipe.hgetall(keys.meta_gold(project))
    routing.queue_policy_source(pipe, project)
    raw_info, raw_tasks, annotation_gold, meta_gold, raw_policy = pipe.execute()
    info = store.project_info_from(raw_info)
    label_config = info.get("label_config")
    policy_text, policy_origin = routing.policy_source_from(project, raw_policy)
    fit = stored_fit(connection, prefix, project)
    cat = categorical(label_config) if label_config else None

    tasks = sorted(int(t) for t in raw_tasks)
    states: list[TaskState] = []
    medoids: dict[int, str] = {}  # task -> its consensus submission (non-categorical configs)
    for chunk in _chunks(tasks, TASKS_PER_READ):
        pipe = connection.pipeline(transaction=False)
        for t in chunk:
            store.queue_task_info(pipe, project, t)
            ledger.queue_task_score(pipe, project, t)
            pipe.hmget(keys.task_route(project, t), "status", "final_label")
        pipe.hmget(keys.truth_posteriors(project), [str(t) for t in chunk])
        replies = pipe.execute()
        posteriors = replies[-1]
        for i, t in enumerate(chunk):
            task_info = store.task_info_from(t, replies[3 * i])
            score = ledger.task_score_from(replies[3 * i + 1])
            route_status, final_label = (_s(v) for v in replies[3 * i + 2])
            gold = None
            if str(t).encode() in annotation_gold or str(t).encode() in meta_gold:
                gold = Ledger.gold_from(annotation_gold.get(str(t).encode()), meta_gold.get(str(t).encode()),
                                        label_config)
            consensus = score.get("consensus")
            if cat is None and consensus:
                medoids[t] = consensus
            states.append(TaskState(
                task=t, data=task_info.data if task_info else None, labels=score.get("n", 0),
                agreement=score.get("agreement"), consensus=consensus, confidence=score.get("confidence"),
                consensus_reached=bool(score.get("consensus_reached")), route_status=route_status or None,
                final_label=final_label or None,
                refit_posterior=json.loads(posteriors[i]) if posteriors[i] else None, gold=gold))
    if medoids:
        results = _results(store, project, medoids)
        states = [replace(s, consensus_result=results.get(s.task)) for s in states]
    return ProjectState(project=project, title=info.get("title"), label_config=label_config,
                        expert_instruction=info.get("expert_instruction"), policy_text=policy_text,
                        policy_origin=policy_origin, fit_version=fit.version if fit else None,
                        classes=tuple(fit.classes) if fit else (), tasks=states)


def _results(store: SubmissionStore, project: int, medoids: dict[int, str]) -> dict[int, list[dict[str, Any]]]:
    """Each task's consensus submission's result, read in pipelines (a submission deleted since is left out)."""
    by_uid = {uid: task for task, uid in medoids.items()}
    found: dict[int, list[dict[str, Any]]] = {}
    uids = sorted(by_uid)
    for start in range(0, len(uids), TASKS_PER_READ):
        part = uids[start:start + TASKS_PER_READ]
        pipe = store.redis.pipeline(transaction=False)
        store.queue_rows(pipe, project, part)
        for sub in store.decode_rows(project, store.rows_from(part, pipe.execute())):
            found[by_uid[sub.unique_id]] = sub.result
    return found
