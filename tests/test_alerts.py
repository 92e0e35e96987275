"""crowdgate's own alerts (crowdgate.alerts): a private redis-server and a real HTTP receiver in a thread.

What is posted (one Slack-style ``{"text"}`` message, a line per alert, nothing else of the audit log, no
secret), the cursor (a failed POST sends the same alerts next run, a good one never again), two runs at once
(each entry sent once), the backlog cap, repeats, the two signals recorded here (agreement dropping, the LLM
failing), and the cron job's registration and run through RQ.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from core.keys import Keys
from core.settings import Settings
from crowdgate.alerts import check_agreement, report_llm_outages, send_alerts
from crowdgate.cron import scheduler
from ml_backend.cache import MemoryCache
from ml_backend.llm import LLMPredictor, LLMSettings, shown_url
from qa_hooks.events import Event, Submission
from qa_hooks.jobs import process_event
from routing.audit import AuditLog
from scripts.processes import free_port
from tests.openai_stub import OpenAIStub
from tests.state_isolation import isolated_settings, use_settings
from tests.test_ledger import PROJECT_INFO

PREFIX = "alerts"
TOKEN = "cgalert-token-9f3e1c77"  # the secret part of an incoming-webhook URL
HOOK_SECRET = "cg-hook-secret-5be1"
OPENAI_KEY = "sk-cgalert-openai-0d4e"
CHOICES = """<View><Text name="text" value="$text"/><Choices name="s" toName="text">
  <Choice value="a"/><Choice value="b"/></Choices></View>"""


class Receiver:
    """An incoming webhook: records each POST (path, content type, JSON body), answers ``status``; with ``gate``
    set it holds every answer until the gate opens (``arrived`` is set as each request comes in)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.status = 200
        self.gate: threading.Event | None = None
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append({"path": self.path, "type": self.headers.get("Content-Type"),
                                       "body": json.loads(body)})
                receiver.arrived.set()
                if receiver.gate is not None:
                    receiver.gate.wait(30)
                reply = b"ok" if receiver.status < 300 else b"no_service"
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/{TOKEN}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def texts(self) -> list[str]:
        return [p["body"]["text"] for p in self.posts]

    def lines(self) -> list[str]:
        """Every alert line of every message, in order (headers and summaries left out)."""
        return [line for text in self.texts for line in text.splitlines() if line.startswith("• ")]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def settings(redis_service, receiver) -> Settings:
    return isolated_settings(redis_url=redis_service.url, key_prefix=PREFIX, alert_webhook_url=receiver.url,
                             webhook_secret=HOOK_SECRET, openai_api_key=OPENAI_KEY)


def record_mixed(connection: redis.Redis) -> AuditLog:
    """Five alerts among entries that are not worth one."""
    audit = AuditLog(connection, PREFIX)
    audit.record("decision", "assign", 3, 44, [12], "lowest load")
    audit.record("flag", "fraud_review", 3, None, [12], "12 of 12 answers came far faster than this project's")
    audit.record("action", "finalize", 3, 44, [12, 13], "consensus reached")
    audit.record("action", "fraud_pause", 3, None, [14], "copies user 12 <!channel>")
    audit.record("flag", "off_tier_work", 3, 44, [15], "expert task by a novice")
    audit.record("alert", "sla_breach", 3, 45, [7], "escalated 2 h ago, deadline 1 h")
    audit.record("alert", "webhook_missing", 4, reason=f"no webhook to …/hooks/labelstudio, secret {HOOK_SECRET}")
    audit.record("alert", "llm_failing", None, reason="http://llm:8000/v1 (model m) failed 3 tasks in a row")
    audit.record("alert", "no_annotator", 3, 46, [], "nobody free in tier expert")
    return audit


def test_the_alerts_are_posted_as_one_readable_message(redis_conn, receiver, settings):
    record_mixed(redis_conn)
    result = send_alerts(PREFIX, redis_conn, settings)
    assert result["scanned"] == 9 and result["sent"] == 5 and "error" not in result
    [post] = receiver.posts
    assert post["path"].endswith(TOKEN) and post["type"] == "application/json" and list(post["body"]) == ["text"]
    text = post["body"]["text"]
    assert text.splitlines()[0].startswith(f"crowdgate [{PREFIX}]: 5 alerts, ")
    assert receiver.lines() == [
        "• project 3: annotator 12 flagged for review: 12 of 12 answers came far faster than this project's",
        "• project 3: annotator 14 paused: copies user 12 &lt;!channel&gt;",  # no mention through a reason
        "• project 3, task 45: escalated task past its deadline (annotator 7): escalated 2 h ago, deadline 1 h",
        "• project 4: crowdgate's webhook is missing: no webhook to …/hooks/labelstudio, secret ***",
        "• the LLM endpoint is failing: http://llm:8000/v1 (model m) failed 3 tasks in a row",
    ]
    for left_out in ("lowest load", "consensus reached", "novice", "nobody free", HOOK_SECRET, TOKEN):
        assert left_out not in text
    assert redis_conn.get(Keys(PREFIX).alerts_cursor()).decode() == result["cursor"]

    again = send_alerts(PREFIX, redis_conn, settings)  # nothing new: nothing posted
    assert again["scanned"] == 0 and len(receiver.posts) == 1


