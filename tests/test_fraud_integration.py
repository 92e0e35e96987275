"""Fraud against the real thing: Label Studio 1.23.2 Community, a private Redis, gunicorn and an RQ worker.

Five honest annotators label 12 tasks; a bot, logged in with its own token, answers every one of them
"Positive" in half a second. crowdgate's evaluation pauses the bot with its evidence: the gold task its exam
view offered it is taken back (Label Studio serves it nothing there), and routing decides every task again with
the bot's label left out of the consensus. An admin unpauses it with ``crowdgate fraud unpause``: the gold offer
comes back and every task's consensus is again exactly what it was, the bot's label counted.
"""

from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.labelstudio import LabelStudioClient
from ml_backend.labeling import choice_region
from qa_hooks.store import SubmissionStore
from routing import pausing
from routing.audit import AuditLog
from routing.exam import EXAM_FIELD
from routing.state import RoutingState
from scripts.seed import Seeder, label_config
from tests.conftest import crowdgate_stack
from tests.conftest import wait_for as shared_wait_for

pytestmark = pytest.mark.integration
SECRET = "fraud-secret"
PREFIX = "fi"
PASSWORD = "crowdgate-Fraud-1"
CONFIG = label_config("text_classification")
LABELS = ("Positive", "Negative", "Neutral")
POLICY = """
version: 1
tiers: [{name: tier1}]
qualification: null
gold: {share: 0.5}
overlap: {min: 7, max: 8, stop: {rule: fixed}}     # six labels a task: every task keeps asking for more
escalation: {agreement_below: null, difficulty_above: null, on_flagged_annotator: false}
sla: {deadline_seconds: null}
fraud: {min_submissions: 5, review_at: 2.0, pause_at: 2.5}
"""

wait_for = functools.partial(shared_wait_for, timeout=30.0, interval=0.1)


def answer(label: str) -> list[dict]:
    return [choice_region(CONFIG, "sentiment", [label])]


@pytest.fixture(scope="module")
def stack(redis_service, log_dir, labelstudio):
    with crowdgate_stack(redis_service, log_dir, labelstudio, PREFIX, SECRET) as running:
        yield running


def consensus(connection, project: int, tasks: list[int], since: float) -> dict[int, dict]:
    """Each task's latest routing decision since ``since``: the votes that counted, who was left out, the leader."""
    audit = AuditLog(connection, PREFIX)
    out = {}
    for task in tasks:
        decisions = [e for e in audit.query(project=project, task=task, kind="decision", since=since)
                     if e.action.startswith("task:")]
        if decisions:
            e = decisions[-1].evidence
            out[task] = {"votes": e["votes"], "leader": e["leader"], "counted": e["counted"],
                         "excluded": e["excluded"]}
    return out


