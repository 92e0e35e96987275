"""``crowdgate rebuild-state`` against the real Label Studio: scoring state recorded through real webhooks and
an RQ worker, then flushed, comes back from Label Studio alone equal to what it was."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from core.keys import Keys
from crowdgate.cli import main as crowdgate_main
from ml_backend.labeling import choice_region
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger
from qa_hooks.rebuild import wipe_scoring_state
from qa_hooks.reconcile import reconcile_project
from qa_hooks.store import SubmissionStore
from routing.state import RoutingState
from scripts.seed import Seeder, label_config
from tests.conftest import crowdgate_stack
from tests.state_isolation import isolated_settings, use_environ

pytestmark = pytest.mark.integration
PREFIX = "rb"
SECRET = "rebuild-secret"
LABELS = ["Positive", "Negative", "Neutral"]


def wait_until_idle(project: int, store: SubmissionStore, expected: int, updated: int) -> None:
    """Every event recorded, scored and routed: the expected count, the edit recorded, no unscored task."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        subs = {s.annotation_id: s for t in store.tasks(project) for s in store.task_submissions(project, t)}
        edited = subs.get(updated)
        if (len(subs) == expected and edited is not None and edited.result[0]["value"]["choices"] == ["Negative"]
                and not store.unscored(project)):
            time.sleep(1.0)  # let a stray duplicate land before comparing exactly
            if not store.unscored(project):
                return
        time.sleep(0.2)
    raise AssertionError(f"worker did not finish: {store.summary(project)}")


def scoring_state(connection: redis.Redis, project: int) -> dict[str, Any]:
    """Everything scoring holds about ``project``, as plain data."""
    store, ledger = SubmissionStore(connection, PREFIX), Ledger(connection, PREFIX)
    tasks, annotators = store.tasks(project), store.annotators(project)
    return {
        "project": store.project_info(project),
        "tasks": tasks,
        "annotators": annotators,
        "task_info": {t: store.task_info(project, t) for t in tasks},
        "submissions": {t: [s.to_dict() for s in store.task_submissions(project, t)] for t in tasks},
        "logs": {a: [s.unique_id for s in store.annotator_log(project, a)] for a in annotators},
        "scores": {t: ledger.task_score(project, t) for t in tasks},
        "contributions": {t: ledger.contributions(project, t) for t in tasks},
        "reliability": {a: ledger.reliability(project, a).to_dict() for a in annotators},
        "flags": {a: ledger.flags(project, a) for a in annotators},
        "gold": {t: ledger.gold(project, t) for t in ledger.gold_tasks(project)},
        "lead_times": {a: store.lead_times(project, a) for a in annotators},
    }


def same(a: Any, b: Any, where: str = "state") -> None:
    """``a == b``, floats to 1e-9: running sums are Redis INCRBYFLOATs, exact only up to the order of the adds."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), where
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple) and isinstance(b, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_rebuild_state_equals_the_live_state(labelstudio, redis_service, log_dir, monkeypatch, capsys):
    seeder = Seeder(labelstudio.url, labelstudio.token)
    config = label_config("text_classification")
    project = seeder.create_project("rebuild state", config, maximum_annotations=5)
    final_mark = {"label": "Neutral", "result": None, "reason": "stop rule met", "confident": True,
                  "decided_by": [], "required_tier": None, "at": "2025-01-01T00:00:00+00:00"}
    tasks = seeder.import_tasks(project, [
        {"data": {"text": "a fine day"}, "meta": {"gold": "Positive"}},
        {"data": {"text": "awful service"}, "meta": {"gold": "Negative"}},
        {"data": {"text": "it was a film"}},
        {"data": {"text": "loved it"}},
        {"data": {"text": "so-so"}, "meta": {"crowdgate": {"final": final_mark}}},  # marked final by routing
    ])
    emails = [f"rb-{i}@crowdgate.test" for i in range(4)]
    users = seeder.create_users(emails)
    # who answers what (None: a skip); annotator 3 is careless, annotator 0 marks one ground truth
    answers = {
        tasks[0]: ["Positive", "Positive", "Positive", "Negative"],
        tasks[1]: ["Negative", "Negative", "Positive", None],
        tasks[2]: ["Neutral", "Neutral", "Neutral", "Positive"],
        tasks[3]: ["Positive", "Positive", None, "Negative"],
        tasks[4]: ["Neutral", "Neutral", "Neutral", "Neutral"],
    }
    other = seeder.create_project("rebuild state, another project", config)
    other_tasks = seeder.import_tasks(other, [{"data": {"text": "kept"}}])

    with crowdgate_stack(redis_service, log_dir, labelstudio, PREFIX, SECRET) as (web, _worker, connection):
        seeder.connect_webhook(project, f"{web.url}/hooks/labelstudio", SECRET)
        store = SubmissionStore(connection, PREFIX)
        made = 0
        for i, email in enumerate(emails):  # one annotator after the other, as a crowd works through a batch
            for task, labels in answers.items():
                label = labels[i]
                if label is None:
                    seeder.annotate(task, users[email], [], was_cancelled=True, lead_time=1.0)
                else:
                    seeder.annotate(task, users[email], [choice_region(config, "sentiment", [label])],
                                    lead_time=2.0 + i + task % 3, ground_truth=(i == 0 and task == tasks[2]))
                made += 1
        # the newest annotation is edited: an ANNOTATION_UPDATED
        newest = max(int(a["id"]) for t in tasks for a in seeder.annotations(t))
        seeder.update_annotation(newest, result=[choice_region(config, "sentiment", ["Negative"])])
        wait_until_idle(project, store, made, newest)

    # the other project and a routing record of this one must survive the flush
    reconcile_project(other, PREFIX, connection, labelstudio.client(), process_event,
                      isolated_settings(key_prefix=PREFIX, label_studio_url=labelstudio.url,
                                        label_studio_api_key=labelstudio.token))
    routing = RoutingState(connection, PREFIX)
    routing.flag_annotator(project, users[emails[3]], "careless, set by hand")
    ledger = Ledger(connection, PREFIX)
    ledger.refresh_flags(project, store)  # what crowdgate-cron does every minute
    live = scoring_state(connection, project)
    assert live["scores"][tasks[0]]["n"] == 4 and live["reliability"][users[emails[3]]]["gold_n"] == 2
    other_before = scoring_state(connection, other)
    assert other_before["submissions"] == {other_tasks[0]: []}

    # Redis lost the project's scoring state (only its keys)
    assert wipe_scoring_state(connection, PREFIX, project) > 0
    for pattern in Keys(PREFIX).scoring_patterns(project):
        assert list(connection.scan_iter(match=pattern)) == []
    assert store.task_submissions(project, tasks[0]) == [] and ledger.task_score(project, tasks[0]) == {}

    use_environ(monkeypatch, {"REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX,
                              "LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_API_KEY": labelstudio.token})
    assert crowdgate_main(["rebuild-state", str(project)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["created"] == made and report["skipped_invalid"] == 0
    assert report["final_routes_restored"] == 1

    same(scoring_state(connection, project), live)
    assert scoring_state(connection, other) == other_before
    assert routing.flagged(project) == {users[emails[3]]: "careless, set by hand"}
    route = routing.route(project, tasks[4])
    assert route.status == "final" and route.final_label == "Neutral"

    # rebuilding again is the same
    assert crowdgate_main(["rebuild-state", str(project)]) == 0
    assert json.loads(capsys.readouterr().out)["final_routes_restored"] == 0
    same(scoring_state(connection, project), live)