@pytest.mark.parametrize("failure", ["500", "404", "refused"])
def test_a_failed_post_keeps_the_alerts_for_the_next_run(failure, redis_conn, receiver, settings, caplog):
    record_mixed(redis_conn)
    failing = settings
    if failure == "refused":  # nothing listens there
        failing = settings.with_(alert_webhook_url=f"http://127.0.0.1:{free_port()}/services/T0/B0/{TOKEN}")
    else:
        receiver.status = int(failure)
    with caplog.at_level(logging.WARNING, logger="crowdgate.alerts"):
        result = send_alerts(PREFIX, redis_conn, failing)
    assert result["sent"] == 0 and result["error"] and TOKEN not in result["error"]
    assert (failure in result["error"]) if failure != "refused" else ("ConnectionError" in result["error"])
    assert "go with the next run" in caplog.text and TOKEN not in caplog.text
    assert redis_conn.get(Keys(PREFIX).alerts_cursor()) is None  # not moved
    assert not redis_conn.exists(Keys(PREFIX).alerts_lock())  # let go: the next run is not locked out

    receiver.status = 200
    AuditLog(redis_conn, PREFIX).record("alert", "sla_breach", 3, 47, [8], "a newer one")
    result = send_alerts(PREFIX, redis_conn, settings)
    assert result["sent"] == 6 and "error" not in result
    lines = receiver.texts[-1].splitlines()
    assert len(lines) == 7 and "annotator 14 paused" in lines[2] and "a newer one" in lines[-1]
    posts = len(receiver.posts)
    assert send_alerts(PREFIX, redis_conn, settings)["scanned"] == 0 and len(receiver.posts) == posts


def test_two_runs_at_once_never_send_an_entry_twice(redis_conn, redis_service, receiver, settings):
    audit = AuditLog(redis_conn, PREFIX)
    for task in range(5):
        audit.record("alert", "sla_breach", 3, task, [], f"overdue {task}")
    receiver.gate = threading.Event()
    first: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: first.update(
        send_alerts(PREFIX, redis.Redis.from_url(redis_service.url), settings)))
    runner.start()
    assert receiver.arrived.wait(30), "the first run never posted"
    # The first run is waiting on the receiver: a second one leaves, and an entry written now waits its turn.
    assert send_alerts(PREFIX, redis_conn, settings) == {"skipped": "another alert run holds the lock"}
    audit.record("alert", "sla_breach", 3, 99, [], "overdue 99")
    receiver.gate.set()
    runner.join(30)
    assert first["sent"] == 5
    assert send_alerts(PREFIX, redis_conn, settings)["sent"] == 1
    assert sorted(receiver.lines()) == sorted(f"• project 3, task {t}: escalated task past its deadline: overdue {t}"
                                              for t in (0, 1, 2, 3, 4, 99))

    # Many at once, released together: every entry still goes exactly once.
    receiver.gate = None
    for task in range(100, 130):
        audit.record("alert", "sla_breach", 3, task, [], f"overdue {task}")
    start = threading.Barrier(8)

    def run() -> None:
        start.wait(30)
        send_alerts(PREFIX, redis.Redis.from_url(redis_service.url), settings, max_lines=100)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    send_alerts(PREFIX, redis_conn, settings, max_lines=100)  # whatever a run that found the lock taken left
    overdue = [line.rsplit("overdue ", 1)[1] for line in receiver.lines()]
    assert sorted(overdue, key=int) == [str(t) for t in (0, 1, 2, 3, 4, 99, *range(100, 130))]


