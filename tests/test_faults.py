"""Exactly once, whatever fails: faults injected into real processes, counts checked exactly.

Every test runs crowdgate as it runs in production: a real Label Studio 1.23.2, gunicorn
(``scripts.services.start_web``), ``crowdgate-worker`` processes (``start_worker``) and a private
``redis-server`` (``start_redis``), each stopped by its PID. Faults: the receiver down while annotators submit,
Redis restarted (AOF on) in a burst, the worker killed with SIGKILL mid-batch, Label Studio down while a routing
action runs, every webhook delivered three times at once. After each, every submission is recorded once and
scored once: the store's counts, every task's annotation count and every annotator's evidence (gold plus
peer-judged tasks; every task here has two annotators, so it equals their submissions) are compared exactly.

The receiver is down for the issue's 500 submissions; the other tests replay 120 (each submission is a real
Label Studio API call, about 20 per second on a 2-core machine); each docstring says.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from core.keys import Keys
from crowdgate.pipeline import reconcile_and_route
from ml_backend.labeling import choice_region
from qa_hooks.ledger import Ledger
from qa_hooks.receiver import SECRET_HEADER
from qa_hooks.store import SubmissionStore
from scripts.seed import Seeder, label_config
from scripts.services import Service, start_redis, start_web, start_worker
from tests.conftest import wait_for
from tests.state_isolation import use_settings

pytestmark = pytest.mark.integration
SECRET = "faults-secret"
CONFIG = label_config("text_classification")
LABELS = ("Positive", "Negative", "Neutral")
ANNOTATORS = [f"fault-{n}@faults.test" for n in range(6)]
HOOK = "/hooks/labelstudio"


# -- helpers ----------------------------------------------------------------------------------------------


def env_for(redis_url: str, labelstudio: Any, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of the services a test starts (one prefix per test: the session's Redis is shared)."""
    return {**os.environ, "REDIS_URL": redis_url, "CROWDGATE_WEBHOOK_SECRET": SECRET, "CROWDGATE_KEY_PREFIX": prefix,
            "LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_API_KEY": labelstudio.token, **extra}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@dataclass
class Plan:
    """A project whose every task gets two annotations, by annotators taken in turn."""

    project: int
    tasks: list[int]
    users: list[int]
    submissions: list[tuple[int, int, str]]  # (task, user, label)

    def per_annotator(self, upto: int | None = None) -> dict[int, int]:
        counts: dict[int, int] = {}
        for _, user, _ in self.submissions[:upto]:
            counts[user] = counts.get(user, 0) + 1
        return counts


def make_plan(seeder: Seeder, title: str, n_tasks: int, **project: Any) -> Plan:
    project_id = seeder.create_project(title, CONFIG, **project)
    tasks = seeder.import_tasks(project_id, [{"data": {"text": f"{title} item {i}"}} for i in range(n_tasks)])
    users = list(seeder.create_users(ANNOTATORS).values())
    submissions = []
    for i, task in enumerate(tasks):
        for k in range(2):
            # Two different annotators per task; labels disagree now and then, so peer scores vary.
            submissions.append((task, users[(2 * i + k) % len(users)], LABELS[(i * (k + 1)) % len(LABELS)]))
    return Plan(project_id, tasks, users, submissions)


def submit(seeder: Seeder, submissions: list[tuple[int, int, str]], threads: int = 3) -> list[int]:
    """Create the annotations in Label Studio (each fires its webhook inside the request); their ids."""
    def one(item: tuple[int, int, str]) -> int:
        task, user, label = item
        return seeder.annotate(task, user, [choice_region(CONFIG, "sentiment", [label])], lead_time=3.0)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, submissions))


def assert_exact(connection: redis.Redis, prefix: str, plan: Plan, n_tasks: int | None = None) -> None:
    """Every planned submission recorded once and scored once, nothing else."""
    store, ledger = SubmissionStore(connection, prefix), Ledger(connection, prefix)
    tasks = plan.tasks[:n_tasks]
    expected = plan.per_annotator(None if n_tasks is None else 2 * n_tasks)
    summary = store.summary(plan.project)
    assert summary["submissions"] == sum(expected.values())
    assert {a: v["submissions"] for a, v in summary["annotators"].items()} == expected
    assert all(v["skips"] == 0 for v in summary["annotators"].values())
    for task in tasks:
        subs = store.task_submissions(plan.project, task)
        assert len(subs) == 2 and len({s.unique_id for s in subs}) == 2, (task, subs)
        assert ledger.task_score(plan.project, task)["n"] == 2, task
    evidence = {a: ledger.reliability(plan.project, a).evidence for a in expected}
    assert evidence == {a: float(n) for a, n in expected.items()}
    assert store.unscored(plan.project) == {}  # every recorded task was scored and routed