def test_a_bot_is_paused_with_evidence_and_unpausing_restores_the_consensus(labelstudio, stack, redis_service,
                                                                            tmp_path: Path) -> None:
    web, _worker, connection = stack
    admin = LabelStudioClient(labelstudio.url, labelstudio.token)
    honest = [admin.invite_annotator(f"h{i}@fraud.test", PASSWORD) for i in range(5)]
    bot = admin.invite_annotator("bot@fraud.test", PASSWORD)
    seeder = Seeder(labelstudio.url, labelstudio.token)
    project = seeder.create_project("fraud pause", CONFIG, maximum_annotations=8)
    seeder.connect_webhook(project, f"{web.url}/hooks/labelstudio", SECRET)
    state = RoutingState(connection, PREFIX)
    state.set_policy(project, POLICY, origin="test")
    rng = random.Random(7)
    truth = [LABELS[i % 3] for i in range(12)]
    tasks = seeder.import_tasks(project, [
        {"data": {"text": f"fraud item {i}: " + "a fairly long sentence to read. " * (2 + i % 4)},
         "meta": {"gold": truth[i]} if i % 4 == 0 else {}} for i in range(12)])
    spare_gold = seeder.import_tasks(project, [{"data": {"text": f"spare gold {i}"}, "meta": {"gold": "Negative"}}
                                               for i in range(2)])
    for task, label in zip(tasks, truth, strict=True):
        for person in honest:
            given = label if rng.random() < 0.9 else rng.choice([x for x in LABELS if x != label])
            seeder.annotate(task, person.id, answer(given), lead_time=rng.uniform(15, 40))
    for task in spare_gold:
        seeder.annotate(task, honest[0].id, answer("Negative"), lead_time=20.0)
    as_bot = admin.as_user(bot.token)
    for task in tasks:
        as_bot.create_annotation(task, answer("Positive"), lead_time=0.5)

    store = SubmissionStore(connection, PREFIX)
    wait_for(lambda: store.summary(project)["submissions"] == 12 * 6 + 2, what="every submission scored")
    # the offer settles once the sync after the bot's last answer ran: a gold task the bot has not answered
    wait_for(lambda: state.offered(project, bot.id) and state.offered(project, bot.id) <= set(spare_gold),
             what="a spare gold task offered to the bot")
    offered = sorted(state.offered(project, bot.id))
    exam_view = state.exam_view(project, bot.email)
    assert as_bot.next_task(project, exam_view)["id"] in offered  # Label Studio serves the bot its offer
    routed = [t for i, t in enumerate(tasks) if i % 4 != 0]  # gold tasks test annotators and are never routed
    wait_for(lambda: len(consensus(connection, project, routed, 0.0)) == len(routed), what="every task routed")
    time.sleep(1.0)  # the last events' routing settles
    before = consensus(connection, project, routed, 0.0)
    assert all(c["counted"] == 6 and c["excluded"] == [] for c in before.values())

    # crowdgate's evaluation (the cron job's, run now): the bot is paused with its evidence, nobody else is
    paused_at = time.time()
    summary = pausing.evaluate_project(connection, project, PREFIX, predictions={})
    assert summary["paused"] == [bot.id], summary
    status = pausing.status_of(connection, project, bot.id, PREFIX)
    assert status.status == "paused" and status.evidence["reasons"] and status.by == "crowdgate"
    listed = subprocess.run([str(Path(sys.executable).parent / "crowdgate"), "fraud", "list", str(project)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX})
    assert listed.returncode == 0 and f"user {bot.id}  paused" in listed.stdout, listed.stderr

    # no further work offered: the gold offer is taken back in Label Studio
    wait_for(lambda: not state.offered(project, bot.id), what="the bot's gold offer taken back")
    for task in offered:
        assert f"|{bot.email}|" not in (admin.task(task)["data"].get(EXAM_FIELD) or "")
    assert as_bot.next_task(project, exam_view) is None
    # every task decided again, the bot's label left out of its consensus
    left_out = {"annotator_id": str(bot.id), "why": "flagged annotator"}
    wait_for(lambda: len(consensus(connection, project, routed, paused_at)) == len(routed), what="tasks re-routed")
    during = consensus(connection, project, routed, paused_at)
    for task, c in during.items():
        assert c["counted"] == 5 and c["excluded"] == [left_out], (task, c)
        assert sum(c["votes"].values()) == before[task]["counted"] - 1

    # the admin unpauses: counted again, the same consensus as before, the gold offer back
    unpaused_at = time.time()
    done = subprocess.run([str(Path(sys.executable).parent / "crowdgate"), "fraud", "unpause", str(project),
                           str(bot.id), "--reason", "checked by hand", "--by", "admin@fraud.test"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": PREFIX})
    assert done.returncode == 0 and "unpaused" in done.stdout, done.stderr
    wait_for(lambda: len(consensus(connection, project, routed, unpaused_at)) == len(routed), what="tasks re-routed")
    assert consensus(connection, project, routed, unpaused_at) == before
    wait_for(lambda: state.offered(project, bot.id), what="the gold offer back")
    actions = [e.action for e in AuditLog(connection, PREFIX).query(project=project, annotator=bot.id, kind="action")]
    assert actions.index("fraud_pause") < actions.index("fraud_unpause")
    print(json.dumps({"paused_risk": summary["risks"][bot.id], "reasons": [r["signal"] for r in
                                                                         status.evidence["reasons"]]}))