def test_a_backlog_is_summed_up_not_listed(redis_conn, receiver, settings):
    audit = AuditLog(redis_conn, PREFIX)
    for task in range(100):
        audit.record("alert", "sla_breach", 3, task, [], "overdue")
    for annotator in range(5):
        audit.record("flag", "fraud_review", 3, None, [annotator], "too fast")
    result = send_alerts(PREFIX, redis_conn, settings, max_lines=20)
    assert result["sent"] == 105
    lines = receiver.texts[0].splitlines()
    assert lines[0].startswith(f"crowdgate [{PREFIX}]: 105 alerts")
    assert len(lines) == 22 and lines[-1] == "… and 85 more: 80 sla_breach, 5 fraud_review"


def test_a_long_backlog_drains_over_several_runs(redis_conn, receiver, settings):
    audit = AuditLog(redis_conn, PREFIX)
    for task in range(30):
        audit.record("alert", "sla_breach", 3, task, [], f"overdue {task}")
    first = send_alerts(PREFIX, redis_conn, settings, scan_max=20)
    assert (first["scanned"], first["more"]) == (20, True)
    assert receiver.texts[0].endswith("(more to come: older audit entries are still being read)")
    second = send_alerts(PREFIX, redis_conn, settings, scan_max=20)
    assert (second["scanned"], second["more"], second["sent"]) == (10, False, 10)
    assert len(receiver.lines()) == 30


def test_a_repeated_alert_is_sent_once_an_hour(redis_conn, receiver, settings):
    audit = AuditLog(redis_conn, PREFIX)
    # reconciliation audits a broken webhook at every pass, with the same words
    for _ in range(3):
        audit.record("alert", "webhook_inactive", 4, reason="webhook 9: inactive")
    assert send_alerts(PREFIX, redis_conn, settings)["sent"] == 3
    assert receiver.lines() == ["• project 4: crowdgate's webhook is inactive: webhook 9: inactive (3 times)"]
    audit.record("alert", "webhook_inactive", 4, reason="webhook 9: inactive")
    result = send_alerts(PREFIX, redis_conn, settings)
    assert (result["repeats"], result["sent"], len(receiver.posts)) == (1, 0, 1)  # nothing posted, cursor moved
    assert redis_conn.get(Keys(PREFIX).alerts_cursor()).decode() == result["cursor"]
    audit.record("alert", "webhook_inactive_repaired", 4, reason="webhook 9: inactive")  # news: it was repaired
    assert send_alerts(PREFIX, redis_conn, settings)["sent"] == 1
    assert receiver.lines()[-1] == "• project 4: crowdgate's webhook was inactive, now repaired: webhook 9: inactive"


def label(annotator: int, task: int, choice: str) -> Submission:
    result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}]
    return Submission(project=1, task=task, annotation_id=task * 10 + annotator, unique_id=f"u{annotator}-t{task}",
                      annotator=annotator, result=result, updated_at="2026-01-01T00:00:00Z",
                      created_at="2026-01-01T00:00:00Z")


def score(connection: redis.Redis, first_task: int, agree: bool, tasks: int = 60) -> None:
    """Two annotators label ``tasks`` tasks of project 1, alike or not, through crowdgate's real scoring."""
    subs = []
    for task in range(first_task, first_task + tasks):
        subs += [label(1, task, "Positive"), label(2, task, "Positive" if agree else "Negative")]
    event = Event("ANNOTATIONS_CREATED", 1, PROJECT_INFO, submissions=subs)
    process_event(event.to_dict(), PREFIX, connection)


def test_a_drop_in_agreement_is_an_alert(redis_conn, receiver, settings):
    score(redis_conn, 0, agree=True)
    assert check_agreement(redis_conn, PREFIX) == []  # first sight: the baseline
    score(redis_conn, 100, agree=True, tasks=20)
    assert check_agreement(redis_conn, PREFIX) == []  # 20 comparisons: too few to judge, kept gathering
    score(redis_conn, 200, agree=False, tasks=40)
    assert check_agreement(redis_conn, PREFIX) == [1]  # 60 comparisons at 0.33 against 1.00
    [entry] = AuditLog(redis_conn, PREFIX).query(action="agreement_drop")
    assert entry.evidence["earlier"] == 1.0 and entry.evidence["recent"] == pytest.approx(1 / 3)
    assert entry.evidence["recent_pairs"] == 60 and entry.evidence["earlier_pairs"] == 60
    score(redis_conn, 300, agree=True)
    assert check_agreement(redis_conn, PREFIX) == []  # back up: no alert

    send_alerts(PREFIX, redis_conn, settings)  # which runs the check too, then sends
    assert receiver.lines() == ["• project 1: agreement dropped: the 60 comparisons since the last check agree 0.33 "
                                "on average, against 1.00 over the 60 before"]