def drained(connection: redis.Redis, prefix: str, queue: str = "crowdgate-events") -> bool:
    """Nothing waits: the inbox stream is empty and RQ holds no queued, scheduled or running event job."""
    from rq import Queue

    q = Queue(queue, connection=connection)
    return (connection.xlen(Keys(prefix).inbox(queue)) == 0 and q.count == 0
            and q.started_job_registry.count == 0 and q.scheduled_job_registry.count == 0)


class WebhookCapture:
    """A webhook target that keeps each body Label Studio posts, to be replayed at the receiver as a test likes."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with lock:
                    bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{HOOK}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def annotations(self) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b.get("action") == "ANNOTATION_CREATED"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Captured:
    plan: Plan
    bodies: list[dict[str, Any]]  # one ANNOTATION_CREATED per planned submission, as Label Studio sent it


@pytest.fixture(scope="module")
def captured(labelstudio) -> Iterator[Captured]:
    """60 tasks x 2 annotations made in Label Studio once; its real webhook bodies, replayed by several tests."""
    seeder = Seeder(labelstudio.url, labelstudio.token)
    capture = WebhookCapture()
    try:
        plan = make_plan(seeder, "faults replay", 60)
        seeder.connect_webhook(plan.project, capture.url, SECRET)
        submit(seeder, plan.submissions)
        bodies = wait_for(lambda: len(capture.annotations()) >= len(plan.submissions) and capture.annotations(),
                          30, what="Label Studio's webhooks")
        assert len(bodies) == len(plan.submissions)
        yield Captured(plan, bodies)
    finally:
        capture.close()


def post(url: str, body: dict[str, Any], session: requests.Session | None = None) -> tuple[int, str]:
    """One delivery as Label Studio makes it (1 s timeout); (status, the receiver's status or error)."""
    try:
        reply = (session or requests).post(f"{url}{HOOK}", json=body, headers={SECRET_HEADER: SECRET}, timeout=1.0)
    except requests.RequestException as exc:
        return 0, type(exc).__name__
    payload = reply.json() if reply.headers.get("Content-Type", "").startswith("application/json") else {}
    return reply.status_code, str(payload.get("status") or payload.get("error") or "")


@contextlib.contextmanager
def services(*started: Service) -> Iterator[list[Service]]:
    """Stop every service started inside the block (by PID), last first, whatever happens."""
    running = list(started)
    try:
        yield running
    finally:
        for service in reversed(running):
            service.stop()


# -- every event delivered three times ----------------------------------------------------------------------


def test_every_event_delivered_three_times_at_once_counts_once(redis_service, redis_conn, log_dir, labelstudio,
                                                                captured):
    """120 real webhook bodies, each posted by three threads released together: one is queued, two are
    duplicates, and each submission is recorded and scored once."""
    prefix = "f5"
    env = env_for(redis_service.url, labelstudio, prefix)
    with services(start_web(env, log_dir)) as running:
        web = running[0]
        running.append(start_worker(env, log_dir))
        outcomes: list[list[tuple[int, str]]] = []

        def triple(body: dict[str, Any]) -> list[tuple[int, str]]:
            gate = threading.Barrier(3)

            def one() -> tuple[int, str]:
                gate.wait()
                return post(web.url, body)

            with ThreadPoolExecutor(3) as pool:
                return list(pool.map(lambda _: one(), range(3)))

        with ThreadPoolExecutor(4) as pool:  # four events in flight at once, each delivered thrice together
            outcomes = list(pool.map(triple, captured.bodies))
        for body, three in zip(captured.bodies, outcomes, strict=True):
            assert sorted(three) == [(200, "duplicate"), (200, "duplicate"), (200, "queued")], \
                (body["annotation"]["id"], three)
        wait_for(lambda: drained(redis_conn, prefix)
                 and SubmissionStore(redis_conn, prefix).summary(captured.plan.project)["submissions"]
                 >= len(captured.bodies), 60, what="the worker to drain the deliveries")
        assert_exact(redis_conn, prefix, captured.plan)


# -- the receiver down --------------------------------------------------------------------------------------


def test_receiver_down_during_500_submissions_reconciliation_scores_each_once(redis_service, redis_conn, log_dir,
                                                                                labelstudio, monkeypatch):
    """Webhooks for 4 submissions arrive, then gunicorn is stopped for 500 (Label Studio loses each webhook for
    good), then 4 more arrive after it is back on the same port. One reconciliation pass records and scores
    exactly the 500 missed ones; a second pass changes nothing."""
    prefix, n_missed = "f1", 500
    seeder = Seeder(labelstudio.url, labelstudio.token)
    plan = make_plan(seeder, "faults receiver down", 2 + n_missed // 2 + 2)
    before, during = plan.submissions[:4], plan.submissions[4:4 + n_missed]
    after = plan.submissions[4 + n_missed:]
    env = env_for(redis_service.url, labelstudio, prefix)
    store = SubmissionStore(redis_conn, prefix)
    web = start_web(env, log_dir)
    with services(web, start_worker(env, log_dir)) as running:
        seeder.connect_webhook(plan.project, f"{web.url}{HOOK}", SECRET)
        submit(seeder, before)
        wait_for(lambda: store.summary(plan.project)["submissions"] == 4, 30, what="the first 4 webhooks")
        web.stop()
        submit(seeder, during)
        running.append(start_web(env, log_dir, port=port_of(web.url)))
        submit(seeder, after)
        wait_for(lambda: store.summary(plan.project)["submissions"] == 8 and drained(redis_conn, prefix), 30,
                 what="the last 4 webhooks")
        assert store.summary(plan.project)["submissions"] == 8  # the 500 are really gone

        use_settings(monkeypatch, key_prefix=prefix, label_studio_url=labelstudio.url,
                     label_studio_api_key=labelstudio.token, webhook_secret=SECRET)
        first = reconcile_and_route(prefix, redis_conn, projects=[plan.project])[plan.project]
        assert first["created"] == n_missed and first["deleted"] == 0 and first["webhook"]["status"] == "ok"
        assert_exact(redis_conn, prefix, plan)
        second = reconcile_and_route(prefix, redis_conn, projects=[plan.project])[plan.project]
        assert second["created"] == 0 and second["deleted"] == 0
        assert_exact(redis_conn, prefix, plan)


# -- Redis restarted in a burst -----------------------------------------------------------------------------


def test_redis_restarted_in_a_burst_with_aof_loses_nothing_acknowledged(log_dir, labelstudio, captured, tmp_path,
                                                                         monkeypatch):
    """120 real webhook bodies from 6 clients; a third of the way in, Redis (AOF on, fsync every second, as the
    compose file runs it) is stopped with SIGTERM and started again on the same port and folder. Every event
    answered 200 is recorded without any help; the 503s are recovered by one reconciliation pass; nothing is
    counted twice."""
    prefix = "f2"
    data = tmp_path / "redis-data"
    data.mkdir()
    aof = ("--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data))
    redis_server = start_redis(log_dir, extra_args=aof)
    port = port_of(redis_server.url)
    env = env_for(redis_server.url, labelstudio, prefix)
    connection = redis.Redis.from_url(redis_server.url)
    plan, bodies = captured.plan, captured.bodies
    with services(start_web(env, log_dir)) as running:
        web = running[0]
        running.append(start_worker(env, log_dir))
        worker = running[1]
        sent = threading.Semaphore(0)
        outcomes: dict[str, tuple[int, str]] = {}

        def restart() -> None:
            nonlocal redis_server
            for _ in range(len(bodies) // 3):
                sent.acquire()
            redis_server.stop()  # SIGTERM: Redis writes its AOF and exits
            time.sleep(1.0)  # deliveries meanwhile find no Redis
            redis_server = start_redis(log_dir, port=port, extra_args=aof)

        def deliver(body: dict[str, Any]) -> None:
            outcomes[body["annotation"]["unique_id"]] = post(web.url, body)
            sent.release()
            time.sleep(0.02)  # six clients at about 50 events/s each: the restart falls inside the burst

        restarter = threading.Thread(target=restart)
        restarter.start()
        try:
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(deliver, bodies))
        finally:
            restarter.join(60)
            running.insert(0, redis_server)  # stopped last
        acked = {uid for uid, (status, _) in outcomes.items() if status == 200}
        refused = {uid: o for uid, o in outcomes.items() if o[0] != 200}
        assert acked and refused, f"the restart did not fall inside the burst: {len(acked)} acknowledged"
        assert all(status == 503 for status, _ in refused.values()), refused  # answered in time, never a 500

        store = SubmissionStore(connection, prefix)
        recorded = wait_for(lambda: (got := {s.unique_id for t in plan.tasks
                                             for s in store.task_submissions(plan.project, t)}) >= acked
                            and drained(connection, prefix) and got, 60, what="every acknowledged event")
        assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
        # A 503 may still have been applied whole (the transaction landed after the timeout): never half.
        assert recorded - acked <= set(refused)

        use_settings(monkeypatch, key_prefix=prefix, redis_url=redis_server.url, label_studio_url=labelstudio.url,
                     label_studio_api_key=labelstudio.token, webhook_secret=SECRET)
        result = reconcile_and_route(prefix, connection, projects=[plan.project])[plan.project]
        assert result["created"] == len(bodies) - len(recorded) and result["deleted"] == 0
        assert_exact(connection, prefix, plan)


# -- the worker killed mid-job ------------------------------------------------------------------------------


def in_hand(connection: redis.Redis, prefix: str, mode: str, queue: str) -> list[str]:
    """What a worker holds right now: the stream entries it read and has not settled, or RQ's started jobs."""
    from rq import Queue

    from qa_hooks.inbox import InboxDrain

    if mode == "stream":
        with contextlib.suppress(redis.ResponseError):  # no group before the worker's first read
            pending = connection.xpending_range(Keys(prefix).inbox(queue), InboxDrain.GROUP, "-", "+", 10_000)
            return [p["message_id"].decode() for p in pending]
        return []
    return Queue(queue, connection=connection).started_job_registry.get_job_ids()


def kill_mid_job(mode: str, redis_url: str, log_dir: Path, labelstudio: Any, captured: Captured) -> None:
    """One scenario of the test below, with ``CROWDGATE_INBOX=mode`` and a prefix of its own."""
    from rq import Queue
    from rq.job import Job

    from scripts import processes
    from scripts.services import BIN

    prefix = f"f3{mode}"
    connection = redis.Redis.from_url(redis_url)
    env = env_for(redis_url, labelstudio, prefix, CROWDGATE_INBOX=mode, CROWDGATE_EVENTS_QUEUE=f"{prefix}-events",
                  CROWDGATE_ROUTING_QUEUE=f"{prefix}-routing", CROWDGATE_ML_QUEUE=f"{prefix}-ml")
    queue = f"{prefix}-events"
    plan, bodies = captured.plan, captured.bodies
    with services(start_web(env, log_dir)) as running:
        web = running[0]
        assert all(post(web.url, body) == (200, "queued") for body in bodies)
        # Started by hand, not with start_worker (which waits until it is registered): by then it may be done.
        log_path = log_dir / f"worker-{prefix}.log"
        first = Service("worker", redis_url, processes.spawn([str(BIN / "crowdgate-worker")], log_path, env), log_path)
        running.append(first)
        held = wait_for(lambda: in_hand(connection, prefix, mode, queue), 60, interval=0.002,
                        what=f"{mode}: a job in hand")
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(5)
        killed_at = time.monotonic()
        assert set(in_hand(connection, prefix, mode, queue)) >= set(held)  # still held by the dead worker

        running.append(start_worker(env, log_dir))
        store = SubmissionStore(connection, prefix)
        wait_for(lambda: drained(connection, prefix, queue) and not in_hand(connection, prefix, mode, queue)
                 and store.summary(plan.project)["submissions"] >= len(bodies), 120, interval=0.5,
                 what=f"{mode}: the abandoned work to be retried")
        assert time.monotonic() - killed_at < 75, mode  # the README's bound: about a minute
        assert_exact(connection, prefix, plan)
        jobs = [Job.fetch(job, connection=connection)
                for job in Queue(queue, connection=connection).finished_job_registry.get_job_ids()]
        if mode == "stream":  # each held entry went to RQ as a job of its own, which ran
            handed = {j.meta.get("inbox_entry") for j in jobs if "abandoned" in j.meta.get("inbox_reason", "")}
            assert handed >= set(held)
        else:  # the one started job was run again by RQ, one retry spent
            (job,) = [j for j in jobs if j.id in held]
            assert job.retries_left == 4


def test_worker_killed_mid_job_the_job_is_retried_counts_exact(redis_service, redis_conn, log_dir, labelstudio,
                                                               captured):
    """120 real webhook bodies queued before any worker runs; the first worker is killed with SIGKILL while it
    holds work: a batch read from the inbox stream and not yet acknowledged, or, with ``CROWDGATE_INBOX=rq``, a
    started RQ job. A second worker takes it over: the stream's abandoned entries become RQ jobs once idle 30 s,
    an abandoned RQ job is retried by RQ's maintenance once its 30 s timeout plus 10 s passed; every event is
    then recorded and scored exactly once. Both inboxes run at the same time (own prefix and queues), so the
    two waits of about a minute overlap."""
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(kill_mid_job, mode, redis_service.url, log_dir, labelstudio, captured)
                for mode in ("stream", "rq")]
        for run in runs:
            run.result()


# -- Label Studio down while routing acts -------------------------------------------------------------------

OVERLAP_POLICY = """
version: 1
tiers:
  - {name: tier1}
qualification: null
gold: {share: 0}
overlap: {min: 2, max: 3, stop: {rule: fixed}}
escalation: {agreement_below: null, difficulty_above: null, on_flagged_annotator: false}
"""


def test_label_studio_down_while_routing_acts_retried_with_backoff(redis_service, redis_conn, log_dir, tmp_path):
    """A bound policy wants a second label on a task Label Studio serves once (``maximum_annotations: 1``), so the
    routing action ``set_overlap`` must PATCH Label Studio; Label Studio (a server of this test's own) is
    stopped before the worker starts. The action fails, is retried with RQ's backoff (1 s, 5 s, 30 s: each
    failure in the audit log), and completes once Label Studio is back on the same port and data folder: the
    task's overlap is 2, set once."""
    from rq import Queue
    from rq.job import Job

    from routing.audit import AuditLog
    from routing.runtime import RETRY
    from routing.state import RoutingState
    from scripts.labelstudio import LabelStudioServer
    from scripts.processes import free_port

    prefix = "f4"
    own = LabelStudioServer(port=free_port(), data_dir=tmp_path / "ls-data")
    ls = own.start()
    again = LabelStudioServer(port=own.port, data_dir=own.data_dir, username=own.username, password=own.password,
                              token=own.token)
    env = env_for(redis_service.url, ls, prefix)
    audit = AuditLog(redis_conn, prefix)
    try:
        with services(start_web(env, log_dir)) as running:
            web = running[0]
            seeder = Seeder(ls.url, ls.token)
            project = seeder.create_project("faults routing", CONFIG, maximum_annotations=1)
            (task,) = seeder.import_tasks(project, [{"data": {"text": "needs a second opinion"}}])
            (user,) = seeder.create_users(["fault-router@faults.test"]).values()
            RoutingState(redis_conn, prefix).set_policy(project, OVERLAP_POLICY, "test")
            seeder.connect_webhook(project, f"{web.url}{HOOK}", SECRET)
            seeder.annotate(task, user, [choice_region(CONFIG, "sentiment", ["Positive"])], lead_time=3.0)
            assert redis_conn.xlen(Keys(prefix).inbox("crowdgate-events")) >= 1  # queued, no worker yet
            own.stop()  # Label Studio goes away before routing acts

            running.append(start_worker(env, log_dir))

            def failures() -> list[Any]:
                return [e for e in audit.query(project=project, kind="error") if e.action == "set_overlap"]

            wait_for(failures, 60, what="a failed attempt of set_overlap")
            with ThreadPoolExecutor(1) as pool:  # back on the same port and data while RQ waits to retry
                restarted = pool.submit(again.start)
                done = wait_for(lambda: [e for e in audit.query(project=project, kind="action")
                                         if e.action == "set_overlap"], 120, interval=0.5,
                                what="set_overlap to succeed")
                restarted.result()
            assert len(done) == 1 and done[0].evidence["overlap"] == 2 and done[0].evidence["changed"]
            assert ls.client().task(task)["overlap"] == 2
            failed = failures()
            assert all(e.evidence["will_retry"] for e in failed)
            assert [e.evidence["retries_left"] for e in failed] == list(range(5, 5 - len(failed), -1))
            # RQ's backoff (routing.runtime.RETRY: 1 s, 5 s, 30 s, ...) held between one attempt and the next
            gaps = [b - a for a, b in itertools.pairwise([e.ts for e in failed] + [done[0].ts])]
            assert all(gap >= wait for gap, wait in zip(gaps, RETRY.intervals, strict=False)), gaps
            job = Job.fetch(failed[0].evidence["job"], connection=redis_conn)
            assert job.get_status() == "finished" and job.retries_left == 5 - len(failed)
            assert Queue("crowdgate-routing", connection=redis_conn).failed_job_registry.count == 0
    finally:
        again.stop()
        own.stop()