def test_an_llm_outage_is_an_alert_once(redis_conn, receiver, settings):
    model = f"stub-{uuid.uuid4().hex[:8]}"  # an endpoint state of its own
    tasks = [{"id": i, "data": {"text": f"text {i}"}} for i in range(6)]
    with OpenAIStub(lambda body: {"s": "a"}) as stub:
        stub.fail_always(503)
        endpoint = shown_url(stub.base_url)
        predictor = LLMPredictor(LLMSettings(base_url=stub.base_url, model=model, api_key=OPENAI_KEY, samples=1,
                                             max_retries=0, mode="json_schema", breaker_failures=3,
                                             breaker_cooldown_s=600.0), cache=MemoryCache(), sleep=lambda s: None)
        report_llm_outages(settings)
        try:
            statuses = [o.status for o in predictor.predict_detailed(tasks[:3], CHOICES, deadline_s=0)]
            assert statuses == ["error"] * 3
            # paused now: more tasks make no call and no second alert
            assert {o.status for o in predictor.predict_detailed(tasks[3:], CHOICES, deadline_s=0)} == {"paused"}
        finally:
            report_llm_outages(settings.with_(alert_webhook_url=""))  # this process's listener: nobody again
            predictor.close()
    [entry] = AuditLog(redis_conn, PREFIX).query(action="llm_failing")
    assert entry.kind == "alert" and entry.evidence["failures"] == 3 and entry.evidence["model"] == model
    send_alerts(PREFIX, redis_conn, settings)
    [line] = receiver.lines()
    assert line.startswith(f"• the LLM endpoint is failing: {endpoint} (model {model}) failed 3 tasks")
    assert OPENAI_KEY not in receiver.texts[0]


def test_no_listener_no_llm_alert(redis_conn, settings):
    report_llm_outages(settings.with_(alert_webhook_url=""))
    model = f"stub-{uuid.uuid4().hex[:8]}"
    with OpenAIStub(lambda body: {"s": "a"}) as stub:
        stub.fail_always(503)
        predictor = LLMPredictor(LLMSettings(base_url=stub.base_url, model=model, samples=1, max_retries=0,
                                             mode="json_schema", breaker_failures=1), cache=MemoryCache(),
                                 sleep=lambda s: None)
        predictor.predict_detailed([{"id": 1, "data": {"text": "x"}}], CHOICES, deadline_s=0)
        predictor.close()
    assert predictor.counters()["breaker_opened"] == 1
    assert AuditLog(redis_conn, PREFIX).query(action="llm_failing") == []


def test_the_cron_job_is_registered_only_with_a_url(redis_conn, receiver, settings, monkeypatch):
    assert "send_alerts" not in {j.name for j in scheduler(redis_conn, settings.with_(alert_webhook_url="")).get_jobs()}
    jobs = {j.name: j for j in scheduler(redis_conn, settings.with_(alert_interval_s=45)).get_jobs()}
    job = jobs["send_alerts"]
    assert (job.func_name, job.interval, job.kwargs, job.queue_name) == (
        "crowdgate.alerts.send_alerts", 45, {"prefix": PREFIX}, settings.events_queue)
    assert "send_alerts" not in {j.name for j in scheduler(redis_conn, settings.with_(alert_interval_s=0)).get_jobs()}

    # Enqueued as the cron scheduler does, run by an RQ worker that has the URL in its settings.
    use_settings(monkeypatch, redis_url=settings.redis_url, key_prefix=PREFIX, alert_webhook_url=receiver.url)
    AuditLog(redis_conn, PREFIX).record("alert", "sla_breach", 3, 45, [7], "overdue")
    rq_job = job.enqueue(redis_conn)
    assert TOKEN not in json.dumps(Job.fetch(rq_job.id, connection=redis_conn).kwargs)  # the URL stays out of RQ
    SimpleWorker([Queue(settings.events_queue, connection=redis_conn)], connection=redis_conn).work(burst=True)
    assert Job.fetch(rq_job.id, connection=redis_conn).return_value()["sent"] == 1
    assert receiver.lines() == ["• project 3, task 45: escalated task past its deadline (annotator 7): overdue"]


def test_without_a_url_the_job_does_nothing(redis_conn, receiver, settings):
    record_mixed(redis_conn)
    assert "skipped" in send_alerts(PREFIX, redis_conn, settings.with_(alert_webhook_url=""))
    assert receiver.posts == [] and redis_conn.get(Keys(PREFIX).alerts_cursor()) is None
